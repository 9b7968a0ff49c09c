"""`grapec`: the command line of the .grc language.

Each subcommand is a module `grape_dsl.commands.<name>` exposing `add_parser(subparsers)`
(which adds a subparser called `<name>`) and `run(args) -> int`. Adding a command means
adding its module and its name to COMMANDS; nothing else here changes. Only the module of
the command being run is imported, so `grapec check` does not pay for `generate`'s imports.

Exit codes, for every command: 0 success, 1 errors in the input, 2 usage errors.
"""

from __future__ import annotations

import argparse
import glob
import importlib
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import ModuleType

from grape_dsl.diagnostics import Diagnostic, GrcError, render

COMMANDS: tuple[str, ...] = ("check", "fmt", "generate", "compile", "score", "lsp")

EXAMPLES = """\
examples:
  grapec check constraints/              # every .grc file under a directory
  grapec check 'constraints/**/*.grc' --json
  grapec fmt --check constraints/        # exit 1 if any file is not canonical
  grapec fmt task.grc                    # rewrite in place
  cat task.grc | grapec fmt -            # stdin to stdout
  grapec lsp                             # language server for editors (docs/editor.md)

Run `grapec COMMAND --help` for a command's options.
Exit codes: 0 ok, 1 errors in the input, 2 usage.
"""


def _command_module(name: str) -> ModuleType:
    return importlib.import_module(f"grape_dsl.commands.{name}")


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The argument parser; with `only`, just that subcommand's module is imported."""
    parser = argparse.ArgumentParser(
        prog="grapec",
        description="Check, format and compile .grc keypoint-constraint files (see docs/language.md).",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        if only is None or name == only:
            _command_module(name).add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    first_word = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(first_word if first_word in COMMANDS else None)
    args = parser.parse_args(argv)
    try:
        return int(_command_module(args.command).run(args))
    except KeyboardInterrupt:
        print("grapec: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `grapec check --json ... | head`
        return 1


# ---------------------------------------------------------------------------- helpers for commands


def expand_paths(arguments: Iterable[str], suffix: str = ".grc") -> tuple[list[Path], list[tuple[str, str]]]:
    """Files named by arguments: files as given, directories searched recursively for
    `suffix`, glob patterns (quoted so the shell left them) expanded with `**`.

    Returns the files (in order, without duplicates) and (argument, problem) for each
    argument that named nothing usable.
    """
    files: list[Path] = []
    problems: list[tuple[str, str]] = []
    for argument in arguments:
        path = Path(argument)
        if path.is_dir():
            found = sorted(p for p in path.rglob(f"*{suffix}") if p.is_file())
            if not found:
                problems.append((argument, f"no {suffix} files in this directory"))
            files.extend(found)
        elif path.exists():
            files.append(path)
        elif glob.has_magic(argument):
            found = sorted(Path(p) for p in glob.glob(argument, recursive=True) if Path(p).is_file())
            if not found:
                problems.append((argument, "no files match this pattern"))
            files.extend(found)
        else:
            problems.append((argument, "no such file or directory"))
    unique = list(dict.fromkeys(files))
    return unique, problems


def read_grc(path: Path) -> tuple[str | None, list[Diagnostic]]:
    """A file's text, or None and a diagnostic: unreadable (GRC302) or not UTF-8 (GRC105)."""
    from grape_dsl.objective import MISSING_FILE
    from grape_dsl.parser import read_source

    try:
        return read_source(path), []
    except GrcError as err:
        return None, err.diagnostics
    except OSError as err:
        reason = err.strerror or str(err) or type(err).__name__
        return None, [Diagnostic(MISSING_FILE, "error", f"cannot read {path}: {reason}", str(path))]


def print_diagnostics(diagnostics: Iterable[Diagnostic], sources: dict[str, str]) -> None:
    """Render diagnostics to stderr with their source lines; files not in `sources` (an
    objective's imports) are read from disk when possible."""
    for diag in diagnostics:
        if diag.path not in sources:
            from grape_dsl.source_files import read_source_bytes

            try:  # bounded: the path may be a device or a pipe (the diagnostic says so)
                sources[diag.path] = read_source_bytes(diag.path).decode("utf-8", errors="replace")
            except (OSError, ValueError):
                sources[diag.path] = None  # type: ignore[assignment]
        print(render(diag, sources[diag.path]), file=sys.stderr)


def add_schema_arguments(parser: argparse.ArgumentParser) -> None:
    """`--task NAME` / `--scene FILE`: the environment names a task file may bind to."""
    where = parser.add_mutually_exclusive_group()
    where.add_argument(
        "--task",
        dest="schema_task",
        metavar="NAME",
        help="check keypoint/signal sources against this built-in task's names "
        "(pick_place, pick_place_obstacle, push_to_target, stack)",
    )
    where.add_argument(
        "--scene",
        dest="schema_scene",
        metavar="FILE",
        help="check keypoint/signal sources against a scene JSON (docs/generate.md)",
    )


def schema_from_args(args: argparse.Namespace, command: str) -> tuple[list[str], list[str]] | None | int:
    """(keypoint names, signal names) named by --task/--scene, None when neither was given,
    or exit code 1 after printing why the task or scene cannot be used."""
    from grape_dsl import llm  # the schema tables live beside the generator that also reads them

    try:
        if getattr(args, "schema_task", None):
            return llm.builtin_schema(args.schema_task).names
        if getattr(args, "schema_scene", None):
            return llm.load_scene(args.schema_scene).names
    except llm.InputError as err:
        print(f"grapec {command}: {err}", file=sys.stderr)
        return 1
    return None


if __name__ == "__main__":
    sys.exit(main())
