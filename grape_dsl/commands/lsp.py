"""`grapec lsp`: the .grc language server on stdin/stdout, for editors (docs/editor.md)."""

from __future__ import annotations

import argparse
import sys

EXAMPLES = """\
examples:
  grapec lsp                          # started by an editor; speaks LSP on stdin/stdout
  grapec lsp --scene my_scene.json    # check keypoint/signal names against one's own scene
  grapec lsp --debounce-ms 100        # wait longer after a keystroke before checking

Task files named after a stock task (pick_place, stack, ...) are checked against that
task's environment names; a scene file (format in docs/generate.md) replaces them for every
task file. Clients may also send initializationOptions {"scene": FILE, "debounceMs": N} or
the setting grapec.scene. Logs go to stderr. Exit: 0 after the client's exit, 2 usage.
"""


def _milliseconds(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number of milliseconds, got '{text}'") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "lsp",
        help="run the .grc language server (for editors)",
        description="Serve the Language Server Protocol on stdin/stdout: diagnostics as you type "
        "(the same as grapec check), completion, hover, go to definition, references, "
        "rename, formatting and document symbols for .grc files.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--scene",
        metavar="FILE",
        help="scene JSON naming one's own environment's keypoints and signals (as for grapec generate --scene)",
    )
    parser.add_argument(
        "--debounce-ms",
        type=_milliseconds,
        default=None,
        metavar="MS",
        help="quiet time after an edit before checking (default 30)",
    )
    parser.add_argument(
        "--stdio", action="store_true", help="accepted for editors that always pass it; stdio is the only transport"
    )


def run(args: argparse.Namespace) -> int:
    try:
        from grape_dsl.lsp.server import DEFAULT_DEBOUNCE_MS, serve
    except ImportError as missing:
        print(
            f"grapec lsp: {missing.name} is not installed; install it with: pip install 'grape-dsl[lsp]'",
            file=sys.stderr,
        )
        return 1
    if args.scene is not None:
        from grape_dsl import llm

        try:
            llm.load_scene(args.scene)  # a bad scene is a usage error now, not a silent fallback later
        except llm.InputError as problem:
            print(f"grapec lsp: {problem}", file=sys.stderr)
            return 2
    serve(args.scene, DEFAULT_DEBOUNCE_MS if args.debounce_ms is None else args.debounce_ms)
    return 0
