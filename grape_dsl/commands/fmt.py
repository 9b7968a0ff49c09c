"""`grapec fmt`: rewrite .grc files in the canonical layout (comments kept)."""

from __future__ import annotations

import argparse
import difflib
import sys
from pathlib import Path

from grape_dsl.cli import expand_paths, print_diagnostics, read_grc
from grape_dsl.diagnostics import GrcError
from grape_dsl.util.atomic import atomic_write_text

EXAMPLES = """\
examples:
  grapec fmt task.grc                   # rewrite in place (atomically)
  grapec fmt constraints/               # every .grc file below, recursively
  grapec fmt --check constraints/       # list files that would change; exit 1 if any
  grapec fmt --diff task.grc            # show the changes, write nothing
  grapec fmt - < task.grc > tidy.grc    # stdin to stdout

A file with syntax errors is left as it is; its diagnostics go to stderr.
Exit: 0 ok, 1 syntax errors (or, with --check, files that would change), 2 usage.
"""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "fmt",
        help="format .grc files in the canonical layout",
        description="Rewrite .grc files in the one canonical layout, keeping every comment.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "paths", nargs="+", metavar="PATH", help="a .grc file, a directory, a glob pattern, or - for stdin"
    )
    parser.add_argument(
        "--check", action="store_true", help="write nothing; list files that would change and exit 1 if any"
    )
    parser.add_argument("--diff", action="store_true", help="write nothing; print a unified diff of the changes")


def _format_stdin() -> int:
    from grape_dsl.fmt import format_source
    from grape_dsl.parser import decode_source

    try:
        text = decode_source(sys.stdin.buffer.read(), "<stdin>")
        sys.stdout.write(format_source(text, "<stdin>"))
    except GrcError as err:
        print_diagnostics(err.diagnostics, dict(err.sources))
        return 1
    return 0


def run(args: argparse.Namespace) -> int:
    from grape_dsl.fmt import format_source

    if "-" in args.paths:
        if len(args.paths) > 1:
            print("grapec fmt: `-` (stdin) cannot be combined with other paths", file=sys.stderr)
            return 2
        return _format_stdin()

    files, problems = expand_paths(args.paths)
    for argument, problem in problems:
        print(f"grapec fmt: {argument}: {problem}", file=sys.stderr)
    failed = bool(problems)
    changed: list[Path] = []
    for file in files:
        text, diagnostics = read_grc(file)
        if text is None:
            print_diagnostics(diagnostics, {})
            failed = True
            continue
        try:
            formatted = format_source(text, str(file))
        except GrcError as err:
            print_diagnostics(err.diagnostics, {str(file): text})
            failed = True
            continue
        if formatted == text:
            continue
        changed.append(file)
        if args.diff:
            sys.stdout.writelines(
                difflib.unified_diff(
                    text.splitlines(keepends=True),
                    formatted.splitlines(keepends=True),
                    fromfile=f"{file} (original)",
                    tofile=f"{file} (formatted)",
                )
            )
        if args.check:
            print(f"would reformat {file}", file=sys.stderr)
        elif not args.diff:
            try:
                atomic_write_text(file, formatted, newline="\n")
            except OSError as err:
                print(f"grapec fmt: cannot write {file}: {err.strerror or err}", file=sys.stderr)
                failed = True
                continue
            print(f"reformatted {file}", file=sys.stderr)

    if args.check and changed:
        failed = True
    return 1 if failed else 0
