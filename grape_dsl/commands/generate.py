"""`grapec generate`: ask a language model for a .grc task file, check it, repair it, write it."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from grape_dsl import llm
from grape_dsl.diagnostics import render

EXAMPLES = """\
examples:
  # a local OpenAI-compatible server (vLLM, Ollama, llama.cpp): no key needed
  export OPENAI_BASE_URL=http://127.0.0.1:8000/v1 OPENAI_MODEL=qwen2.5-coder-7b
  grapec generate "pick up the white box and place it into the black pot" \\
      --objective safety --task pick_place -o pick_box.grc

  # a hosted API, a scene file instead of a built-in task, an objective file
  OPENAI_API_KEY=sk-... grapec generate "stack the red block on the blue one" \\
      --scene scene.json --objective my_objective.grc -o stack.grc --model gpt-4o

Endpoint: --base-url/--api-key/--model, else OPENAI_BASE_URL/OPENAI_API_KEY/OPENAI_MODEL.
Every exchange is logged to OUTPUT.generate.jsonl. Exit 0: file written; 1: no valid file
(last diagnostics on stderr), endpoint error or bad input; 2: usage. See docs/generate.md.
"""


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, got {value}")
    return value


def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def _seconds(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more seconds, got {text}")
    return value


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "generate",
        help="have a language model write a checked .grc task file",
        description="Ask an OpenAI-compatible chat model for a .grc task file for INSTRUCTION, "
        "check it, send the diagnostics back until it is clean, and write it. The "
        "model's answer is only ever parsed as .grc, never executed.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("instruction", help="what the robot should do, in words")
    parser.add_argument(
        "--objective",
        default="task_completion",
        metavar="NAME|FILE",
        help="task_completion (default), safety, efficiency, or an objective .grc file",
    )
    where = parser.add_mutually_exclusive_group()
    where.add_argument(
        "--task",
        metavar="NAME",
        help=f"built-in task whose keypoints/signals to use ({', '.join(llm.builtin_task_names())})",
    )
    where.add_argument(
        "--scene",
        metavar="FILE",
        type=Path,
        help="scene JSON naming the objects, keypoints and signals (docs/generate.md)",
    )
    parser.add_argument(
        "-o",
        "--output",
        type=Path,
        metavar="FILE",
        help="where to write the task file (default: TASK.grc, SCENE.grc or generated.grc)",
    )
    parser.add_argument("--force", action="store_true", help="overwrite OUTPUT if it exists")
    parser.add_argument("--model", help=f"model name (default: $OPENAI_MODEL or {llm.DEFAULT_MODEL})")
    parser.add_argument("--base-url", help=f"API base URL (default: $OPENAI_BASE_URL or {llm.DEFAULT_BASE_URL})")
    parser.add_argument("--api-key", help="API key (default: $OPENAI_API_KEY; optional for a server on this machine)")
    parser.add_argument(
        "--max-rounds",
        type=_positive_int,
        default=3,
        metavar="N",
        help="answers to ask for, the first plus repairs (default 3)",
    )
    parser.add_argument(
        "--timeout", type=_seconds, default=60.0, metavar="S", help="seconds per HTTP request (default 60)"
    )
    parser.add_argument(
        "--retries",
        type=_count,
        default=3,
        metavar="N",
        help="retries of a failed request: unreachable, timeout, 5xx/429, garbage (default 3)",
    )
    parser.add_argument(
        "--backoff",
        type=_seconds,
        default=1.0,
        metavar="S",
        help="seconds before the first retry, doubling each time (default 1)",
    )
    parser.add_argument(
        "--examples",
        type=_count,
        default=2,
        metavar="N",
        help="stock task files from constraints/tasks/ to show the model (default 2)",
    )
    parser.add_argument(
        "--no-compile",
        action="store_true",
        help="accept a file once it checks and loads under the objective, without "
        "compiling its Numba kernels (a few seconds per new file)",
    )
    parser.add_argument("--json", action="store_true", help="print a JSON summary on stdout")
    return parser


def _fail(args: argparse.Namespace, message: str, **summary: object) -> int:
    """Exit 1: the message on stderr, and (with --json) a summary on stdout for scripts."""
    if args.json:
        print(json.dumps({"ok": False, "error": message, **summary}))
    print(f"grapec generate: error: {message}", file=sys.stderr)
    return 1


def run(args: argparse.Namespace) -> int:
    from grape_dsl import api

    if not args.instruction.strip():
        return _fail(args, "the instruction is empty: say what the robot should do")
    try:
        endpoint = llm.resolve_endpoint(
            args.base_url, args.api_key, args.model, timeout=args.timeout, retries=args.retries, backoff=args.backoff
        )
        if args.scene is not None:
            schemas, scene = [llm.load_scene(args.scene)], True
        elif args.task is not None:
            schemas, scene = [llm.builtin_schema(args.task)], False
        else:
            schemas, scene = [llm.builtin_schema(name) for name in llm.builtin_task_names()], False
        constraints_dir = llm.find_constraints_dir()
        objective = llm.resolve_objective(args.objective, constraints_dir)
    except llm.InputError as problem:
        return _fail(args, str(problem))

    default_name = schemas[0].name if len(schemas) == 1 else "generated"
    output: Path = args.output or Path(f"{default_name}.grc")
    if output.is_dir():
        return _fail(args, f"{output} is a folder; name the file to write with -o")
    if output.exists() and not args.force:
        return _fail(args, f"{output} exists; pass --force to overwrite it or -o to pick another file")
    if not output.parent.is_dir():
        return _fail(args, f"{output.parent} is not a folder; cannot write {output}")
    if not os.access(output.parent, os.W_OK):
        return _fail(args, f"cannot write in {output.parent} (permission denied)")

    check = llm.make_checker(schemas, objective, compile_check=not args.no_compile)
    examples = llm.pick_examples(constraints_dir, args.task, check=api.check_source, limit=args.examples)
    messages = llm.build_messages(args.instruction, objective, schemas, scene=scene, examples=examples)
    audit = llm.AuditLog(llm.audit_path_for(output))
    audit.add(
        {
            "event": "start",
            "instruction": args.instruction,
            "objective": objective.name,
            "environment": [s.name for s in schemas],
            "examples": [p for p, _ in examples],
            "output": str(output),
            "max_rounds": args.max_rounds,
        }
    )

    def progress(line: str) -> None:
        if not args.json:
            print(line, file=sys.stderr)

    def on_event(event: dict) -> None:
        audit.add(event)
        if event["event"] == "attempt_failed" and event["attempt"] <= args.retries:
            progress(f"  attempt {event['attempt']} failed ({event['error']}); retrying")

    try:
        chat = llm.ChatClient(endpoint, on_event=on_event)
        result = llm.generate(messages, chat, check, output, audit, max_rounds=args.max_rounds, progress=progress)
    except llm.LLMError as problem:
        audit.add({"event": "error", "error": str(problem)})
        return _fail(args, f"{problem} (audit log: {audit.path})", audit_log=str(audit.path))
    except OSError as problem:  # the disk, not the model: full, removed folder, lost permission
        return _fail(args, f"cannot write {problem.filename or output}: {problem.strerror or problem}")

    diagnostics = [d.to_dict() for d in result.diagnostics]
    if result.ok:
        if args.json:
            print(
                json.dumps(
                    {
                        "ok": True,
                        "output": str(output),
                        "audit_log": str(audit.path),
                        "rounds": result.rounds,
                        "diagnostics": diagnostics,
                    }
                )
            )
        for warning in result.diagnostics:
            progress(render(warning, result.text))
        progress(f"wrote {output} (round {result.rounds}); audit log: {audit.path}")
        return 0
    for diagnostic in result.diagnostics:
        print(render(diagnostic, result.text), file=sys.stderr)
    errors = sum(d.severity == "error" for d in result.diagnostics)
    return _fail(
        args,
        f"no valid file after {result.rounds} round{'s' if result.rounds != 1 else ''} "
        f"({errors} error{'s' if errors != 1 else ''} left); nothing written; "
        f"every exchange is in {audit.path}",
        output=None,
        audit_log=str(audit.path),
        rounds=result.rounds,
        diagnostics=diagnostics,
    )
