"""The HTTP client over an OpenAI-compatible endpoint: retries, timeouts, a cache write per success, counters.

The client is the `openai` package's `AsyncOpenAI` with its own retries off (`max_retries=0`): this module retries
429s after `Retry-After` (and holds every worker back until then), 5xx, connection errors, timeouts, empty
responses and unparsable bodies with jittered exponential backoff, and stops the run on errors that every request
would hit (401, 402, 403, 404) or after a long streak of failures. The API key is read from the environment variable
named by `api_key_env` and is never printed, logged or written.
"""

from __future__ import annotations

import asyncio
import email.utils
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
from medr1_data.teacher.plan import Job
from medr1_data.teacher.prices import Price, cost_usd
from medr1_data.teacher.settings import TeacherSettings
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


def _call_timeout(seconds: float) -> Any:
    if hasattr(asyncio, "timeout"):  # Python 3.11+
        return asyncio.timeout(seconds)
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


class TeacherClient:
    """The async client over one OpenAI-compatible endpoint: retries, timeouts, cache writes, counters."""

    def __init__(self, teacher: TeacherSettings, stats: RunStats, writer: CacheWriter, price: Price) -> None:
        import openai

        self.openai = openai
        self.teacher, self.stats, self.writer, self.price = teacher, stats, writer, price
        self._secret = api_key(teacher)
        self._pause_until = 0.0
        self._streak = 0
        self._stop_after = max(20, 2 * teacher.concurrency)
        self.fetched: set[str] = set()  # keys whose response is in the cache file now
        self.errors: dict[str, str] = {}
        self._error_log: list[dict[str, Any]] = []
        # The whole request is bounded by asyncio (request_timeout); the HTTP client's own limit is a backstop, with
        # a short connect timeout so that an unreachable host fails fast and is retried.
        timeout: Any = teacher.request_timeout + 5
        try:  # keep as many idle connections as there are workers (the default keeps 100)
            timeout = type(openai.DEFAULT_TIMEOUT)(timeout, connect=min(30.0, timeout))
            limits = type(openai.DEFAULT_CONNECTION_LIMITS)(
                max_connections=teacher.concurrency + 8, max_keepalive_connections=teacher.concurrency + 8
            )
            http_client = openai.DefaultAsyncHttpxClient(limits=limits, timeout=timeout)
        except (AttributeError, TypeError):
            http_client = None
        self.client = openai.AsyncOpenAI(
            base_url=teacher.url(),
            api_key=self._secret or "EMPTY",
            max_retries=0,
            timeout=timeout,
            http_client=http_client,
        )
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

    async def _attempt(self, job: Job) -> tuple[dict[str, Any] | None, str, float | None, bool]:
        """One try: (record, problem, wait before the next try or None for the backoff, retryable)."""
        openai = self.openai
        t0 = time.monotonic()
        try:
            call = self.client.chat.completions.with_raw_response.create(
                messages=job.messages, extra_headers={KEY_HEADER: job.key}, **self._params
            )
            cm = _call_timeout(self.teacher.request_timeout)
            if cm is None:
                raw = await asyncio.wait_for(call, self.teacher.request_timeout)
            else:
                async with cm:
                    raw = await call
            body = raw.http_response.content
        except (asyncio.TimeoutError, openai.APITimeoutError):
            return None, "timeout", None, True
        except openai.APIStatusError as e:
            status = e.status_code
            if status in FATAL_STATUS:
                raise Fatal(f"HTTP {status} ({FATAL_STATUS[status]}): {self.scrub(str(e))}") from None
            wait = retry_after(e.response.headers) if status in (429, 503) else None
            wait = min(wait, RETRY_AFTER_MAX_S) if wait is not None else None
            if status == 429:
                until = time.monotonic() + (wait if wait is not None else self._backoff(0))
                self._pause_until = max(self._pause_until, until)
            retryable = status >= 500 or status in (408, 409, 429)
            return None, f"http_{status}" + ("" if retryable else f": {self.scrub(str(e))}"), wait, retryable
        except openai.APIConnectionError as e:
            cause = type(e.__cause__).__name__ if e.__cause__ else type(e).__name__
            return None, f"connection_error ({cause})", None, True
        latency = time.monotonic() - t0
        try:
            data = loads_json(body)
        except (json.JSONDecodeError, UnicodeDecodeError):
            return None, "invalid_body", None, True
        message, finish, problem = _message_of(data)
        if problem:
            return None, problem, None, True
        usage = data.get("usage") if isinstance(data.get("usage"), dict) else {}
        record = cache_record(
            job.key,
            self.teacher,
            job.sample_idx,
            message,
            finish,
            usage,
            round(latency, 3),
            response_id=data.get("id"),
            served_model=data.get("model"),
            created=int(time.time()),
        )
        return record, "", None, False

    async def fetch(self, job: Job) -> None:
        """Ask until success, a non-retryable error or `max_retries` retries; cache a success at once."""
        st = self.stats
        problem = ""
        attempts = 0
        for attempt in range(self.teacher.max_retries + 1):
            wait = self._pause_until - time.monotonic()
            if wait > 0:  # a 429 told everyone to hold back
                await asyncio.sleep(wait + random.uniform(0, min(1.0, wait / 10)))
            attempts += 1
            st.attempts += 1
            st.in_flight += 1
            try:
                record, problem, delay, retryable = await self._attempt(job)
            finally:
                st.in_flight -= 1
            if record is not None:
                record["attempts"] = attempts
                self.writer.put(record)
                self.fetched.add(job.key)
                usage = record["usage"]
                st.fetched += 1
                st.prompt_tokens += usage.get("prompt_tokens") or 0
                st.completion_tokens += usage.get("completion_tokens") or 0
                st.cost_usd += cost_usd(usage, self.price)
                self._streak = 0
                return
            if not retryable or attempt == self.teacher.max_retries:
                break
            st.retries[_reason(problem)] += 1
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
            await self.client.close()

    def write_error_log(self, folder: Path) -> None:
        """Append this run's final failures to `<cache>/errors.jsonl` (a log; never read back as responses)."""
        if self._error_log:
            with (folder / ERRORS_FILE).open("ab") as f:
                f.write(b"".join(orjson.dumps(e) + b"\n" for e in self._error_log))
            self._error_log = []


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
