"""Compile cache and the scoring runtime.

A program's kernel module is written once into a cache directory keyed by the program's content
(its lowered IR, which includes every objective and `--set` override, plus the checker's source
hash) and by the compiler, numba, numpy and Python versions. The module is imported from there
with `numba.njit(cache=True)`, so numba keeps its machine code next to it: a second process
finds both and compiles nothing. Neither sympy nor the code generator is imported on that path.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import math
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import numpy as np

from grape_dsl.batch import TrajectoryBatch
from grape_dsl.ir import COMPILER_VERSION
from grape_dsl.ir.lower import Program, fingerprint
from grape_dsl.score import (
    BatchError,
    NonFinitePolicy,
    PreparedBatch,
    ScoreTable,
    describe_nonfinite,
    prepare_batch,
)
from grape_dsl.util.atomic import atomic_write_text

log = logging.getLogger("grape_dsl.kernels")

CACHE_ENV = "GRAPE_DSL_CACHE"
# The last line of defence behind the compile budgets: generating and compiling one program
# may take at most this long (seconds; 0 disables). The stock tasks compile in 2-4 s cold.
COMPILE_TIMEOUT_ENV = "GRAPE_DSL_COMPILE_TIMEOUT"
DEFAULT_COMPILE_TIMEOUT_S = 120.0
MODULE_FILE = "kernels.py"


class KernelCacheError(OSError):
    """The kernel cache directory cannot be written; the message names it and the fix."""


def default_cache_dir() -> Path:
    """`$GRAPE_DSL_CACHE`, else `~/.cache/grape_dsl`."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "grape_dsl"


def cache_key(program: Program) -> str:
    import numba

    text = "\n".join(
        [
            f"compiler {COMPILER_VERSION}",
            f"numba {numba.__version__}",
            f"numpy {np.__version__}",
            f"python {sys.version_info.major}.{sys.version_info.minor}",
            f"source {program.source_hash}",
            fingerprint(program),
        ]
    )
    return hashlib.sha256(text.encode()).hexdigest()[:24]


@dataclass
class CompileInfo:
    """What loading a program took, for `grapec compile` and the cache tests."""

    module_path: Path
    generated: bool  # the module source was written by this process
    numba_compiled: int  # functions numba compiled in this process (0 on a full cache hit)
    seconds: float


@dataclass
class CompiledProgram:
    """A program's kernels, ready to score batches."""

    program: Program
    module: ModuleType
    info: CompileInfo

    @property
    def source(self) -> str:
        return self.info.module_path.read_text()

    def score(self, batch: TrajectoryBatch, nonfinite: NonFinitePolicy = "error") -> ScoreTable:
        """Score every trajectory of `batch` (see grape_dsl/score.py for validation and NaN rules)."""
        if nonfinite not in ("error", "worst"):
            raise ValueError(f"nonfinite must be 'error' or 'worst', got {nonfinite!r}")
        prepared = prepare_batch(batch, self.program.keypoint_sources, self.program.signal_sources)
        table, steps = _run_kernel(self.module, self.program, prepared)
        bad = np.flatnonzero(steps >= 0)
        if bad.size and nonfinite == "error":
            n = int(bad[0])
            what = describe_nonfinite(
                prepared,
                self.program.keypoint_sources,
                self.program.signal_sources,
                n,
                int(steps[n]),
            )
            more = f" ({bad.size} trajectories have non-finite values)" if bad.size > 1 else ""
            raise BatchError(
                f"non-finite input: {what}{more}. Fix the data, or score with "
                "nonfinite='worst' (CLI: --nonfinite worst) to give such trajectories R_ext 0"
            )
        if bad.size:
            table.valid[bad] = False
            table.constraint_costs[bad] = np.inf
            table.stage_costs[bad] = np.inf
            table.r_ext[bad] = 0.0
            table.stage_bounds[bad] = -1
            table.reached[bad] = False
        return table


def _run_kernel(module: ModuleType, program: Program, prepared: PreparedBatch) -> tuple[ScoreTable, np.ndarray]:
    """Run `score_kernel` over every trajectory (threads over disjoint ranges): the table, and
    per trajectory the first step with a non-finite bound input (-1 where none; such a
    trajectory's row of the table is left unscored)."""
    n = prepared.lengths.shape[0]
    first = np.empty(n, dtype=np.int64)
    n_stages = len(program.stages)
    bounds = np.full((n, n_stages, 2), -1, dtype=np.int64)
    reached = np.zeros((n, n_stages), dtype=np.bool_)
    constraint_costs = np.zeros((n, len(program.constraint_names)), dtype=np.float64)
    stage_costs = np.zeros((n, n_stages), dtype=np.float64)
    r_ext = np.zeros(n, dtype=np.float64)
    args = (
        prepared.keypoints,
        prepared.signals,
        prepared.lengths,
        np.asarray(prepared.keypoint_index, dtype=np.int64),
        np.asarray(prepared.signal_index, dtype=np.int64),
        first,
        bounds,
        reached,
        constraint_costs,
        stage_costs,
        r_ext,
    )
    threads = _threads()
    ranges = _split_range(n, threads)
    if len(ranges) <= 1:
        module.score_kernel(*args, 0, n)
    else:
        # The kernel releases the GIL, so threads score disjoint trajectory ranges at once.
        for _ in _pool(threads).map(lambda r: module.score_kernel(*args, *r), ranges):
            pass
    table = ScoreTable(
        task_name=program.task_name,
        stage_names=program.stage_names,
        constraint_names=program.constraint_names,
        tags=program.constraint_tags,
        stage_bounds=bounds,
        reached=reached,
        constraint_costs=constraint_costs,
        stage_costs=stage_costs,
        r_ext=r_ext,
    )
    return table, first


