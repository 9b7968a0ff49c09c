"""How long from an edit to its diagnostics in `grapec lsp` (target: under 100 ms for 2 kB).

A plain JSON-RPC client over the server's stdin/stdout (what an editor does): open a ~2 kB
task file, then send N incremental didChange edits one at a time and time each from the
moment the edit is written to the moment publishDiagnostics for that version arrives.
Runs the server with the default debounce and with none, and times `check_source` on the
same texts in this process, so the three are measured side by side.

    python bench/lsp.py --edits 200
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def two_kb_file() -> str:
    """pick_place.grc (1.8 kB) with one more stage of real constraints: about 2 kB."""
    text = (ROOT / "constraints" / "tasks" / "pick_place.grc").read_text()
    extra = (
        "stage settle until grasped <= 0 {\n"
        "    subgoal still: norm(delta(obj)) <= 0.001 weight 2 tag task\n"
        "    path calm: touching <= 0 tol 1 weight 0.5 over sum tag collision\n"
        "    path level: abs(obj.z - goal.z) <= settle weight 1 over max tag task\n"
        "}\n\n"
    )
    return text.replace("stage place {", extra + "stage place {")


class Client:
    def __init__(self, command: list[str]):
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
        self.process = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env
        )
        self.next_id = 0

    def send(self, message: dict) -> None:
        body = json.dumps({"jsonrpc": "2.0", **message}).encode()
        self.process.stdin.write(b"Content-Length: %d\r\n\r\n" % len(body) + body)
        self.process.stdin.flush()

    def receive(self) -> dict:
        length = 0
        while True:
            line = self.process.stdout.readline()
            if not line:
                raise RuntimeError("the server closed its output")
            if line in (b"\r\n", b"\n"):
                break
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        return json.loads(self.process.stdout.read(length))

    def request(self, method: str, params: dict) -> dict:
        self.next_id += 1
        self.send({"id": self.next_id, "method": method, "params": params})
        while True:
            message = self.receive()
            if message.get("id") == self.next_id and "method" not in message:
                return message

    def wait_diagnostics(self, version: int) -> list:
        while True:
            message = self.receive()
            if (
                message.get("method") == "textDocument/publishDiagnostics"
                and message["params"].get("version") == version
            ):
                return message["params"]["diagnostics"]

    def close(self) -> None:
        self.request("shutdown", None)
        self.send({"method": "exit", "params": None})
        self.process.wait(timeout=10)


def edit_latencies(text: str, edits: int, debounce_ms: int) -> list[float]:
    client = Client([sys.executable, "-m", "grape_dsl.cli", "lsp", "--debounce-ms", str(debounce_ms)])
    client.request("initialize", {"processId": os.getpid(), "rootUri": ROOT.as_uri(), "capabilities": {}})
    client.send({"method": "initialized", "params": {}})
    uri = (ROOT / "bench_lsp_2kb.grc").as_uri()  # never written: the text lives in the editor
    client.send(
        {
            "method": "textDocument/didOpen",
            "params": {"textDocument": {"uri": uri, "languageId": "grc", "version": 0, "text": text}},
        }
    )
    client.wait_diagnostics(0)
    line = text[: text.index("param horizon")].count("\n")
    times = []
    for version in range(1, edits + 1):
        # Type and delete one digit of `param horizon = 60` in turn: a realistic keystroke.
        change = (
            {"range": {"start": {"line": line, "character": 18}, "end": {"line": line, "character": 18}}, "text": "0"}
            if version % 2
            else {
                "range": {"start": {"line": line, "character": 18}, "end": {"line": line, "character": 19}},
                "text": "",
            }
        )
        start = time.perf_counter()
        client.send(
            {
                "method": "textDocument/didChange",
                "params": {"textDocument": {"uri": uri, "version": version}, "contentChanges": [change]},
            }
        )
        client.wait_diagnostics(version)
        times.append(time.perf_counter() - start)
    client.close()
    return times


def check_times(text: str, repeat: int) -> list[float]:
    from grape_dsl.api import check_source
    from grape_dsl.llm import builtin_schema

    names = builtin_schema("pick_place").names
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        check_source(text, "bench.grc", schema=names)
        times.append(time.perf_counter() - start)
    return times


def summary(label: str, seconds: list[float]) -> str:
    ms = sorted(s * 1000 for s in seconds)
    p90 = ms[int(0.9 * (len(ms) - 1))]
    return f"| {label} | {len(ms)} | {statistics.median(ms):.1f} | {p90:.1f} | {ms[-1]:.1f} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--edits", type=int, default=200, help="edits timed per server run (default 200)")
    args = parser.parse_args()
    text = two_kb_file()
    from grape_dsl.lsp.server import DEFAULT_DEBOUNCE_MS

    default = edit_latencies(text, args.edits, DEFAULT_DEBOUNCE_MS)
    immediate = edit_latencies(text, args.edits, 0)
    in_process = check_times(text, args.edits)
    print(f"file: {len(text):,} characters (pick_place.grc, padded)")
    print("| measured | n | median ms | p90 ms | max ms |")
    print("| --- | ---: | ---: | ---: | ---: |")
    print(summary(f"didChange -> publishDiagnostics, debounce {DEFAULT_DEBOUNCE_MS} ms (default)", default))
    print(summary("didChange -> publishDiagnostics, debounce 0 ms", immediate))
    print(summary("check_source alone, in process", in_process))
    over = sum(t > 0.1 for t in default)
    print(
        f"edits over 100 ms with the default debounce: {over} of {len(default)}; "
        f"server overhead over check_source (debounce 0, medians): "
        f"{statistics.median(immediate) / statistics.median(in_process):.2f}x"
    )


if __name__ == "__main__":
    main()
