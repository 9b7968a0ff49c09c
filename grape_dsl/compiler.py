"""The compiler's public entry points: a task file (plus objectives and overrides) -> kernels."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

from grape_dsl.ir.lower import lower
from grape_dsl.runtime.kernels import CompiledProgram, load_program


def check_budgets(checked: object) -> None:
    """Raise GrcError (GRC402, at the stage or constraint that caused it) when the program is
    over a compile budget: stages, constraints, or operations per kernel block
    (grape_dsl/ir/lower.py, grape_dsl/ir/blocks.py). Linear in the program's size; nothing is
    handed to numba."""
    from grape_dsl.ir.blocks import to_blocks

    to_blocks(lower(checked))


def compile_checked(checked: object, cache_dir: str | os.PathLike | None = None) -> CompiledProgram:
    """Kernels for an already loaded `CheckedTask` (grape_dsl.api.load_task)."""
    program = lower(checked)
    return load_program(program, cache_dir, source_name=getattr(checked.task, "path", None))


def compile_task(
    task_path: str | os.PathLike,
    objectives: str | os.PathLike | Sequence[str | os.PathLike] = (),
    overrides: Mapping[str, float] | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> CompiledProgram:
    """Load, check and compile `task_path` under `objectives` (applied left to right) and
    `overrides` (param values, as `--set name=value`); raises GrcError on bad input.

    Kernels come from the cache ($GRAPE_DSL_CACHE or ~/.cache/grape_dsl unless `cache_dir`) when
    this exact program was compiled before, by any process.
    """
    from grape_dsl.api import load_task

    if isinstance(objectives, (str, os.PathLike)):
        objectives = (objectives,)
    checked = load_task(str(task_path), [str(o) for o in objectives], dict(overrides or {}))
    return compile_checked(checked, cache_dir)
