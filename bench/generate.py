"""What one `grapec generate` round costs besides the model: HTTP to a local server, answer
extraction, checking, loading under the objective, compiling kernels (new and cached).

Every stage runs on the same answer in one process, best of --repeat, and is printed with its
ratio to the HTTP round trip against a scripted server on 127.0.0.1 that answers at once (a
real model takes seconds to minutes per answer, so the ratios bound our overhead from above).

    python bench/generate.py --repeat 5
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "grape_dsl"))

from chat_server import VALID_PICK_PLACE, ChatServer, fenced  # noqa: E402

from grape_dsl import api, llm  # noqa: E402
from grape_dsl.compiler import compile_task  # noqa: E402


def best_of(repeat: int, run: Callable[[int], object]) -> float:
    times = []
    for i in range(repeat):
        start = time.perf_counter()
        run(i)
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=5, help="repetitions per stage; the best is kept")
    args = parser.parse_args()

    constraints = ROOT / "constraints"
    schema = llm.builtin_schema("pick_place")
    objective = llm.resolve_objective("safety", constraints)
    answer = fenced(VALID_PICK_PLACE)
    messages = llm.build_messages(
        "pick up the white box and place it into the black pot",
        objective,
        [schema],
        examples=llm.pick_examples(constraints, "pick_place", check=api.check_source),
    )

    server = ChatServer().start()
    work = Path(tempfile.mkdtemp(prefix="bench-generate-"))
    try:
        client = llm.ChatClient(llm.Endpoint(server.url, "k", "bench", timeout=10, retries=0, backoff=0))
        server.answer(answer)
        client.complete(messages)  # warm the connection pool and the client's imports

        def http(_: int) -> None:
            server.answer(answer)
            client.complete(messages)

        task = work / "task.grc"
        task.write_text(VALID_PICK_PLACE)

        def variant(i: int) -> Path:
            """A program never compiled before (a new param value changes the source hash)."""
            path = work / f"task_{i}.grc"
            path.write_text(VALID_PICK_PLACE.replace("param lift = 0.10", f"param lift = 0.1{i + 1}"))
            return path

        objectives = [str(objective.file_path)]
        compile_task(task, objectives, cache_dir=work / "cache")  # numba's own first-use cost, not ours
        rows = [
            (f"HTTP round trip (prompt {sum(len(m['content']) for m in messages)} chars)", best_of(args.repeat, http)),
            ("extract_grc", best_of(args.repeat, lambda _: llm.extract_grc(answer))),
            (
                "check_source with the task schema",
                best_of(args.repeat, lambda _: api.check_source(VALID_PICK_PLACE, "t.grc", schema=schema.names)),
            ),
            ("load_task under safety.grc", best_of(args.repeat, lambda _: api.load_task(str(task), objectives))),
            (
                "compile_task, new program",
                best_of(args.repeat, lambda i: compile_task(variant(i), objectives, cache_dir=work / "cache")),
            ),
            (
                "compile_task again, same process",
                best_of(args.repeat, lambda _: compile_task(task, objectives, cache_dir=work / "cache")),
            ),
        ]
    finally:
        server.close()

    base = rows[0][1]
    print(f"{'stage':<44} {'seconds':>9} {'x HTTP':>8}")
    for name, seconds in rows:
        print(f"{name:<44} {seconds:>9.4f} {seconds / base:>8.1f}")


if __name__ == "__main__":
    main()
