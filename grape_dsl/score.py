"""Score tables, and the validation that stands between a user's batch and a kernel.

Batch validation (`prepare_batch`) raises `BatchError` with a message naming the array and what
was expected: wrong shapes or dtypes, keypoint/signal names the program reads and the batch
lacks (with near names), lengths outside 1..T. Nothing malformed reaches a kernel.

Non-finite values:
- Inputs. A NaN or +-inf in any component of a keypoint or signal the program binds (declares
  in its `keypoints`/`signals` blocks, used or not), at any valid step (t < length), is by
  default (`nonfinite="error"`) a `BatchError` naming the array, the source name, the trajectory
  and the step, whether or not a constraint happens to evaluate that value. With
  `nonfinite="worst"` such a trajectory is scored as the worst possible: every cost +inf,
  R_ext 0, stage bounds (-1, -1), and `valid[n]` False. Only padding (t >= length) and batch
  columns the program does not bind never count. The compiled kernel checks each
  trajectory just before scoring it (grape_dsl/codegen.py); `first_nonfinite_steps` below
  states the same rule in numpy, and the tests hold the kernels to it.
- Computed values (e.g. `log(0)`, `sqrt(-1)`, `0/0`). A comparison whose difference is NaN is
  violated by +inf (and is false as a truth value); a violation of +inf makes its cost +inf and
  R_ext 0. A constraint with weight 0 always costs 0.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from grape_dsl.batch import TrajectoryBatch
from grape_dsl.util.atomic import atomic_write
from grape_dsl.util.nearname import near_names

NonFinitePolicy = Literal["error", "worst"]
FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


class BatchError(ValueError):
    """A trajectory batch that a program cannot score; the message says what and where."""


@dataclass(frozen=True)
class PreparedBatch:
    """Arrays ready for a kernel: contiguous, index tuples mapping program slots to batch columns."""

    keypoints: np.ndarray
    signals: np.ndarray
    lengths: np.ndarray  # int64
    keypoint_index: tuple[int, ...]
    signal_index: tuple[int, ...]


def _near(name: str, candidates: list[str]) -> str:
    close = near_names(name, candidates, limit=2)
    return f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""


def _names(value: Any, what: str, expected_len: int, axis_doc: str) -> list[str]:
    items = np.asarray(value).reshape(-1).tolist() if value is not None else []
    names = [n.decode() if isinstance(n, bytes) else str(n) for n in items]
    if len(names) != expected_len:
        raise BatchError(f"{what} has {len(names)} names but the array has {expected_len} {axis_doc}")
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise BatchError(f"{what} repeats {', '.join(repr(d) for d in dup)}")
    return names


def _array(value: Any, what: str, ndim: int, shape_doc: str) -> np.ndarray:
    if not isinstance(value, np.ndarray):
        raise BatchError(f"{what} must be a numpy array {shape_doc}, got {type(value).__name__}")
    if value.ndim != ndim:
        raise BatchError(f"{what} must have shape {shape_doc}, got shape {value.shape}")
    if value.dtype not in FLOAT_DTYPES:
        raise BatchError(f"{what} must be float32 (or float64), got dtype {value.dtype}")
    return value


def prepare_batch(
    batch: TrajectoryBatch, keypoint_sources: tuple[str, ...], signal_sources: tuple[str, ...]
) -> PreparedBatch:
    """Validate `batch` for a program reading `keypoint_sources` and `signal_sources`."""
    kp = _array(batch.keypoints, "keypoints", 4, "[N, T, K, 3]")
    if kp.shape[3] != 3:
        raise BatchError(f"keypoints must have shape [N, T, K, 3], got shape {kp.shape}")
    sig = _array(batch.signals, "signals", 3, "[N, T, S]")
    n, t_max = kp.shape[:2]
    if sig.shape[:2] != (n, t_max):
        raise BatchError(
            f"signals has shape {sig.shape} but keypoints has shape {kp.shape}: "
            f"both must start with [N, T] = [{n}, {t_max}]"
        )
    kp_names = _names(batch.keypoint_names, "keypoint_names", kp.shape[2], "keypoints (axis 2)")
    sig_names = _names(batch.signal_names, "signal_names", sig.shape[2], "signals (axis 2)")

    missing = [f"keypoint '{s}'{_near(s, kp_names)}" for s in keypoint_sources if s not in kp_names]
    missing += [f"signal '{s}'{_near(s, sig_names)}" for s in signal_sources if s not in sig_names]
    if missing:
        raise BatchError(
            "the batch lacks names the program reads: "
            + "; ".join(missing)
            + f". Batch keypoints: {kp_names}; signals: {sig_names}"
        )

    lengths = batch.lengths
    if not isinstance(lengths, np.ndarray) or lengths.shape != (n,):
        shape = lengths.shape if isinstance(lengths, np.ndarray) else type(lengths).__name__
        raise BatchError(f"lengths must be an integer array of shape [N] = [{n}], got {shape}")
    if not np.issubdtype(lengths.dtype, np.integer):
        raise BatchError(f"lengths must be integers, got dtype {lengths.dtype}")
    bad = np.flatnonzero((lengths < 1) | (lengths > t_max))
    if bad.size:
        shown = ", ".join(f"lengths[{i}] = {int(lengths[i])}" for i in bad[:5])
        more = f" and {bad.size - 5} more" if bad.size > 5 else ""
        raise BatchError(f"every length must be in 1..T = 1..{t_max} (T from keypoints' shape): {shown}{more}")
    if batch.success is not None:
        success = np.asarray(batch.success)
        if success.shape != (n,):
            raise BatchError(f"success must have shape [N] = [{n}], got {success.shape}")

    return PreparedBatch(
        keypoints=np.ascontiguousarray(kp),
        signals=np.ascontiguousarray(sig),
        lengths=np.ascontiguousarray(lengths, dtype=np.int64),
        keypoint_index=tuple(kp_names.index(s) for s in keypoint_sources),
        signal_index=tuple(sig_names.index(s) for s in signal_sources),
    )


def first_nonfinite_steps(prepared: PreparedBatch) -> np.ndarray:
    """Per trajectory, the first valid step (t < length) at which any component of a keypoint
    or any signal the program binds is NaN or +-inf; -1 where there is none."""
    n, t_max = prepared.keypoints.shape[:2]
    ok = np.ones((n, t_max), dtype=bool)
    for column in dict.fromkeys(prepared.keypoint_index):
        ok &= np.isfinite(prepared.keypoints[:, :, column, :]).all(axis=-1)
    for column in dict.fromkeys(prepared.signal_index):
        ok &= np.isfinite(prepared.signals[:, :, column])
    ok |= np.arange(t_max)[None, :] >= prepared.lengths[:, None]  # padding never counts
    first = np.argmin(ok, axis=1)
    return np.where(ok.all(axis=1), -1, first).astype(np.int64)


def describe_nonfinite(
    prepared: PreparedBatch,
    keypoint_sources: tuple[str, ...],
    signal_sources: tuple[str, ...],
    trajectory: int,
    step: int,
) -> str:
    """Which value the program binds at (trajectory, step) is not finite, in words."""
    for slot, column in enumerate(prepared.keypoint_index):
        for axis in range(3):
            value = prepared.keypoints[trajectory, step, column, axis]
            if not np.isfinite(value):
                return (
                    f"keypoints[{trajectory}, {step}, {column}, {axis}] "
                    f"('{keypoint_sources[slot]}'.{'xyz'[axis]}) is {value}"
                )
    for slot, column in enumerate(prepared.signal_index):
        value = prepared.signals[trajectory, step, column]
        if not np.isfinite(value):
            return f"signals[{trajectory}, {step}, {column}] ('{signal_sources[slot]}') is {value}"
    return f"a value read at trajectory {trajectory}, step {step} is not finite"


@dataclass
class ScoreTable:
    """Per-trajectory scores of one program on one batch (N trajectories, S stages, C constraints)."""

    task_name: str
    stage_names: tuple[str, ...]
    constraint_names: tuple[str, ...]  # "stage.constraint"
    tags: tuple[str, ...]  # one per constraint
    stage_bounds: np.ndarray  # int64 [N, S, 2]: first and last step, (-1, -1) if unreached
    reached: np.ndarray  # bool [N, S]
    constraint_costs: np.ndarray  # float64 [N, C]
    stage_costs: np.ndarray  # float64 [N, S], including the unreached penalty
    r_ext: np.ndarray  # float64 [N], exp(-sum of stage costs)
    valid: np.ndarray = field(default=None)  # type: ignore[assignment]  # bool [N]

    def __post_init__(self) -> None:
        if self.valid is None:
            self.valid = np.ones(self.r_ext.shape[0], dtype=bool)

    def __len__(self) -> int:
        return int(self.r_ext.shape[0])

    # -- files

    def save(self, path: str | os.PathLike) -> Path:
        """Write to .npz or .parquet (chosen by suffix), atomically."""
        target = Path(path)
        if target.suffix == ".npz":
            return self.to_npz(target)
        if target.suffix == ".parquet":
            return self.to_parquet(target)
        raise ValueError(f"{target}: score files end in .npz or .parquet")

    @classmethod
    def load(cls, path: str | os.PathLike) -> ScoreTable:
        source = Path(path)
        if source.suffix == ".npz":
            return cls.from_npz(source)
        if source.suffix == ".parquet":
            return cls.from_parquet(source)
        raise ValueError(f"{source}: score files end in .npz or .parquet")

    def to_npz(self, path: str | os.PathLike) -> Path:
        target = Path(path)
        arrays = {
            "task_name": np.array(self.task_name),
            "stage_names": np.array(self.stage_names, dtype=str),
            "constraint_names": np.array(self.constraint_names, dtype=str),
            "tags": np.array(self.tags, dtype=str),
            "stage_bounds": self.stage_bounds,
            "reached": self.reached,
            "constraint_costs": self.constraint_costs,
            "stage_costs": self.stage_costs,
            "r_ext": self.r_ext,
            "valid": self.valid,
        }
        with atomic_write(target, "wb") as stream:
            np.savez(stream, **arrays)
        return target

    @classmethod
    def from_npz(cls, path: str | os.PathLike) -> ScoreTable:
        with np.load(path, allow_pickle=False) as data:
            return cls(
                task_name=str(data["task_name"]),
                stage_names=tuple(str(s) for s in data["stage_names"]),
                constraint_names=tuple(str(s) for s in data["constraint_names"]),
                tags=tuple(str(s) for s in data["tags"]),
                stage_bounds=data["stage_bounds"],
                reached=data["reached"],
                constraint_costs=data["constraint_costs"],
                stage_costs=data["stage_costs"],
                r_ext=data["r_ext"],
                valid=data["valid"],
            )

    def to_parquet(self, path: str | os.PathLike) -> Path:
        """One row per trajectory; names and tags travel in the schema metadata."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        columns: dict[str, Any] = {
            "trajectory": np.arange(len(self), dtype=np.int64),
            "r_ext": self.r_ext,
            "valid": self.valid,
        }
        for s, name in enumerate(self.stage_names):
            columns[f"stage/{name}/start"] = self.stage_bounds[:, s, 0]
            columns[f"stage/{name}/end"] = self.stage_bounds[:, s, 1]
            columns[f"stage/{name}/reached"] = self.reached[:, s]
            columns[f"stage/{name}/cost"] = self.stage_costs[:, s]
        for c, name in enumerate(self.constraint_names):
            columns[f"constraint/{name}"] = self.constraint_costs[:, c]
        meta = {
            "task_name": self.task_name,
            "stage_names": list(self.stage_names),
            "constraint_names": list(self.constraint_names),
            "tags": list(self.tags),
        }
        table = pa.table(columns).replace_schema_metadata({"grape_dsl": json.dumps(meta)})
        target = Path(path)
        with atomic_write(target, "wb") as stream:
            pq.write_table(table, stream)
        return target

    @classmethod
    def from_parquet(cls, path: str | os.PathLike) -> ScoreTable:
        import pyarrow.parquet as pq

        table = pq.read_table(path)
        meta = json.loads(table.schema.metadata[b"grape_dsl"])
        col = lambda name: table.column(name).to_numpy()  # noqa: E731
        stages, constraints = meta["stage_names"], meta["constraint_names"]
        n = table.num_rows
        bounds = np.zeros((n, len(stages), 2), dtype=np.int64)
        for s, name in enumerate(stages):
            bounds[:, s, 0] = col(f"stage/{name}/start")
            bounds[:, s, 1] = col(f"stage/{name}/end")
        return cls(
            task_name=meta["task_name"],
            stage_names=tuple(stages),
            constraint_names=tuple(constraints),
            tags=tuple(meta["tags"]),
            stage_bounds=bounds,
            reached=np.stack([col(f"stage/{s}/reached") for s in stages], axis=1).astype(bool)
            if stages
            else np.zeros((n, 0), dtype=bool),
            constraint_costs=np.stack([col(f"constraint/{c}") for c in constraints], axis=1)
            if constraints
            else np.zeros((n, 0)),
            stage_costs=np.stack([col(f"stage/{s}/cost") for s in stages], axis=1) if stages else np.zeros((n, 0)),
            r_ext=col("r_ext").astype(np.float64),
            valid=col("valid").astype(bool),
        )

    # -- reports

    def summary(self) -> dict[str, Any]:
        """Aggregates over trajectories (plain JSON types)."""

        def stats(values: np.ndarray) -> dict[str, float]:
            if values.size == 0:
                return {"mean": float("nan"), "min": float("nan"), "max": float("nan")}
            return {
                "mean": float(np.mean(values)),
                "min": float(np.min(values)),
                "max": float(np.max(values)),
            }

        return {
            "task": self.task_name,
            "trajectories": len(self),
            "invalid": int((~self.valid).sum()),
            "r_ext": stats(self.r_ext),
            "stages": [
                {
                    "name": name,
                    "reached": float(self.reached[:, s].mean()) if len(self) else float("nan"),
                    "cost": stats(self.stage_costs[:, s]),
                }
                for s, name in enumerate(self.stage_names)
            ],
            "constraints": [
                {
                    "name": name,
                    "tag": tag,
                    "violated": float((self.constraint_costs[:, c] > 0).mean()) if len(self) else float("nan"),
                    "cost": stats(self.constraint_costs[:, c]),
                }
                for c, (name, tag) in enumerate(zip(self.constraint_names, self.tags))
            ],
        }

    def print_summary(self, console: Any = None) -> None:
        """A rich table of the summary (to stdout unless a console is given)."""
        from rich.console import Console
        from rich.table import Table

        console = console or Console()
        info = self.summary()
        r = info["r_ext"]
        table = Table(
            title=f"{self.task_name}: {len(self)} trajectories, "
            f"R_ext mean {r['mean']:.4g} (min {r['min']:.4g}, max {r['max']:.4g})"
            + (f", {info['invalid']} invalid" if info["invalid"] else "")
        )
        for column in ("stage / constraint", "tag", "reached / violated", "mean cost", "max cost"):
            table.add_column(column, justify="left" if column in ("stage / constraint", "tag") else "right")
        by_stage: dict[str, list[dict[str, Any]]] = {}
        for c in info["constraints"]:
            by_stage.setdefault(c["name"].split(".", 1)[0], []).append(c)
        for stage in info["stages"]:
            table.add_row(
                f"[bold]{stage['name']}[/bold]",
                "",
                f"{stage['reached']:.1%}",
                f"{stage['cost']['mean']:.4g}",
                f"{stage['cost']['max']:.4g}",
            )
            for c in by_stage.get(stage["name"], []):
                table.add_row(
                    f"  {c['name'].split('.', 1)[1]}",
                    c["tag"],
                    f"{c['violated']:.1%}",
                    f"{c['cost']['mean']:.4g}",
                    f"{c['cost']['max']:.4g}",
                )
        console.print(table)
