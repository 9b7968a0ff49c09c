"""`grapec compile`: a task file (+ objectives, --set) -> Numba kernels, or one pipeline stage."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

EXAMPLES = """\
examples:
  grapec compile constraints/tasks/pick_place.grc
  grapec compile constraints/tasks/pick_place_obstacle.grc --objective constraints/safety.grc
  grapec compile my_task.grc --task pick_place      # reject sources pick_place does not report
  grapec compile task.grc --set near=0.05 -o build/kernels     # write the module under build/kernels
  grapec compile task.grc --emit ir                            # print one stage of the pipeline:
  grapec compile task.grc --emit blocks                        #   ast (objectives applied, as .grc),
  grapec compile task.grc --emit python > kernels.py           #   ir, blocks (one operation a line), python

Without --emit the kernels are compiled (or found in the cache: $GRAPE_DSL_CACHE, else
~/.cache/grape_dsl, unless -o) and a line says where they are and what it took. Programs over
the compile budgets (stages, constraints, operations; docs/language.md) are refused with GRC402.
Exit: 0 ok, 1 errors in the input (diagnostics on stderr), 2 usage.
"""


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """Options shared by `compile` and `score`: which program to build."""
    parser.add_argument("task", metavar="TASK.grc", help="the task file")
    parser.add_argument(
        "--objective",
        action="append",
        default=[],
        metavar="FILE.grc",
        help="an objective file; repeat to apply several, left to right",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        dest="overrides",
        help="override a param (after objectives); repeatable",
    )
    parser.add_argument(
        "--cache-dir",
        metavar="DIR",
        default=None,
        help="kernel cache directory (default: $GRAPE_DSL_CACHE or ~/.cache/grape_dsl)",
    )
    from grape_dsl.cli import add_schema_arguments

    add_schema_arguments(parser)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "compile",
        help="compile a task file to Numba cost kernels",
        description="Compile a .grc task file, with objectives and param overrides applied, to a "
        "Numba kernel module (cached by content), or print one stage of the pipeline.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_common_arguments(parser)
    parser.add_argument("-o", "--output", metavar="DIR", help="write the kernel module (and numba's cache) under DIR")
    parser.add_argument(
        "--emit",
        choices=("ast", "ir", "blocks", "python"),
        help="print this stage of the pipeline to stdout instead of compiling",
    )
    parser.add_argument("--json", action="store_true", help="report as JSON on stdout")


def parse_overrides(items: list[str], command: str) -> dict[str, float] | None:
    """`name=value` pairs as a dict, or None after printing a usage error."""
    out: dict[str, float] = {}
    for item in items:
        name, sep, value = item.partition("=")
        try:
            if not sep or not name.strip():
                raise ValueError
            out[name.strip()] = float(value)
        except ValueError:
            print(f"grapec {command}: --set expects NAME=NUMBER, got {item!r}", file=sys.stderr)
            return None
    return out


def load_checked(args: argparse.Namespace, command: str) -> Any:
    """The CheckedTask for the command line, or an int exit code after printing diagnostics."""
    from grape_dsl.api import load_task
    from grape_dsl.cli import print_diagnostics, schema_from_args
    from grape_dsl.diagnostics import GrcError

    overrides = parse_overrides(args.overrides, command)
    if overrides is None:
        return 2
    schema = schema_from_args(args, command)
    if isinstance(schema, int):
        return schema
    try:
        checked = load_task(args.task, args.objective, overrides, schema=schema)
        from grape_dsl.compiler import check_budgets

        check_budgets(checked)
    except GrcError as err:
        print_diagnostics(err.diagnostics, dict(err.sources))
        print(f"grapec {command}: {len(err.diagnostics)} error(s); nothing compiled", file=sys.stderr)
        return 1
    print_diagnostics(checked.warnings, dict(checked.sources))
    return checked


def run(args: argparse.Namespace) -> int:
    checked = load_checked(args, "compile")
    if isinstance(checked, int):
        return checked
    from grape_dsl.ir.lower import dump, lower

    program = lower(checked)
    if args.emit == "ast":
        from grape_dsl.fmt import format_module

        sys.stdout.write(format_module(checked.task))
        return 0
    if args.emit == "ir":
        print(dump(program))
        return 0
    if args.emit in ("blocks", "python"):
        from grape_dsl.codegen import generate
        from grape_dsl.ir.blocks import dump as dump_blocks
        from grape_dsl.ir.blocks import to_blocks

        blocks = to_blocks(program)
        print(dump_blocks(blocks) if args.emit == "blocks" else generate(blocks, args.task))
        return 0

    from rich.console import Console

    from grape_dsl.cli import print_diagnostics
    from grape_dsl.diagnostics import GrcError
    from grape_dsl.runtime.kernels import KernelCacheError, load_program

    try:
        with Console(stderr=True).status(f"compiling {args.task}"):
            compiled = load_program(program, args.output or args.cache_dir, source_name=args.task)
    except KernelCacheError as err:
        print(f"grapec compile: {err}", file=sys.stderr)
        return 1
    except GrcError as err:  # a compile budget (GRC402) or the wall-clock cap (GRC403)
        print_diagnostics(err.diagnostics, dict(checked.sources))
        return 1
    info = compiled.info
    report = {
        "task": program.task_name,
        "objectives": list(args.objective),
        "module": str(info.module_path),
        "source_hash": program.source_hash,
        "cached": info.numba_compiled == 0,
        "functions_compiled": info.numba_compiled,
        "seconds": round(info.seconds, 3),
        "stages": list(program.stage_names),
        "constraints": list(program.constraint_names),
        "keypoints": list(program.keypoint_sources),
        "signals": list(program.signal_sources),
    }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        how = "loaded from cache" if report["cached"] else f"compiled ({info.numba_compiled} functions)"
        print(
            f"{program.task_name}: {len(program.stages)} stages, {len(program.constraint_names)} "
            f"constraints, {how} in {info.seconds:.2f}s\n  module: {info.module_path}"
        )
    return 0
