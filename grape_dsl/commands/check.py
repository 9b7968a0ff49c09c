"""`grapec check`: parse and check .grc files, print every diagnostic."""

from __future__ import annotations

import argparse
import json
import sys

from grape_dsl.cli import expand_paths, print_diagnostics, read_grc
from grape_dsl.diagnostics import Diagnostic

EXAMPLES = """\
examples:
  grapec check constraints/tasks/pick_place.grc
  grapec check constraints/                      # every .grc file below, recursively
  grapec check 'constraints/**/*.grc' --strict   # warnings fail too
  grapec check task.grc --json | jq '.[].message'

Diagnostics go to stderr as `file:line:col: error[GRCnnn]: message` with the source line, a
caret, what was expected and a hint. With --json, stdout gets a JSON list of diagnostics
(code, severity, message, path, line, column, end_line, end_column, expected, hint).
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


def check_text(text: str, path: str) -> list[Diagnostic]:
    """Every diagnostic of one file (syntax, then semantics; an objective's imports too)."""
    from grape_dsl.api import check_source  # imported when needed: it pulls in the checker

    return check_source(text, path)


def run(args: argparse.Namespace) -> int:
    from grape_dsl.objective import MISSING_FILE

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
            found = check_text(text, str(file))
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
