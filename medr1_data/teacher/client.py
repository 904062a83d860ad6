"""The HTTP client over OpenAI-compatible endpoints: retries, timeouts, a cache write per success, counters.

Each endpoint's client is the `openai` package's `AsyncOpenAI` with its own retries off (`max_retries=0`); requests
are routed by `endpoints.EndpointPool` (fewest in flight, circuit breaker). This module retries 429s after
`Retry-After` (the endpoint rests until then), 5xx, connection errors, timeouts, stalled streams, empty responses
and unparsable bodies with jittered exponential backoff, each retry on whichever endpoint is best then, and stops
the run on errors that every request would hit (401, 402, 403, 404) or after a long streak of failures. The API key
is read from the environment variable named by `api_key_env` and is never printed, logged or written.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import functools
import importlib
import json
import math
import os
import random
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from medr1_data import Medr1Error
from medr1_data.progress import duration, human
from medr1_data.teacher.cache import ERRORS_FILE, CacheWriter, cache_record, loads_json
from medr1_data.teacher.endpoints import Endpoint, EndpointPool
from medr1_data.teacher.plan import Job
from medr1_data.teacher.prices import Price, cost_usd
from medr1_data.teacher.settings import TeacherSettings
from medr1_data.teacher.stream import Incomplete, Stalled, read_stream
from medr1_data.teacher.traces import split_reasoning

KEY_HEADER = "X-MedR1-Key"  # the request key, sent with every request (servers ignore it; logs can match it)
FATAL_STATUS = {401: "authentication failed", 402: "insufficient balance", 403: "forbidden", 404: "not found"}
RETRY_AFTER_MAX_S = 900.0  # a longer Retry-After is shortened to this
RETRY_FINISH = {"insufficient_system_resource"}  # DeepSeek: generation interrupted by server load


class Fatal(Exception):
    """An error every further request would hit too: the run stops."""


@dataclass
class RunStats:
    """Counters of one client run (what the progress line and the summary show)."""

    total: int = 0  # distinct requests the table needs
    cached_before: int = 0
    to_fetch: int = 0
    fetched: int = 0
    failed: int = 0
    in_flight: int = 0
    attempts: int = 0
    retries: Counter[str] = field(default_factory=Counter)
    failures: Counter[str] = field(default_factory=Counter)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    started: float = field(default_factory=time.monotonic)
    seconds: float = 0.0
    stopped: str | None = None
    cache_batches: int = 0  # fsyncs of the cache file
    endpoints: list[dict[str, Any]] = field(default_factory=list)  # per endpoint: url, sent, ok, failed, trips


def progress_line(st: RunStats) -> str:
    """done/total, requests/s, output tokens/s, spent, ETA, retries and failures."""
    elapsed = max(time.monotonic() - st.started, 1e-9)
    done = st.cached_before + st.fetched
    rate = st.fetched / elapsed
    left = st.to_fetch - st.fetched - st.failed
    eta = left / rate if rate > 0 else math.inf
    pct = 100.0 * done / st.total if st.total else 100.0
    return (
        f"distill {done}/{st.total} ({pct:.1f}%) | {rate:.1f} req/s | {human(st.completion_tokens / elapsed)} tok/s "
        f"| ${st.cost_usd:.2f} spent | ETA {duration(eta) if left else '0s'} "
        f"| {sum(st.retries.values())} retries, {st.failed} failed"
    )


def retry_after(headers: Any) -> float | None:
    """Seconds to wait from `retry-after-ms` or `retry-after` (seconds or an HTTP date)."""
    if headers is None:
        return None
    for name, scale in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            return max(0.0, float(value) / scale)
        except ValueError:
            pass
        try:
            when = email.utils.parsedate_to_datetime(value)
            return max(0.0, when.timestamp() - time.time())
        except (TypeError, ValueError, IndexError):
            pass
    return None


def _message_of(data: Any) -> tuple[dict[str, Any] | None, str | None, str]:
    """(message, finish_reason, problem) from a completion body; problem is '' when the message is usable."""
    if not isinstance(data, dict):
        return None, None, "invalid_body"
    choices = data.get("choices")
    if not choices or not isinstance(choices, list) or not isinstance(choices[0], dict):
        err = data.get("error")
        return None, None, f"no_choices: {str(err)[:200]}" if err else "no_choices"
    choice = choices[0]
    msg = choice.get("message") or {}
    message = {k: msg[k] for k in ("role", "content", "reasoning_content", "reasoning") if msg.get(k) is not None}
    finish = choice.get("finish_reason")
    if finish in RETRY_FINISH:
        return None, finish, f"finish_{finish}"
    reasoning, response = split_reasoning(message)
    if not reasoning and not response:
        return None, finish, "empty_response"
    return message, finish, ""


def server_latency(data: dict[str, Any]) -> float | None:
    """Seconds the server says it spent on the request itself, queueing excluded (llama.cpp's `timings`), or None."""
    t = data.get("timings")
    if not isinstance(t, dict):
        return None
    parts = [t.get("prompt_ms"), t.get("predicted_ms")]
    if not all(isinstance(v, int | float) and not isinstance(v, bool) and v >= 0 for v in parts):
        return None
    return round(sum(parts) / 1000.0, 3)


def record_from_body(
    job: Job, teacher: TeacherSettings, data: Any, wall_s: float | None, **extra: Any
) -> tuple[dict[str, Any] | None, str]:
    """(the cache record, '') for a usable completion body, else (None, the problem).

    `latency_s` is the server's own time when it reports one (`latency_from: server`), else the wall time of the
    request (`client`, queueing in the server included); `wall_s` is the wall time (None where unknown: Ray)."""
    message, finish, problem = _message_of(data)
    if problem:
        return None, problem
    usage = data.get("usage") if isinstance(data.get("usage"), dict) else {}
    server = server_latency(data)
    wall = round(wall_s, 3) if wall_s is not None else None
    record = cache_record(
        job.key,
        teacher,
        job.sample_idx,
        message,
        finish,
        usage,
        server if server is not None else wall,
        latency_from="server" if server is not None else "client" if wall is not None else None,
        wall_s=wall,
        response_id=data.get("id"),
        served_model=data.get("model"),
        created=int(time.time()),
        **extra,
    )
    return record, ""


class TeacherClient:
    """The async client over the teacher's endpoints: routing, retries, timeouts, cache writes, counters."""

    def __init__(self, teacher: TeacherSettings, stats: RunStats, writer: CacheWriter, price: Price) -> None:
        import openai

        self.openai = openai
        self.teacher, self.stats, self.writer, self.price = teacher, stats, writer, price
        self._secret = api_key(teacher)
        self._streak = 0
        self._stop_after = max(20, 2 * teacher.concurrency)
        self.fetched: set[str] = set()  # keys whose response is in the cache file now
        self.errors: dict[str, str] = {}
        self._error_log: list[dict[str, Any]] = []
        self.pool = EndpointPool(teacher, self._secret)
        params: dict[str, Any] = {
            "model": teacher.model,
            "temperature": teacher.temperature,
            "top_p": teacher.top_p,
            "max_tokens": teacher.max_tokens,
        }
        if teacher.extra:
            params["extra_body"] = dict(teacher.extra)
        self._params = params

    def scrub(self, text: str) -> str:
        """An error text safe to print and store: the API key removed, one line, at most 300 characters."""
        if self._secret:
            text = text.replace(self._secret, "***")
        return " ".join(text.split())[:300]

    def _backoff(self, attempt: int) -> float:
        cap = min(self.teacher.backoff_max_s, self.teacher.backoff_s * 2**attempt)
        return cap / 2 + random.uniform(0, cap / 2)

    async def _send(self, job: Job, ep: Endpoint) -> tuple[Any, float | None]:
        """(the parsed body, monotonic time of the first token when streaming) of one request."""
        headers = {KEY_HEADER: job.key}
        if self.teacher.stream:
            return await read_stream(ep.client, job.messages, self._params, headers, self.teacher.stall_timeout)
        raw = await ep.client.chat.completions.with_raw_response.create(
            messages=job.messages, extra_headers=headers, **self._params
        )
        return loads_json(raw.http_response.content), None

    async def _attempt(self, job: Job, ep: Endpoint) -> tuple[dict[str, Any] | None, str, float | None, bool]:
        """One try at one endpoint: (record, problem, wait before the next try or None for the backoff,
        retryable). HTTP errors other than 429 and 5xx are the request's own (not the endpoint's)."""
        openai = self.openai
        t0 = time.monotonic()
        try:
            data, first = await asyncio.wait_for(self._send(job, ep), self.teacher.request_timeout)
        except (asyncio.TimeoutError, openai.APITimeoutError):
            return None, "timeout", None, True
        except Stalled:
            return None, "stalled", None, True
        except Incomplete as e:
            return None, f"stream_incomplete ({self.scrub(str(e))})", None, True
        except openai.APIStatusError as e:
            status = e.status_code
            if status in FATAL_STATUS:
                raise Fatal(f"HTTP {status} ({FATAL_STATUS[status]}): {self.scrub(str(e))}") from None
            wait = retry_after(e.response.headers) if status in (429, 503) else None
            wait = min(wait, RETRY_AFTER_MAX_S) if wait is not None else None
            retryable = status >= 500 or status in (408, 409, 429)
            return None, f"http_{status}" + ("" if retryable else f": {self.scrub(str(e))}"), wait, retryable
        except (openai.APIConnectionError, *_transport_errors()) as e:
            cause = type(e.__cause__).__name__ if e.__cause__ else type(e).__name__
            return None, f"connection_error ({cause})", None, True
        except (json.JSONDecodeError, UnicodeDecodeError):
            return None, "invalid_body", None, True
        extra: dict[str, Any] = {"endpoint": ep.label, "listed_model": ep.listed_model()}
        if first is not None:
            extra["ttft_s"] = round(first - t0, 3)
        record, problem = record_from_body(job, self.teacher, data, time.monotonic() - t0, **extra)
        return record, problem, None, record is None

    def _keep(self, job: Job, record: dict[str, Any], attempts: int) -> None:
        record["attempts"] = attempts
        self.writer.put(record)
        self.fetched.add(job.key)
        usage = record["usage"]
        st = self.stats
        st.fetched += 1
        st.prompt_tokens += usage.get("prompt_tokens") or 0
        st.completion_tokens += usage.get("completion_tokens") or 0
        st.cost_usd += cost_usd(usage, self.price)
        self._streak = 0

    async def fetch(self, job: Job) -> None:
        """Ask until success, a non-retryable error or `max_retries` retries; cache a success at once."""
        st = self.stats
        problem = ""
        attempts = 0
        for attempt in range(self.teacher.max_retries + 1):
            ep = await self.pool.acquire()
            attempts += 1
            st.attempts += 1
            st.in_flight += 1
            outcome, rest = "failed", None
            try:
                record, problem, delay, retryable = await self._attempt(job, ep)
                if record is not None:
                    outcome = "ok"
                elif problem.startswith("http_429"):
                    outcome, rest = "other", delay if delay is not None else self._backoff(0)
                elif not retryable:
                    outcome = "other"
            finally:
                st.in_flight -= 1
                self.pool.release(ep, outcome, rest)
            if record is not None:
                self._keep(job, record, attempts)
                return
            if not retryable or attempt == self.teacher.max_retries:
                break
            st.retries[_reason(problem)] += 1
            if rest is None:
                await asyncio.sleep(delay * random.uniform(1.0, 1.1) if delay is not None else self._backoff(attempt))
        st.failed += 1
        st.failures[_reason(problem)] += 1
        error = self.scrub(f"{problem} after {attempts} attempt{'s' if attempts > 1 else ''}")
        self.errors[job.key] = error
        self._error_log.append(
            {"key": job.key, "id": job.qid, "sample_idx": job.sample_idx, "error": error, "time": int(time.time())}
        )
        self._streak += 1
        if self._streak >= self._stop_after:
            raise Fatal(f"the last {self._streak} requests all failed (last: {error})")

    async def run(self, jobs: list[Job]) -> None:
        """Fetch every job with `concurrency` workers; stop everything on a fatal error."""
        it = iter(jobs)

        async def worker() -> None:
            for job in it:
                await self.fetch(job)

        await self.pool.list_models()
        workers = [asyncio.ensure_future(worker()) for _ in range(min(self.teacher.concurrency, len(jobs)))]
        try:
            done, _ = await asyncio.wait(workers, return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                if task.exception() is not None:
                    raise task.exception()
        finally:
            for task in workers:
                task.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
            self.stats.endpoints = self.pool.summary()
            await self.pool.close()

    def write_error_log(self, folder: Path) -> None:
        """Append this run's final failures to `<cache>/errors.jsonl` (a log; never read back as responses)."""
        if self._error_log:
            with (folder / ERRORS_FILE).open("ab") as f:
                f.write(b"".join(orjson.dumps(e) + b"\n" for e in self._error_log))
            self._error_log = []


@functools.cache
def _transport_errors() -> tuple[type[BaseException], ...]:
    """The HTTP library's transport errors (httpx, or the httpx2 that newer `openai` uses): a stream broken
    mid-body raises them unwrapped."""
    found = []
    for name in ("httpx2", "httpx"):
        with contextlib.suppress(ImportError, AttributeError):
            found.append(importlib.import_module(name).TransportError)
    return tuple(found)


def _reason(problem: str) -> str:
    """The kind of a problem for the counters: `http_500`, `timeout`, `connection_error`, ..."""
    return re.split(r"[:(]", problem, maxsplit=1)[0].strip()


def api_key(teacher: TeacherSettings) -> str | None:
    if not teacher.api_key_env:
        return None
    value = os.environ.get(teacher.api_key_env)
    if not value:
        raise Medr1Error(
            f"environment variable {teacher.api_key_env} is not set (the teacher's API key is read from it)"
        )
    return value
