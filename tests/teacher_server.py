"""A scripted OpenAI-compatible teacher on 127.0.0.1 for the distill tests and benchmark (a real HTTP server).

`POST /v1/chat/completions` answers per request from a script: a list of `Reply` per request key (the client sends
its cache key in the `X-MedR1-Key` header), consumed in order, then the default reply. A reply is a normal
completion in any of the reasoning shapes, an HTTP error (429 with `Retry-After`, 500, ...), a connection reset, a
hang, an empty or a `length`-truncated completion. Every request is logged; `paid[key]` counts the successful
completions the server sent, so tests can check that nothing was paid for twice.

In-process: `with TeacherServer() as server: ... server.url ...` (its own event loop in a thread).
Out of process (the benchmark): `python -m tests.teacher_server --static` prints `PORT <n>` and serves until killed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import socket
import struct
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

KEY_HEADER = "x-medr1-key"


@dataclass
class Reply:
    """One scripted answer.

    kind: `ok` (a chat completion), `status` (an HTTP error with `status`, `headers`, `body`), `reset` (RST the
    connection, no response), `close` (close it cleanly, no response), `invalid` (200 with a body that is not JSON).
    shape (for `ok`): `reasoning_content` (DeepSeek API, SGLang), `reasoning` (vLLM), `inline` (`<think>…</think>`
    in the content), `prefilled` (only `</think>` in the content), `none` (no thinking).
    `delay` seconds pass before the reply (a hang when longer than the client's timeout).
    """

    kind: str = "ok"
    shape: str = "reasoning_content"
    reasoning: str = "Reasoning about the question."
    content: str = "<answer>A</answer>"
    finish_reason: str = "stop"
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: str = ""
    delay: float = 0.0
    usage: dict[str, Any] | None = None


@dataclass
class Call:
    """One request as the server saw it."""

    key: str | None
    attempt: int
    body: dict[str, Any]
    headers: dict[str, str]
    reply: str
    t: float = field(default_factory=time.monotonic)


def completion_body(reply: Reply, model: str) -> dict[str, Any]:
    """The JSON of a chat completion for an `ok` reply."""
    message: dict[str, Any] = {"role": "assistant", "content": reply.content}
    if reply.shape == "reasoning_content":
        message["reasoning_content"] = reply.reasoning
    elif reply.shape == "reasoning":
        message["reasoning"] = reply.reasoning
    elif reply.shape == "inline":
        message["content"] = f"<think>\n{reply.reasoning}\n</think>\n\n{reply.content}"
    elif reply.shape == "prefilled":
        message["content"] = f"{reply.reasoning}\n</think>\n\n{reply.content}"
    usage = reply.usage or {
        "prompt_tokens": 100,
        "completion_tokens": 50,
        "total_tokens": 150,
        "prompt_cache_hit_tokens": 64,
        "prompt_cache_miss_tokens": 36,
        "completion_tokens_details": {"reasoning_tokens": 40},
    }
    return {
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": reply.finish_reason, "logprobs": None}],
        "usage": usage,
    }


def _response(status: int, body: bytes, headers: dict[str, str] | None = None) -> bytes:
    reason = {200: "OK", 404: "Not Found", 429: "Too Many Requests", 500: "Internal Server Error"}.get(status, "X")
    head = [f"HTTP/1.1 {status} {reason}", f"Content-Length: {len(body)}", "Content-Type: application/json"]
    head += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body


class TeacherServer:
    """The scripted server; `script[key]` is the list of replies for that request key, in order."""

    def __init__(
        self,
        script: dict[str, list[Reply]] | None = None,
        default: Reply | Callable[[dict[str, Any]], Reply] | None = None,
        static: bool = False,
        static_reasoning_bytes: int = 4000,
    ) -> None:
        self.script = {k: list(v) for k, v in (script or {}).items()}
        self.default = default or Reply()
        self.static = static  # one precomputed response for every request (the benchmark's zero-latency server)
        self.calls: list[Call] = []
        self.paid: Counter[str] = Counter()
        self.hold_after: int | None = None  # after this many replies, further requests are never answered
        self.port = 0
        self._attempts: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.base_events.Server | None = None
        self._thread: threading.Thread | None = None
        self._released = 0
        self._static_body = json.dumps(
            completion_body(Reply(reasoning="x" * static_reasoning_bytes), "static")
        ).encode()

    @property
    def url(self) -> str:
        """Base URL for the OpenAI client."""
        return f"http://127.0.0.1:{self.port}/v1"

    # ------------------------------------------------------------------ lifecycle
    async def serve(self, port: int = 0) -> None:
        """Bind 127.0.0.1 and serve until cancelled."""
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", port, backlog=1024)
        self.port = self._server.sockets[0].getsockname()[1]

    def start(self) -> TeacherServer:
        """Serve from a background thread with its own event loop."""
        ready = threading.Event()

        def main() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            loop.run_until_complete(self.serve())
            ready.set()
            loop.run_forever()
            self._server.close()
            for task in asyncio.all_tasks(loop):
                task.cancel()
            with contextlib.suppress(Exception):
                loop.run_until_complete(asyncio.sleep(0))
            loop.close()

        self._thread = threading.Thread(target=main, name="teacher-server", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("teacher server did not start")
        return self

    def stop(self) -> None:
        """Stop serving and join the thread."""
        if self._loop and self._thread:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)

    def __enter__(self) -> TeacherServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ helpers for tests
    def keys_seen(self) -> Counter[str]:
        """Requests received per key (every attempt)."""
        with self._lock:
            return Counter(c.key for c in self.calls)

    def replies(self, key: str) -> list[str]:
        """The kinds of reply sent for one key, in order."""
        with self._lock:
            return [c.reply for c in self.calls if c.key == key]

    def _next_reply(self, key: str | None, body: dict[str, Any], headers: dict[str, str]) -> Reply | None:
        """The reply for this request, or None when `hold_after` replies were already released."""
        with self._lock:
            if self.hold_after is not None:
                if self._released >= self.hold_after:
                    self.calls.append(Call(key, self._attempts[key or ""], body, headers, "held"))
                    return None
                self._released += 1
            queue = self.script.get(key or "")
            reply = queue.pop(0) if queue else self.default
            if callable(reply):
                reply = reply(body)
            attempt = self._attempts[key or ""]
            self._attempts[key or ""] += 1
            kind = reply.kind if reply.kind != "ok" else f"ok:{reply.shape}:{reply.finish_reason}"
            if reply.kind == "ok" and not (reply.content or reply.reasoning):
                kind = "empty"
            self.calls.append(Call(key, attempt, body, headers, kind))
            return reply

    # ------------------------------------------------------------------ HTTP
    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                headers = {}
                for line in lines[1:]:
                    if ":" in line:
                        k, v = line.split(":", 1)
                        headers[k.strip().lower()] = v.strip()
                raw = await reader.readexactly(int(headers.get("content-length", "0")))
                if method != "POST" or not path.endswith("/chat/completions"):
                    writer.write(_response(404, b'{"error": {"message": "not found"}}'))
                    await writer.drain()
                    continue
                if self.static:
                    writer.write(_response(200, self._static_body))
                    await writer.drain()
                    continue
                if not await self._reply(raw, headers, writer):
                    return
        except (ConnectionError, asyncio.CancelledError):
            return
        finally:
            with contextlib.suppress(Exception):
                writer.close()

    async def _reply(self, raw: bytes, headers: dict[str, str], writer: asyncio.StreamWriter) -> bool:
        """Answer one request; False when the connection is gone."""
        body = json.loads(raw)
        key = headers.get(KEY_HEADER)
        reply = self._next_reply(key, body, headers)
        if reply is None:
            await asyncio.Event().wait()  # never answered; cancelled when the server stops
        if reply.delay:
            await asyncio.sleep(reply.delay)
        if reply.kind == "reset":
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()
            return False
        if reply.kind == "close":
            writer.close()
            return False
        if reply.kind == "status":
            payload = reply.body or json.dumps({"error": {"message": f"scripted {reply.status}", "type": "x"}})
            writer.write(_response(reply.status, payload.encode(), reply.headers))
            await writer.drain()
            return True
        if reply.kind == "invalid":
            writer.write(_response(200, b"{not json"))
            await writer.drain()
            return True
        data = json.dumps(completion_body(reply, body.get("model", "?"))).encode()
        if writer.is_closing():
            return False
        writer.write(_response(200, data, reply.headers))
        await writer.drain()
        if key and (reply.content or reply.reasoning):
            with self._lock:
                self.paid[key] += 1
        return True


def main() -> None:
    """Serve until killed; print `PORT <n>` once listening."""
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--static", action="store_true", help="one precomputed response for every request")
    p.add_argument("--reasoning-bytes", type=int, default=4000, help="size of the static response's reasoning")
    args = p.parse_args()

    async def run() -> None:
        server = TeacherServer(static=args.static, static_reasoning_bytes=args.reasoning_bytes)
        await server.serve(args.port)
        print(f"PORT {server.port}", flush=True)
        await asyncio.Event().wait()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run())
    sys.exit(0)


if __name__ == "__main__":
    main()
