"""`grapec score`: score a batch of trajectories (.npz) with a compiled task file."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from grape_dsl.commands.compile import add_common_arguments, load_checked

EXAMPLES = """\
examples:
  grapec score constraints/tasks/pick_place.grc --batch rollouts.npz
  grapec score constraints/tasks/pick_place_obstacle.grc --objective constraints/safety.grc \\
      --batch rollouts.npz --out scores.parquet
  grapec score task.grc --batch rollouts.npz --json | jq '.r_ext.mean'
  grapec score task.grc --batch rollouts.npz --nonfinite worst   # NaN/inf input -> R_ext 0
  grapec score constraints/tasks/stack.grc --objective edited_safety.grc \
      --batch runs/grape/iterations/iter_0001/rollouts --json    # re-score stored episodes
  grapec score constraints/tasks/stack.grc --batch data/demos      # a demonstration store

The batch is an .npz file (docs/scoring.md): keypoints [N,T,K,3] float32, keypoint_names [K],
signals [N,T,S] float32, signal_names [S], lengths [N] (valid steps, 1..T), optional
success [N]; or a trajectory-store folder (grape-sim demo's output, a run's
iterations/iter_k/rollouts): its episodes of the task file's task (of its only task when
the file is named otherwise), in the order the training loop scored them.
Output: a summary table (stdout), or with --json a JSON object (summary plus per-trajectory
r_ext); --out writes every trajectory's stage bounds and costs (.parquet or .npz).
Exit: 0 ok, 1 bad input (diagnostics or a batch error on stderr), 2 usage.
"""

REQUIRED_FIELDS = ("keypoints", "keypoint_names", "signals", "signal_names", "lengths")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "score",
        help="score a batch of trajectories with a task file",
        description="Compile a task file (cached) and score every trajectory of an .npz batch: "
        "stage bounds, constraint and stage costs, R_ext.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_common_arguments(parser)
    parser.add_argument(
        "--batch",
        required=True,
        metavar="BATCH.npz|STORE_DIR",
        help="the trajectories to score: an .npz batch or a trajectory-store folder",
    )
    parser.add_argument("--out", metavar="FILE", help="write the score table (.parquet or .npz)")
    parser.add_argument("--json", action="store_true", help="print a JSON summary on stdout")
    parser.add_argument(
        "--nonfinite",
        choices=("error", "worst"),
        default="error",
        help="NaN/inf in an input the program reads: fail (default) or score that trajectory R_ext 0",
    )


def _available_memory() -> int | None:
    """Physical memory in bytes, where the OS says; None where it does not."""
    import os

    try:
        return int(os.sysconf("SC_PHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (AttributeError, ValueError, OSError):
        return None


def check_npz_headers(path: str) -> str | None:
    """A message if an array of the .npz at `path` claims a shape its bytes cannot hold, or one
    larger than this machine's memory; None if every header is plausible. Reads only the
    headers, so a hostile file costs nothing to refuse."""
    import math
    import zipfile

    import numpy as np

    memory = _available_memory()
    try:
        with zipfile.ZipFile(path) as archive:
            for member in archive.infolist():
                if not member.filename.endswith(".npy"):
                    continue
                with archive.open(member) as handle:
                    version = np.lib.format.read_magic(handle)
                    read_header = (
                        np.lib.format.read_array_header_1_0
                        if version == (1, 0)
                        else np.lib.format.read_array_header_2_0
                    )
                    shape, _, dtype = read_header(handle, max_header_size=10_000)
                    header_bytes = handle.tell()
                name = member.filename[: -len(".npy")]
                claimed = math.prod(shape) * dtype.itemsize
                if claimed > member.file_size - header_bytes:
                    return (
                        f"{path}: array '{name}' claims shape {tuple(shape)} ({claimed:,} bytes) but "
                        f"the file holds {max(member.file_size - header_bytes, 0):,} bytes of it"
                    )
                if memory is not None and claimed > memory:
                    return (
                        f"{path}: array '{name}' has shape {tuple(shape)} ({claimed:,} bytes), more "
                        f"than this machine's memory ({memory:,} bytes)"
                    )
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        return None  # not a zip of .npy files: np.load below says what it is
    return None


def load_batch(path: str):  # noqa: ANN201 - returns TrajectoryBatch or an error message
    """The batch in `path`, or a message saying what is wrong with the file."""
    import numpy as np

    from grape_dsl.batch import TrajectoryBatch

    try:
        data = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        return f"{path}: no such file"
    except (OSError, ValueError) as err:
        return f"{path}: not a readable .npz file ({err})"
    with data:
        problem = check_npz_headers(path)
        if problem:
            return problem
        missing = [f for f in REQUIRED_FIELDS if f not in data.files]
        if missing:
            return f"{path}: missing field(s) {', '.join(missing)} (has: {', '.join(data.files) or 'nothing'})"
        try:
            fields = {f: data[f] for f in data.files}
        except ValueError as err:  # object arrays need pickle, which a batch never needs
            return f"{path}: {err}; store names as string arrays"
    for name in ("keypoint_names", "signal_names"):
        if fields[name].dtype.kind not in "US":
            return f"{path}: {name} must be an array of strings, got dtype {fields[name].dtype}"
    return TrajectoryBatch(
        keypoints=fields["keypoints"],
        keypoint_names=fields["keypoint_names"].reshape(-1).tolist(),
        signals=fields["signals"],
        signal_names=fields["signal_names"].reshape(-1).tolist(),
        lengths=fields["lengths"],
        success=fields.get("success"),
    )


def load_store(path: str, task_name: str):  # noqa: ANN201 - (TrajectoryBatch, episode names) or an error message
    """The episodes of a trajectory-store folder as one batch, batched exactly as the training
    loop batches them (so the scores match its scores.parquet), or a message saying what is wrong.

    Episodes of `task_name` are taken; a folder holding one other task only is taken whole
    (a task file named after a scene). Rollouts are ordered by the index the loop gave them.
    """
    import json as json_module

    try:  # the store's reader ships with the trainer; grape_dsl alone cannot read a store
        from trainer.store import META_FILE, StoreError, episode_folders, episodes_to_batch, read_episode
    except ImportError as err:
        return f"{path}: reading a trajectory-store folder needs the trainer package ({err})"
    try:
        folders = episode_folders(path)
        metas = [json_module.loads((folder / META_FILE).read_text()) for folder in folders]
    except (StoreError, OSError, ValueError) as err:
        return f"{path}: not a trajectory-store folder ({err})"
    if not folders:
        return f"{path}: no episodes in this folder (a store holds one folder per episode with meta.json)"
    tasks = sorted({str(meta.get("task")) for meta in metas})
    if task_name in tasks:
        chosen = [i for i, meta in enumerate(metas) if meta.get("task") == task_name]
    elif len(tasks) == 1:
        chosen = list(range(len(folders)))
    else:
        return (
            f"{path}: holds episodes of tasks {', '.join(tasks)}, none named '{task_name}' like the "
            "task file; score one task's episodes with that task's file"
        )

    def order(i: int) -> tuple[int, str]:
        index = (metas[i].get("extra") or {}).get("index")
        return (int(index) if isinstance(index, int) else -1, folders[i].name)

    chosen.sort(key=order)
    try:
        episodes = [read_episode(folders[i]) for i in chosen]
        batch = episodes_to_batch(episodes)
    except (StoreError, KeyError, ValueError) as err:
        return f"{path}: {err}"
    return batch, [folders[i].name for i in chosen]


def run(args: argparse.Namespace) -> int:
    if args.out and Path(args.out).suffix not in (".parquet", ".npz"):
        print(f"grapec score: --out must end in .parquet or .npz, got {args.out!r}", file=sys.stderr)
        return 2
    episode_names: list[str] | None = None
    if not Path(args.batch).is_dir():
        batch = load_batch(args.batch)
        if isinstance(batch, str):
            print(f"grapec score: {batch}", file=sys.stderr)
            return 1
    checked = load_checked(args, "score")
    if isinstance(checked, int):
        return checked
    if Path(args.batch).is_dir():  # a store: which episodes depends on the task file's task
        loaded = load_store(args.batch, checked.task.name)
        if isinstance(loaded, str):
            print(f"grapec score: {loaded}", file=sys.stderr)
            return 1
        batch, episode_names = loaded

    from rich.console import Console

    from grape_dsl.compiler import compile_checked
    from grape_dsl.diagnostics import GrcError
    from grape_dsl.runtime.kernels import KernelCacheError
    from grape_dsl.score import BatchError

    err_console = Console(stderr=True)
    try:
        with err_console.status(f"compiling {args.task}"):
            compiled = compile_checked(checked, args.cache_dir)
    except KernelCacheError as err:
        print(f"grapec score: {err}", file=sys.stderr)
        return 1
    except GrcError as err:  # the compile wall-clock cap (GRC403)
        from grape_dsl.cli import print_diagnostics

        print_diagnostics(err.diagnostics, dict(checked.sources))
        return 1
    try:
        with err_console.status(f"scoring {len(batch.lengths)} trajectories"):
            table = compiled.score(batch, nonfinite=args.nonfinite)
    except BatchError as err:
        print(f"grapec score: {args.batch}: {err}", file=sys.stderr)
        return 1
    if args.out:
        table.save(args.out)
    if args.json:
        report = table.summary()
        report["r_ext_per_trajectory"] = table.r_ext.tolist()
        report["valid"] = table.valid.tolist()
        if episode_names is not None:
            report["episodes"] = episode_names
        if args.out:
            report["out"] = args.out
        print(json.dumps(report, indent=2))
    else:
        table.print_summary()
        if args.out:
            print(f"wrote {args.out}")
    return 0