# Below this many trajectories per range a thread pool costs more than it saves.
MIN_TRAJECTORIES_PER_RANGE = 256
# Ranges per thread: a thread that loses its core (a shared machine) then holds up only a small
# range; measured 5-15% faster than one range per thread under load.
RANGES_PER_THREAD = 8


def _threads() -> int:
    """Worker threads: $GRAPE_DSL_THREADS, else numba's thread count (cores available)."""
    env = os.environ.get("GRAPE_DSL_THREADS")
    if env:
        return max(1, int(env))
    import numba

    return max(1, int(numba.config.NUMBA_NUM_THREADS))


_POOLS: dict[int, ThreadPoolExecutor] = {}


def _pool(threads: int) -> ThreadPoolExecutor:
    """One long-lived pool per thread count, so a score call does not pay for thread start-up."""
    if threads not in _POOLS:
        _POOLS[threads] = ThreadPoolExecutor(threads, thread_name_prefix="grape-dsl-score")
    return _POOLS[threads]


def _split_range(n: int, threads: int) -> list[tuple[int, int]]:
    """Contiguous trajectory ranges covering 0..n-1 for `threads` workers."""
    parts = max(1, min(threads * RANGES_PER_THREAD, n // MIN_TRAJECTORIES_PER_RANGE))
    if threads == 1:
        parts = 1
    bounds = np.linspace(0, n, parts + 1).astype(int)
    return [(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:])]


def _import(path: Path, key: str) -> ModuleType:
    name = f"grape_dsl_kernels_{key}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def _warm_up(module: ModuleType, program: Program) -> int:
    """Call the kernel once on a 1x1 float32 batch, so numba compiles (or loads from its cache)
    now rather than inside the first real call; returns how many functions numba compiled."""
    from numba.core import event

    dummy = PreparedBatch(
        keypoints=np.zeros((1, 1, max(len(program.keypoint_sources), 1), 3), dtype=np.float32),
        signals=np.zeros((1, 1, max(len(program.signal_sources), 1)), dtype=np.float32),
        lengths=np.ones(1, dtype=np.int64),
        keypoint_index=tuple(range(len(program.keypoint_sources))),
        signal_index=tuple(range(len(program.signal_sources))),
    )
    with event.install_recorder("numba:compile") as recorder:
        _run_kernel(module, program, dummy)
    # Each compiled function reports a start and an end event.
    return sum(1 for e in recorder.buffer if e[1].is_start)


class _OutOfTime(Exception):
    pass


def compile_timeout() -> float:
    """$GRAPE_DSL_COMPILE_TIMEOUT seconds (0 or less: no cap), else the default."""
    try:
        value = float(os.environ.get(COMPILE_TIMEOUT_ENV, DEFAULT_COMPILE_TIMEOUT_S))
    except ValueError:
        return DEFAULT_COMPILE_TIMEOUT_S
    return value if math.isfinite(value) else DEFAULT_COMPILE_TIMEOUT_S


@contextmanager
def _deadline(seconds: float, program: Program) -> Iterator[None]:
    """Raise GrcError GRC403 if the body runs longer than `seconds` of wall-clock time.

    Uses SIGALRM, so it acts only in the main thread and only when no other interval timer
    is set; elsewhere the compile budgets alone bound the work."""
    usable = (
        seconds > 0
        and hasattr(signal, "setitimer")
        and threading.current_thread() is threading.main_thread()
        and signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
    )
    if not usable:
        yield
        return

    def out_of_time(signum: int, frame: object) -> None:
        raise _OutOfTime

    previous = signal.signal(signal.SIGALRM, out_of_time)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    except _OutOfTime:
        from grape_dsl.diagnostics import Diagnostic, GrcError

        raise GrcError(
            [
                Diagnostic(
                    "GRC403",
                    "error",
                    f"compiling task '{program.task_name}' took longer than {seconds:g} s and was stopped",
                    program.path,
                    None,
                    hint=f"simplify the task, or raise ${COMPILE_TIMEOUT_ENV} (seconds)",
                )
            ]
        ) from None
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def load_program(
    program: Program, cache_dir: str | os.PathLike | None = None, source_name: str | None = None
) -> CompiledProgram:
    """The compiled kernels of `program`, from the cache when they are there."""
    started = time.perf_counter()
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    key = cache_key(program)
    directory = root / f"{program.task_name}-{key}"
    path = directory / MODULE_FILE
    generated = False
    with _deadline(compile_timeout(), program):
        if not path.exists():
            from grape_dsl.codegen import generate_program

            source = generate_program(program, source_name)
            try:
                directory.mkdir(parents=True, exist_ok=True)
                atomic_write_text(path, source)
            except OSError as err:
                raise KernelCacheError(
                    f"cannot write kernels to the cache directory {directory}: "
                    f"{err.strerror or err}. Set ${CACHE_ENV} (or pass cache_dir / --cache-dir) "
                    "to a writable directory"
                ) from err
            generated = True
            log.info("generated %s", path)
        module = _import(path, key)
        compiled = _warm_up(module, program)
    info = CompileInfo(path, generated, compiled, time.perf_counter() - started)
    log.info("%s: %s in %.2fs", path, "compiled" if compiled else "loaded from cache", info.seconds)
    return CompiledProgram(program, module, info)
