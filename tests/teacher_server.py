"""A scripted OpenAI-compatible teacher on 127.0.0.1 for the distill tests and benchmark (a real HTTP server).

`POST /v1/chat/completions` answers per request from a script: a list of `Reply` per request key (the client sends
its cache key in the `X-MedR1-Key` header), consumed in order, then the default reply. A reply is a normal
completion in any of the reasoning shapes, an HTTP error (429 with `Retry-After`, 500, ...), a connection reset, a
hang, an empty or a `length`-truncated completion. Every request is logged; `paid[key]` counts the successful
completions the server sent, so tests can check that nothing was paid for twice.

Streaming (`"stream": true` in the request) answers the same reply as server-sent events, a token-sized chunk at a
time (`chunk_delay` apart; `stall_after` chunks then silence, `cut_after` chunks then the end of the body), with the
usage chunk when `stream_options.include_usage` asks for it. `max_concurrency` caps the requests the server works
on at once (the rest wait in its queue, as in vLLM's scheduler), so a server with `latency` L serves at most
max_concurrency / L requests per second; `models` answers `GET /v1/models`.

In-process: `with TeacherServer() as server: ... server.url ...` (its own event loop in a thread).
Out of process (the benchmark): `python -m tests.teacher_server --static [--latency S --max-concurrency N
--log FILE]` prints `PORT <n>` and serves until killed; `--log` appends the key of every completion it sent.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
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
    timings: dict[str, float] | None = None  # llama.cpp's server-side timings (prompt_ms, predicted_ms)
    chunk_delay: float = 0.0  # streaming: seconds between chunks
    stall_after: int | None = None  # streaming: after this many chunks, silence (never another byte)
    cut_after: int | None = None  # streaming: after this many chunks, end the body (no finish_reason, no [DONE])


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
    body = {
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": reply.finish_reason, "logprobs": None}],
        "usage": usage,
    }
    if reply.timings is not None:
        body["timings"] = reply.timings
    return body


def stream_events(body: dict[str, Any], include_usage: bool, piece: int = 8) -> list[bytes]:
    """A completion body as the SSE events of a stream: role, reasoning and content deltas of `piece` characters,
    the finish chunk (with `timings`, as llama.cpp sends them), the usage chunk when asked, `[DONE]`."""
    head = {k: body[k] for k in ("id", "created", "model")} | {"object": "chat.completion.chunk"}
    choice = body["choices"][0]
    msg = choice["message"]

    def chunk(delta: dict[str, Any], finish: str | None = None, **more: Any) -> bytes:
        data = {**head, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **more}
        return b"data: " + json.dumps(data).encode() + b"\n\n"

    events = [chunk({"role": "assistant"})]
    for name in ("reasoning_content", "reasoning", "content"):
        text = msg.get(name) or ""
        events += [chunk({name: text[i : i + piece]}) for i in range(0, len(text), piece)]
    more = {"timings": body["timings"]} if "timings" in body else {}
    events.append(chunk({}, choice["finish_reason"], **more))
    if include_usage:
        events.append(b"data: " + json.dumps({**head, "choices": [], "usage": body["usage"]}).encode() + b"\n\n")
    return [*events, b"data: [DONE]\n\n"]


def messages_key(messages: Any) -> str | None:
    """What a request without the key header is counted under: `msg:` + SHA-256 of its messages (Ray's HTTP
    processor sends one header set for every row, so it cannot send the per-request key)."""
    if messages is None:
        return None
    return "msg:" + hashlib.sha256(json.dumps(messages, sort_keys=True).encode()).hexdigest()


def _chunked(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


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
        latency: float = 0.0,
        max_concurrency: int | None = None,
        log: str | None = None,
        models: list[str] | None = None,
        served_model: str | None = None,
    ) -> None:
        self.script = {k: list(v) for k, v in (script or {}).items()}
        self.default = default or Reply()
        self.static = static  # one precomputed response for every request (the benchmark's server)
        self.latency = latency  # static mode: seconds each request takes once the server works on it
        self.max_concurrency = max_concurrency
        self.models = models
        self.served_model = served_model  # the model name the completions report (default: the requested one)
        self._slots: asyncio.Semaphore | None = None
        self._log = open(log, "ab", buffering=0) if log else None  # noqa: SIM115 (one line per completion, unbuffered)
        self.busy = 0  # requests the server works on now
        self.peak_busy = 0
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
        if self.max_concurrency:
            self._slots = asyncio.Semaphore(self.max_concurrency)

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
        if self._loop and self._thread and self._thread.is_alive():
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
                if method == "GET" and path.endswith("/models") and self.models is not None:
                    listing = {"object": "list", "data": [{"id": m, "object": "model"} for m in self.models]}
                    writer.write(_response(200, json.dumps(listing).encode()))
                    await writer.drain()
                    continue
                if method != "POST" or not path.endswith("/chat/completions"):
                    writer.write(_response(404, b'{"error": {"message": "not found"}}'))
                    await writer.drain()
                    continue
                if self._slots is not None:
                    async with self._slots:
                        ok = await self._work(raw, headers, writer)
                else:
                    ok = await self._work(raw, headers, writer)
                if not ok:
                    return
        except (ConnectionError, asyncio.CancelledError):
            return
        finally:
            with contextlib.suppress(Exception):
                writer.close()

    async def _work(self, raw: bytes, headers: dict[str, str], writer: asyncio.StreamWriter) -> bool:
        """One request while the server works on it (in one of its `max_concurrency` slots)."""
        self.busy += 1
        self.peak_busy = max(self.peak_busy, self.busy)
        try:
            if not self.static:
                return await self._reply(raw, headers, writer)
            if self.latency:
                await asyncio.sleep(self.latency)
            writer.write(_response(200, self._static_body))
            await writer.drain()
            self._paid(headers.get(KEY_HEADER))
            return True
        finally:
            self.busy -= 1

    def _paid(self, key: str | None) -> None:
        if not key:
            return
        with self._lock:
            self.paid[key] += 1
        if self._log is not None:
            self._log.write(key.encode() + b"\n")

    async def _stream(self, reply: Reply, body: dict[str, Any], data: dict[str, Any], writer: Any) -> bool:
        """Send a completion as a chunked SSE stream; False when it was cut or the connection is gone."""
        include = bool((body.get("stream_options") or {}).get("include_usage"))
        head = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
        writer.write(head.encode())
        for n, event in enumerate(stream_events(data, include)):
            if reply.stall_after is not None and n >= reply.stall_after:
                await asyncio.Event().wait()  # silent until the client gives up (or the server stops)
            if reply.cut_after is not None and n >= reply.cut_after:
                writer.write(b"0\r\n\r\n")  # the body ends cleanly, but without a finish_reason or [DONE]
                await writer.drain()
                return False
            writer.write(_chunked(event))
            await writer.drain()
            if reply.chunk_delay:
                await asyncio.sleep(reply.chunk_delay)
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        return True

    async def _reply(self, raw: bytes, headers: dict[str, str], writer: asyncio.StreamWriter) -> bool:
        """Answer one request; False when the connection is gone."""
        body = json.loads(raw)
        key = headers.get(KEY_HEADER) or messages_key(body.get("messages"))
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
        completion = completion_body(reply, self.served_model or body.get("model", "?"))
        if writer.is_closing():
            return False
        if body.get("stream"):
            if not await self._stream(reply, body, completion, writer):
                return False
        else:
            writer.write(_response(200, json.dumps(completion).encode(), reply.headers))
            await writer.drain()
        if reply.content or reply.reasoning:
            self._paid(key)
        return True


def main() -> None:
    """Serve until killed; print `PORT <n>` once listening."""
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--static", action="store_true", help="one precomputed response for every request")
    p.add_argument("--reasoning-bytes", type=int, default=4000, help="size of the static response's reasoning")
    p.add_argument("--latency", type=float, default=0.0, help="static: seconds each request takes")
    p.add_argument("--max-concurrency", type=int, help="requests worked on at once (the rest queue)")
    p.add_argument("--log", help="append the key of every completion sent to this file")
    args = p.parse_args()

    async def run() -> None:
        server = TeacherServer(
            static=args.static,
            static_reasoning_bytes=args.reasoning_bytes,
            latency=args.latency,
            max_concurrency=args.max_concurrency,
            log=args.log,
        )
        await server.serve(args.port)
        print(f"PORT {server.port}", flush=True)
        await asyncio.Event().wait()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run())
    sys.exit(0)


if __name__ == "__main__":
    main()
