"""The teacher's endpoints: one HTTP client each, least-outstanding routing and a circuit breaker.

Every request goes to the available endpoint with the fewest requests in flight per unit of `weight` (ties: the one
that was sent fewest). An endpoint is unavailable while it rests: after a 429 (until its `Retry-After`) and, with two
or more endpoints, after `breaker_failures` failures in a row (connection errors, timeouts, 5xx, broken bodies,
stalls) for `breaker_cooldown_s`; then one probe request is let through, and a success closes the breaker again.
The request that failed is retried on whichever endpoint is then best, so a dead endpoint's requests move to the
others. With one endpoint there is nowhere to reroute: it only rests after a 429, and backoff does the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from typing import Any

from medr1_data.teacher.settings import EndpointSpec, TeacherSettings, safe_url

MODELS_TIMEOUT_S = 5.0


@dataclass
class Endpoint:
    """One server: its client, what is in flight there, and its breaker state."""

    index: int
    spec: EndpointSpec
    client: Any
    label: str
    outstanding: int = 0
    sent: int = 0
    ok: int = 0
    failed: int = 0
    streak: int = 0  # failures in a row
    rest_until: float = 0.0
    tripped: bool = False  # the breaker opened: after the rest, one probe at a time until a success
    trips: int = 0
    listed: list[str] = field(default_factory=list)  # model ids from GET /models

    def available(self, now: float) -> bool:
        """Whether a request may go here now."""
        if now < self.rest_until or (self.tripped and self.outstanding):
            return False
        cap = self.spec.max_concurrency
        return cap is None or self.outstanding < cap

    def listed_model(self) -> str | None:
        """The one model id the server lists, or None (none listed, or several)."""
        return self.listed[0] if len(self.listed) == 1 else None


def make_client(teacher: TeacherSettings, spec: EndpointSpec, secret: str | None) -> Any:
    """An `AsyncOpenAI` for one endpoint: its own retries off, as many idle connections as it may have requests."""
    import openai

    # The whole request is bounded by asyncio (request_timeout); the HTTP client's own limit is a backstop, with a
    # short connect timeout so that an unreachable host fails fast and is retried.
    timeout: Any = teacher.request_timeout + 5
    conns = min(teacher.concurrency, spec.max_concurrency or teacher.concurrency) + 8
    try:
        timeout = type(openai.DEFAULT_TIMEOUT)(timeout, connect=min(30.0, timeout))
        limits = type(openai.DEFAULT_CONNECTION_LIMITS)(max_connections=conns, max_keepalive_connections=conns)
        http_client = openai.DefaultAsyncHttpxClient(limits=limits, timeout=timeout)
    except (AttributeError, TypeError):
        http_client = None
    return openai.AsyncOpenAI(
        base_url=spec.url, api_key=secret or "EMPTY", max_retries=0, timeout=timeout, http_client=http_client
    )


class EndpointPool:
    """The endpoints of one run: `acquire` the best one for a request, `release` it with the outcome."""

    def __init__(self, teacher: TeacherSettings, secret: str | None) -> None:
        specs = teacher.urls()
        self.endpoints = [Endpoint(i, s, make_client(teacher, s, secret), safe_url(s.url)) for i, s in enumerate(specs)]
        self.breaker = len(self.endpoints) > 1
        self.failures_to_trip = teacher.breaker_failures
        self.cooldown = teacher.breaker_cooldown_s
        self._changed: asyncio.Event | None = None

    def _pick(self, now: float) -> Endpoint | None:
        ready = [e for e in self.endpoints if e.available(now)]
        if not ready:
            return None
        return min(ready, key=lambda e: ((e.outstanding + 1) / e.spec.weight, e.sent / e.spec.weight, e.index))

    async def acquire(self) -> Endpoint:
        """The available endpoint with the fewest requests in flight per weight; waits while none is available."""
        if self._changed is None:
            self._changed = asyncio.Event()
        while True:
            now = time.monotonic()
            ep = self._pick(now)
            if ep is not None:
                ep.outstanding += 1
                ep.sent += 1
                return ep
            resting = [e.rest_until - now for e in self.endpoints if e.rest_until > now]
            self._changed.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._changed.wait(), min(resting) if resting else None)

    def release(self, ep: Endpoint, outcome: str, rest_s: float | None = None) -> None:
        """Give the endpoint back: outcome `ok`, `failed` (counts toward its breaker) or `other` (the request's
        own fault, e.g. a 400); `rest_s` keeps it unused that long (a 429's Retry-After)."""
        ep.outstanding -= 1
        now = time.monotonic()
        if rest_s is not None:
            ep.rest_until = max(ep.rest_until, now + rest_s)
        if outcome == "ok":
            ep.ok += 1
            ep.streak = 0
            ep.tripped = False
        elif outcome == "failed":
            ep.failed += 1
            ep.streak += 1
            # in-flight requests failing while it already rests do not open it again; a failed probe does
            fresh = not ep.tripped or now >= ep.rest_until
            if self.breaker and ep.streak >= self.failures_to_trip and fresh:
                ep.tripped = True
                ep.trips += 1
                ep.rest_until = max(ep.rest_until, now + self.cooldown)
        if self._changed is not None:
            self._changed.set()

    async def list_models(self) -> None:
        """Ask every endpoint once for `GET /models` (what the server says it serves); failures are ignored."""

        async def one(ep: Endpoint) -> None:
            with contextlib.suppress(Exception):
                page = await asyncio.wait_for(ep.client.models.list(), MODELS_TIMEOUT_S)
                ep.listed = [m.id for m in page.data][:16]

        await asyncio.gather(*(one(e) for e in self.endpoints))

    def summary(self) -> list[dict[str, Any]]:
        """Per endpoint: URL (no credentials), requests sent, successes, failures, breaker trips."""
        return [
            {"url": e.label, "sent": e.sent, "ok": e.ok, "failed": e.failed, "trips": e.trips} for e in self.endpoints
        ]

    async def close(self) -> None:
        """Close every endpoint's HTTP client."""
        await asyncio.gather(*(e.client.close() for e in self.endpoints), return_exceptions=True)
