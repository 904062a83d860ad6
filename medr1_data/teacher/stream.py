"""Streaming responses (`teacher.stream: true`): the completion assembled from server-sent events as they arrive.

Tokens arrive as they are generated, so a request whose stream stays silent for `stall_timeout` seconds is known
to be dead (a proxy that dropped an idle connection, a crashed replica) and is retried, while a slow but live one
keeps going. The reasoning comes from the deltas' `reasoning_content` or `reasoning` fields (or inline `<think>`
in the content, split later like any response); the usage from the last chunk (`stream_options.include_usage`;
servers that ignore it leave the usage empty, so tokens and cost of those responses are unknown).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson

REASONING_FIELDS = ("reasoning_content", "reasoning")


class Stalled(Exception):
    """The stream sent nothing for `stall_timeout` seconds."""


class Incomplete(Exception):
    """The stream ended without a finish reason (cut off, or an error event): its text is not a whole response."""


class _Parts:
    """What the chunks of one stream add up to."""

    def __init__(self) -> None:
        self.text: dict[str, list[str]] = {"content": [], "reasoning_content": [], "reasoning": []}
        self.finish: str | None = None
        self.usage: dict[str, Any] = {}
        self.head: dict[str, Any] = {}
        self.first_token: float | None = None

    def add(self, chunk: dict[str, Any]) -> None:
        for k in ("id", "model", "timings", "error"):
            if chunk.get(k) is not None:
                self.head[k] = chunk[k]
        if isinstance(chunk.get("usage"), dict):
            self.usage = chunk["usage"]
        for choice in chunk.get("choices") or []:
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            got = False
            for name, parts in self.text.items():
                piece = delta.get(name)
                if isinstance(piece, str) and piece:
                    parts.append(piece)
                    got = True
            if got and self.first_token is None:
                self.first_token = time.monotonic()
            if choice.get("finish_reason"):
                self.finish = choice["finish_reason"]

    def body(self) -> dict[str, Any]:
        """The chunks as one chat-completion body, the shape a non-streaming response has."""
        message: dict[str, Any] = {"role": "assistant"}
        for name, parts in self.text.items():
            if parts:
                message[name] = "".join(parts)
        if "content" not in message:
            message["content"] = ""
        choice = {"index": 0, "message": message, "finish_reason": self.finish}
        return {**self.head, "choices": [choice], "usage": self.usage}


async def read_stream(
    client: Any, messages: list[dict[str, Any]], params: dict[str, Any], headers: dict[str, str], stall_s: float
) -> tuple[dict[str, Any], float | None]:
    """(the completion body, monotonic time of its first token or None) from one streamed request.

    Raises `Stalled` when no line arrives for `stall_s` seconds (the wait for the response headers included),
    `Incomplete` when the stream ends before a finish reason, and the `openai` package's (or httpx's) errors for HTTP
    errors and broken connections."""
    parts = _Parts()
    call = client.chat.completions.with_streaming_response.create(
        messages=messages, stream=True, stream_options={"include_usage": True}, extra_headers=headers, **params
    )
    try:
        cm = await asyncio.wait_for(call.__aenter__(), stall_s)
    except asyncio.TimeoutError:
        raise Stalled from None
    try:
        lines = cm.iter_lines().__aiter__()
        while True:
            try:
                line = await asyncio.wait_for(lines.__anext__(), stall_s)
            except StopAsyncIteration:
                break
            except asyncio.TimeoutError:
                raise Stalled from None
            if not line.startswith("data:"):
                continue  # SSE comments (keep-alives), `event:` lines, blank separators
            data = line[5:].strip()
            if data == "[DONE]":
                break
            try:
                chunk = orjson.loads(data)
            except orjson.JSONDecodeError:
                continue
            if isinstance(chunk, dict):
                parts.add(chunk)
    finally:
        await call.__aexit__(None, None, None)
    if parts.finish is None:
        raise Incomplete(str(parts.head.get("error") or "no finish_reason")[:200])
    return parts.body(), parts.first_token
