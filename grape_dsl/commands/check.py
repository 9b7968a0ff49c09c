"""`grapec check`: parse and check .grc files, print every diagnostic."""

from __future__ import annotations

import argparse
import json
import sys

from grape_dsl.cli import add_schema_arguments, expand_paths, print_diagnostics, read_grc, schema_from_args
from grape_dsl.diagnostics import Diagnostic

EXAMPLES = """\
examples:
  grapec check constraints/tasks/pick_place.grc
  grapec check constraints/                      # every .grc file below, recursively
  grapec check 'constraints/**/*.grc' --strict   # warnings fail too
  grapec check task.grc --json | jq '.[].message'
  grapec check my_task.grc --task pick_place_obstacle     # sources must be names the task reports
  grapec check my_task.grc --scene scene.json --objective constraints/safety.grc

Diagnostics go to stderr as `file:line:col: error[GRCnnn]: message` with the source line, a
caret, what was expected and a hint. With --json, stdout gets a JSON list of diagnostics
(code, severity, message, path, line, column, end_line, end_column, expected, hint).
With --task or --scene, a keypoint or signal the environment does not report is an error
(GRC225/GRC226, with the near name); with --objective, each task file is also loaded with
those objectives applied, as grape-train would.
Exit: 0 no errors, 1 errors (or warnings with --strict), 2 usage.
"""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "check",
        help="parse and check .grc files",
        description="Parse and check .grc task and objective files, reporting every error and warning "
        "(an objective file's imports are checked too).",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("paths", nargs="+", metavar="PATH", help="a .grc file, a directory, or a glob pattern")
    parser.add_argument("--json", action="store_true", help="print diagnostics as a JSON list on stdout")
    parser.add_argument("--strict", action="store_true", help="exit 1 on warnings too")
    add_schema_arguments(parser)
    parser.add_argument(
        "--objective",
        action="append",
        default=[],
        metavar="FILE.grc",
        help="also load each task file with this objective applied; repeat for several, left to right",
    )


def check_text(
    text: str,
    path: str,
    schema: tuple[list[str], list[str]] | None = None,
    objectives: list[str] | tuple[str, ...] = (),
) -> list[Diagnostic]:
    """Every diagnostic of one file (syntax, then semantics; an objective's imports too); with
    `schema`, sources the environment lacks; with `objectives`, what applying them to a task reports."""
    from grape_dsl import ast
    from grape_dsl.api import check_source, load_task  # imported when needed: they pull in the checker
    from grape_dsl.diagnostics import GrcError
    from grape_dsl.parser import parse

    found = check_source(text, path, schema=schema)
    if not objectives or any(d.severity == "error" for d in found):
        return found
    try:
        if not isinstance(parse(text, path), ast.TaskFile):  # objective files take no objectives
            return found
        checked = load_task(path, objectives, schema=schema)
        more = list(checked.warnings)
    except GrcError as err:
        more = list(err.diagnostics)
    return found + [d for d in more if d not in found]


def run(args: argparse.Namespace) -> int:
    from grape_dsl.objective import MISSING_FILE

    schema = schema_from_args(args, "check")
    if isinstance(schema, int):
        return schema
    files, problems = expand_paths(args.paths)
    diagnostics: list[Diagnostic] = []
    for argument, problem in problems:
        print(f"grapec check: {argument}: {problem}", file=sys.stderr)
        diagnostics.append(Diagnostic(MISSING_FILE, "error", f"{argument}: {problem}", argument))
    sources: dict[str, str] = {}
    for file in files:
        text, found = read_grc(file)
        if text is not None:
            sources[str(file)] = text
            found = check_text(text, str(file), schema, args.objective)
        diagnostics.extend(found)
        if not args.json:
            print_diagnostics(found, sources)

    errors = sum(d.severity == "error" for d in diagnostics)
    warnings = len(diagnostics) - errors
    if args.json:
        json.dump([d.to_dict() for d in diagnostics], sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        plural = "" if len(files) == 1 else "s"
        print(f"checked {len(files)} file{plural}: {errors} error(s), {warnings} warning(s)", file=sys.stderr)
    failed = errors or (args.strict and warnings)
    return 1 if failed else 0
