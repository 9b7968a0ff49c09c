"""A scripted OpenAI-compatible chat completions server on 127.0.0.1, for tests.

It is a real HTTP server (http.server in a thread, an ephemeral port): the `openai` client
talks to it exactly as to a hosted API. Each test scripts the answers in order and reads back
every request body it received.

    server.answer("```grc\\ntask ...\\n```")   # a normal completion
    server.status(500, "boom")                 # an HTTP error
    server.raw("not json", "text/plain")       # a 200 with any body
    server.stall(5.0)                          # hold the request past the client's timeout
    server.trickle(0.3)                        # send the answer one byte every 0.3 s
"""

from __future__ import annotations

import json
import threading
from collections import deque
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

COMPLETIONS_PATH = "/v1/chat/completions"

# A task file the real checker accepts for the built-in pick_place schema: what a good model answers.
VALID_PICK_PLACE = """\
task pick_place "pick up the {object} and place it into the {container}"

param lift = 0.10  # m

keypoints {
    ee = gripper.tip
    obj = object.center
    goal = container.top + vec(0, 0, 0.02)
}

signals {
    held = grasped
    hit = contact.obstacle
}

stage grasp until held >= 0.5 {
    subgoal reach: dist(ee, obj) <= 0.02 tag grasp
    path bump: hit <= 0 over sum tag collision
}

stage transport until dist_xy(obj, goal) <= 0.03 {
    path carry: obj.z >= lift over mean tol 0.01 tag path
}

stage place {
    subgoal inside: dist(obj, goal) <= 0.03 weight 2 tag task
}
"""


def fenced(text: str, lang: str = "grc") -> str:
    return f"Here is the file.\n\n```{lang}\n{text}```\n"


@dataclass(frozen=True)
class _Step:
    status: int = 200
    body: bytes = b""
    content_type: str = "application/json"
    stall_s: float = 0.0
    trickle_s: float = 0.0  # seconds between body bytes (0: the body in one write)
    headers: tuple[tuple[str, str], ...] = ()


def completion_body(content: str | None, model: str = "scripted") -> bytes:
    return json.dumps(
        {
            "id": "chatcmpl-test",
            "object": "chat.completion",
            "created": 0,
            "model": model,
            "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": content}}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        }
    ).encode()


class ChatServer:
    def __init__(self) -> None:
        self._steps: deque[_Step] = deque()
        self.requests: list[dict] = []  # JSON bodies of POSTs to the completions path, in order
        self.paths: list[str] = []
        self.headers: list[dict[str, str]] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    # scripting
    def answer(self, content: str | None) -> None:
        self._steps.append(_Step(body=completion_body(content)))

    def status(self, code: int, text: str = "", headers: dict[str, str] | None = None) -> None:
        body = json.dumps({"error": {"message": text or f"status {code}", "type": "server_error"}})
        self._steps.append(_Step(status=code, body=body.encode(), headers=tuple((headers or {}).items())))

    def raw(self, body: str | bytes, content_type: str = "application/json") -> None:
        self._steps.append(_Step(body=body.encode() if isinstance(body, str) else body, content_type=content_type))

    def stall(self, seconds: float) -> None:
        self._steps.append(_Step(stall_s=seconds, body=completion_body("late")))

    def trickle(self, seconds_per_byte: float, content: str = "late") -> None:
        self._steps.append(_Step(trickle_s=seconds_per_byte, body=completion_body(content)))

    @property
    def unused(self) -> int:
        return len(self._steps)

    def user_messages(self, request_index: int) -> list[str]:
        return [m["content"] for m in self.requests[request_index]["messages"] if m["role"] == "user"]

    # lifecycle
    def start(self) -> ChatServer:
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:  # keep test output quiet
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                raw = self.rfile.read(length)
                with server._lock:
                    server.paths.append(self.path)
                    server.headers.append({k.lower(): v for k, v in self.headers.items()})
                    if self.path != COMPLETIONS_PATH:
                        step = _Step(status=404, body=b'{"error": {"message": "no such path"}}')
                    else:
                        server.requests.append(json.loads(raw))
                        step = (
                            server._steps.popleft()
                            if server._steps
                            else _Step(status=500, body=b'{"error": {"message": "script exhausted"}}')
                        )
                if step.stall_s and server._stop.wait(step.stall_s):
                    return
                try:
                    self.send_response(step.status)
                    self.send_header("Content-Type", step.content_type)
                    self.send_header("Content-Length", str(len(step.body)))
                    for name, value in step.headers:
                        self.send_header(name, value)
                    self.end_headers()
                    if not step.trickle_s:
                        self.wfile.write(step.body)
                    for i in range(len(step.body) if step.trickle_s else 0):
                        if server._stop.wait(step.trickle_s):
                            return
                        self.wfile.write(step.body[i : i + 1])
                        self.wfile.flush()
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (a timeout test); nothing to tell it

        return Handler


@pytest.fixture
def chat_server():
    server = ChatServer().start()
    try:
        yield server
    finally:
        server.close()
