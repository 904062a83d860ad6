"""Teacher distillation: request keys, the append-only response cache, reasoning parsing, the async client and
the distill stage.

One request per (question, sample index). Its key is a SHA-256 over the model, the prompt template, the messages,
the sampling parameters and the sample index (`request_key`). A successful response is appended to
`<cache>/responses.jsonl` as soon as it arrives (flushed and fsynced in small batches, group commit), so a run that
dies, even by `kill -9`, loses only responses that had not fully arrived, and the next run requests only the keys
the cache lacks. Failures are never written to the cache: they go to `<cache>/errors.jsonl` (a log)
and into the output's `error` column, and the next run asks for them again.

The client is the `openai` package's `AsyncOpenAI` with its own retries off (`max_retries=0`): this module retries
429s after `Retry-After` (and holds every worker back until then), 5xx, connection errors, timeouts, empty
responses and unparsable bodies with jittered exponential backoff, and stops the run on errors that every request
would hit (401, 402, 403, 404) or after a long streak of failures. The API key is read from the environment variable
named by `api_key_env` and is never printed, logged or written.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import functools
import hashlib
import json
import json.encoder
import math
import os
import random
import re
import signal
import sys
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc

from medr1_data import Medr1Error, canonical_sha256
from medr1_data.prices import Price, cost_usd, price_for
from medr1_data.progress import duration, human
from medr1_data.prompts import get_template
from medr1_data.schema import TRACE_FIELDS, TRACE_SCHEMA, conform

CACHE_FILE = "responses.jsonl"
ERRORS_FILE = "errors.jsonl"
KEY_HEADER = "X-MedR1-Key"  # the request key, sent with every request (servers ignore it; logs can match it)
THINK_RE = re.compile(r"<think>(.*?)</think>", re.DOTALL)
ENDPOINTS = ("deepseek", "vllm", "sglang", "openai", "recorded")
DEFAULT_BASE_URLS = {"deepseek": "https://api.deepseek.com", "openai": "https://api.openai.com/v1"}
# Mean completion length of the 862 real DeepSeek-R1 completions on medical MCQs in ../shared/data/traces
# (thinking included; median 1017, p95 4573): the estimate's guess before the cache has responses of the model.
R1_MEAN_COMPLETION_TOKENS = 1600
BYTES_PER_TOKEN = 4.0  # prompt-size guess for the estimate (R1's tokenizer gives about 4.4 on English text)
FATAL_STATUS = {401: "authentication failed", 402: "insufficient balance", 403: "forbidden", 404: "not found"}
RETRY_AFTER_MAX_S = 900.0  # a longer Retry-After is shortened to this
RETRY_FINISH = {"insufficient_system_resource"}  # DeepSeek: generation interrupted by server load


@dataclass
class TeacherSettings:
    """The recipe's `teacher` section: model, endpoint, sampling, client limits, cache and prices.

    Prices are USD per 1M tokens; None takes the price table's value (`medr1_data/prices.py`). `extra` holds
    extra request-body parameters (e.g. vLLM's `top_k`); when set they are sent and enter the request key.
    """

    model: str = "deepseek-reasoner"
    endpoint: str = "deepseek"  # deepseek | vllm | sglang | openai (any OpenAI-compatible server) | recorded
    base_url: str | None = None
    api_key_env: str | None = "DEEPSEEK_API_KEY"
    template: str = "medr1-mcq-v1"
    samples: int = 1
    temperature: float = 0.6
    top_p: float = 0.95
    max_tokens: int = 32768
    cache: str = "cache/teacher"
    offline: bool = False
    concurrency: int = 16
    request_timeout: float = 1800.0
    max_retries: int = 6
    backoff_s: float = 1.0
    backoff_max_s: float = 120.0
    price_input_cache_hit_per_m: float | None = None
    price_input_per_m: float | None = None
    price_output_per_m: float | None = None
    expected_completion_tokens: int | None = None
    label: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def sampling(self) -> dict[str, Any]:
        """The sampling parameters that enter the request key."""
        out = {"temperature": self.temperature, "top_p": self.top_p, "max_tokens": self.max_tokens}
        if self.extra:
            out["extra"] = dict(self.extra)
        return out

    def public(self) -> dict[str, Any]:
        """Settings safe to print in cards and reports (names of environment variables, never their values)."""
        return asdict(self)

    def price(self) -> Price:
        """The price table's entry for this endpoint and model, with the recipe's overrides."""
        return price_for(
            self.endpoint,
            self.model,
            self.price_input_cache_hit_per_m,
            self.price_input_per_m,
            self.price_output_per_m,
        )

    def url(self) -> str:
        """The endpoint's base URL (DeepSeek's and OpenAI's have defaults)."""
        url = self.base_url or DEFAULT_BASE_URLS.get(self.endpoint)
        if not url:
            raise Medr1Error(
                f"teacher endpoint '{self.endpoint}' needs a base_url (e.g. http://localhost:8000/v1 for vLLM)"
            )
        return url

    def check(self) -> None:
        """Raise Medr1Error on settings that cannot work."""
        if self.endpoint not in ENDPOINTS:
            raise Medr1Error(f"teacher endpoint '{self.endpoint}': expected one of {', '.join(ENDPOINTS)}")
        for name in ("samples", "concurrency", "max_tokens"):
            if int(getattr(self, name)) < 1:
                raise Medr1Error(f"teacher {name} must be at least 1, got {getattr(self, name)}")
        if self.max_retries < 0 or self.request_timeout <= 0:
            raise Medr1Error("teacher max_retries must be >= 0 and request_timeout > 0")
        get_template(self.template)


def request_key(model: str, template: str, messages: list[dict], sampling: dict[str, Any], sample_idx: int) -> str:
    """SHA-256 over everything that determines a teacher response; equal keys are never paid for twice."""
    payload = {
        "model": model,
        "template": template,
        "messages": messages,
        "sampling": sampling,
        "sample_idx": sample_idx,
    }
    return canonical_sha256(payload)


def split_reasoning(message: dict[str, Any]) -> tuple[str | None, str]:
    """(reasoning, response) from a chat message: `reasoning_content`, `reasoning`, or inline `<think>` in content."""
    content = message.get("content") or ""
    reasoning = message.get("reasoning_content") or message.get("reasoning")
    if reasoning:
        return reasoning.strip(), content.strip()
    m = THINK_RE.search(content)
    if m:
        return m.group(1).strip(), (content[: m.start()] + content[m.end() :]).strip()
    if "</think>" in content:  # R1 chat templates pre-fill the opening <think>; only the close comes back
        head, _, tail = content.partition("</think>")
        return head.replace("<think>", "", 1).strip(), tail.strip()
    if content.lstrip().startswith("<think>"):  # cut off while thinking: all reasoning, no response
        return content.lstrip()[len("<think>") :].strip(), ""
    return None, content.strip()


# ------------------------------------------------------------------------------------------------ the cache


def _loads(line: bytes) -> Any:
    try:
        return orjson.loads(line)
    except orjson.JSONDecodeError:
        return json.loads(line)  # orjson is stricter (lone surrogate escapes); json decides


class ResponseCache:
    """Append-only JSON-lines cache of successful teacher responses, keyed by `request_key`."""

    def __init__(self, folder: Path | str) -> None:
        self.folder = Path(folder)
        self.path = self.folder / CACHE_FILE

    def load(self) -> dict[str, dict[str, Any]]:
        """Every complete record by key; a half-written last line (a killed writer) is skipped."""
        if not self.path.exists():
            return {}
        records: dict[str, dict[str, Any]] = {}
        with self.path.open("rb") as f:
            for n, line in enumerate(f, start=1):
                try:
                    rec = _loads(line)
                except (json.JSONDecodeError, UnicodeDecodeError):
                    if line.endswith(b"\n"):
                        raise Medr1Error(f"{self.path}: line {n} is not a cache record") from None
                    continue
                if not isinstance(rec, dict) or "key" not in rec:
                    raise Medr1Error(f"{self.path}: line {n} is not a cache record")
                records[rec["key"]] = rec
        return records

    def append(self, records: Iterable[dict[str, Any]]) -> None:
        """Append records durably (flush and fsync) so that a paid response survives a crash."""
        self.folder.mkdir(parents=True, exist_ok=True)
        if self.path.exists():
            _drop_partial_tail(self.path)
        with self.path.open("ab") as f:
            for rec in records:
                f.write(json.dumps(rec, ensure_ascii=False, sort_keys=True).encode("utf-8") + b"\n")
            f.flush()
            os.fsync(f.fileno())


def _drop_partial_tail(path: Path) -> None:
    """Cut a half-written last line (a writer killed mid-record) so that appended records start on a fresh line."""
    with path.open("r+b") as f:
        size = f.seek(0, os.SEEK_END)
        if size == 0:
            return
        f.seek(size - 1)
        if f.read(1) == b"\n":
            return
        block = min(size, 1 << 20)
        while True:
            f.seek(size - block)
            cut = f.read(block).rfind(b"\n")
            if cut >= 0:
                f.truncate(size - block + cut + 1)
                return
            if block == size:
                f.truncate(0)
                return
            block = min(size, block * 2)


def cache_record(
    key: str,
    teacher: TeacherSettings,
    sample_idx: int,
    message: dict[str, Any],
    finish_reason: str,
    usage: dict[str, int],
    latency_s: float | None,
    **extra: Any,
) -> dict[str, Any]:
    """The cache line for one successful response (`extra`: more fields, e.g. the server's response id)."""
    return {
        "key": key,
        "model": teacher.model,
        "template": teacher.template,
        "sample_idx": sample_idx,
        "message": message,
        "finish_reason": finish_reason,
        "usage": usage,
        "latency_s": latency_s,
        **extra,
    }


class _CacheWriter:
    """Appends each record to the cache file the moment its response arrives; fsyncs in the background.

    The write (one `os.write` on an O_APPEND descriptor, microseconds) happens on the event loop, so a record is in
    the kernel before the next response is handled and survives the process being killed, even by `kill -9`. The
    fsync, which makes it survive a power loss or an OS crash too, runs in a worker thread as group commit: every
    record written while one fsync runs (or in the 50 ms after it) is covered by the next, so the loop never waits
    on the disk and a busy run fsyncs at most 20 times a second.
    """

    FSYNC_INTERVAL_S = 0.05

    def __init__(self, cache: ResponseCache) -> None:
        cache.folder.mkdir(parents=True, exist_ok=True)
        if cache.path.exists():
            _drop_partial_tail(cache.path)
        self._fd = os.open(cache.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self._dirty = 0  # records written since the last fsync
        self._wake = asyncio.Event()
        self._closing = False
        self._task = asyncio.ensure_future(self._run())
        self.batches = 0  # fsyncs
        self.records = 0

    def put(self, record: dict[str, Any]) -> None:
        try:
            line = orjson.dumps(record, option=orjson.OPT_SORT_KEYS) + b"\n"
        except TypeError:  # a string orjson will not encode (lone surrogates): json escapes it
            line = json.dumps(record, sort_keys=True).encode("ascii") + b"\n"
        view = memoryview(line)
        while view:
            view = view[os.write(self._fd, view) :]
        self._dirty += 1
        self.records += 1
        self._wake.set()

    def _fsync(self) -> None:
        os.fsync(self._fd)
        self.batches += 1

    async def _run(self) -> None:
        while True:
            if self._dirty:
                self._dirty = 0
                await asyncio.to_thread(self._fsync)
                if not self._closing:
                    await asyncio.sleep(self.FSYNC_INTERVAL_S)  # records arriving meanwhile share the next fsync
            elif self._closing:
                return
            else:  # nothing can run between the checks above and this clear: no wake-up is lost
                self._wake.clear()
                await self._wake.wait()

    async def close(self) -> None:
        self._closing = True
        self._wake.set()
        try:
            await asyncio.shield(self._task)
        finally:
            if not self._task.done():  # cancelled while an fsync was in the thread: let it finish first
                await asyncio.wait([self._task], timeout=30)
            if self._dirty:
                self._dirty = 0
                self._fsync()
            os.close(self._fd)


# ------------------------------------------------------------------------------------------------ requests


@dataclass
class Plan:
    """Every request a table needs: (row, sample index, key) in row order, and each row's chat messages."""

    requests: list[tuple[int, int, str]]
    messages: list[list[dict[str, str]]]


def plan_requests(table: pa.Table, teacher: TeacherSettings) -> Plan:
    """The requests of every (question, sample); the keys hash the template's messages and the sampling."""
    missing = [c for c in ("id", "question", "options", "context") if c not in table.column_names]
    if missing:
        raise Medr1Error(f"questions table: missing column '{missing[0]}'")
    template = get_template(teacher.template)
    cols = table.select(["question", "options", "context"]).to_pydict()
    # `request_key`'s JSON is the same for every sample of a question up to the sample index: hash that prefix
    # once per question and finish one copy per sample (tests check the keys equal `request_key`'s).
    head = '{"messages":'
    mid = ',"model":' + _json(teacher.model) + ',"sample_idx":'
    tail = (',"sampling":' + _json(teacher.sampling()) + ',"template":' + _json(template.name) + "}").encode()
    memo: dict[str, str] = {}
    requests: list[tuple[int, int, str]] = []
    messages: list[list[dict[str, str]]] = []
    sha256 = hashlib.sha256
    for i, (q, opts, ctx) in enumerate(zip(cols["question"], cols["options"], cols["context"], strict=True)):
        msgs = template.messages(q, opts, ctx)
        messages.append(msgs)
        h = sha256((head + _messages_json(msgs, memo) + mid).encode())
        for s in range(teacher.samples):
            hs = h.copy()
            hs.update(b"%d%s" % (s, tail))
            requests.append((i, s, hs.hexdigest()))
    return Plan(requests, messages)


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


_encode_str = json.encoder.encode_basestring  # what json.dumps(ensure_ascii=False) uses for strings


def _messages_json(msgs: list[dict[str, Any]], memo: dict[str, str]) -> str:
    """`_json(msgs)` for chat messages, fast: plain {role, content} messages are encoded directly and the
    system message (the same for every question) once."""
    parts = []
    for m in msgs:
        role, content = m.get("role"), m.get("content")
        if len(m) != 2 or type(role) is not str or type(content) is not str:
            parts.append(_json(m))
        elif role == "system":
            j = memo.get(content)
            if j is None:
                j = memo[content] = _json(m)
            parts.append(j)
        else:
            parts.append('{"content":' + _encode_str(content) + ',"role":' + _encode_str(role) + "}")
    return "[" + ",".join(parts) + "]"


def requests_for(table: pa.Table, teacher: TeacherSettings) -> list[tuple[int, int, str]]:
    """(row index, sample index, request key) for every request the table needs."""
    return plan_requests(table, teacher).requests


@dataclass
class Job:
    """One request to make: its key, messages, sample index and the first question id that needs it."""

    key: str
    messages: list[dict[str, str]]
    sample_idx: int
    qid: str


class _Fatal(Exception):
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


class _Progress:
    """A periodic progress line on stderr: rewritten in place on a terminal, one line per interval otherwise."""

    def __init__(self, stats: RunStats, stream: IO[str] | None, interval: float | None) -> None:
        self.stats, self.stream = stats, stream
        self.tty = bool(stream and getattr(stream, "isatty", lambda: False)())
        self.interval = interval if interval is not None else (0.5 if self.tty else 10.0)
        self._task: asyncio.Future | None = None

    def start(self) -> None:
        if self.stream:
            self._task = asyncio.ensure_future(self._run())

    def _emit(self, final: bool = False) -> None:
        line = progress_line(self.stats)
        if self.tty:
            self.stream.write("\r\x1b[2K" + line + ("\n" if final else ""))
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            self._emit()

    def stop(self) -> None:
        if self._task:
            self._task.cancel()
            self._emit(final=True)


def _retry_after(headers: Any) -> float | None:
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

    def __init__(self, teacher: TeacherSettings, stats: RunStats, writer: _CacheWriter, price: Price) -> None:
        import openai

        self.openai = openai
        self.teacher, self.stats, self.writer, self.price = teacher, stats, writer, price
        self._secret = _api_key(teacher)
        self._pause_until = 0.0
        self._streak = 0
        self._stop_after = max(20, 2 * teacher.concurrency)
        self.records: dict[str, dict[str, Any]] = {}
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
                raise _Fatal(f"HTTP {status} ({FATAL_STATUS[status]}): {self.scrub(str(e))}") from None
            wait = _retry_after(e.response.headers) if status in (429, 503) else None
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
            data = _loads(body)
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
                self.records[job.key] = record
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
            raise _Fatal(f"the last {self._streak} requests all failed (last: {error})")

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


def _api_key(teacher: TeacherSettings) -> str | None:
    if not teacher.api_key_env:
        return None
    value = os.environ.get(teacher.api_key_env)
    if not value:
        raise Medr1Error(
            f"environment variable {teacher.api_key_env} is not set (the teacher's API key is read from it)"
        )
    return value


def _jobs(table: pa.Table, plan: Plan, have: dict[str, Any] | set[str]) -> list[Job]:
    """One job per distinct missing key, in table order."""
    ids = table.column("id").to_pylist()
    seen: set[str] = set()
    jobs = []
    for i, s, key in plan.requests:
        if key in have or key in seen:
            continue
        seen.add(key)
        jobs.append(Job(key, plan.messages[i], s, ids[i]))
    return jobs


async def _fetch_missing(
    jobs: list[Job], teacher: TeacherSettings, stats: RunStats, progress: _Progress
) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    cache = ResponseCache(teacher.cache)
    lock = _lock_cache(cache)
    with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):  # SIGTERM stops as Ctrl-C does
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, asyncio.current_task().cancel)
    try:
        writer = _CacheWriter(cache)
        client = None
        try:
            client = TeacherClient(teacher, stats, writer, teacher.price())
            progress.start()
            try:
                await client.run(jobs)
            except _Fatal as e:
                stats.stopped = str(e)
        finally:
            progress.stop()
            await writer.close()
            stats.cache_batches = writer.batches
            if client is not None:
                client.write_error_log(cache.folder)
        return client.records, client.errors
    finally:
        if lock is not None:
            lock.close()


def _lock_cache(cache: ResponseCache) -> IO[bytes] | None:
    """An exclusive lock on the cache folder, so that two runs never ask for the same keys at once."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock
        return None
    cache.folder.mkdir(parents=True, exist_ok=True)
    f = (cache.folder / ".lock").open("wb")
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.close()
        raise Medr1Error(f"{cache.folder}: another distill run is using this cache") from None
    return f


# ------------------------------------------------------------------------------------------------ the stage


@dataclass
class DistillResult:
    """The traces table (one row per (id, sample_idx); failed requests have `error`) and the run's counters."""

    table: pa.Table
    stats: RunStats
    missing: int
    first_missing: tuple[str, int] | None = None

    def summary(self) -> list[tuple[str, str]]:
        """(what, value) rows for the final summary."""
        st = self.stats
        rows = [
            ("rows (question x sample)", str(self.table.num_rows)),
            ("distinct requests", str(st.total)),
            ("served from the cache", str(st.cached_before)),
            ("fetched now", str(st.fetched)),
            ("still missing", str(self.missing)),
        ]
        rows += [(f"  failed: {k}", str(v)) for k, v in sorted(st.failures.items())]
        rows += [(f"  retried: {k}", str(v)) for k, v in sorted(st.retries.items())]
        if st.to_fetch:
            rate = st.fetched / st.seconds if st.seconds else 0.0
            rows += [
                ("prompt tokens (this run)", str(st.prompt_tokens)),
                ("completion tokens (this run)", str(st.completion_tokens)),
                ("cost this run (USD)", f"{st.cost_usd:.4f}"),
                ("wall time", f"{st.seconds:.1f}s ({rate:.1f} req/s)"),
            ]
        cost = self.table.column("cost_usd")
        rows.append(("cost of all rows (USD)", f"{(pa.compute.sum(cost).as_py() or 0.0):.4f}"))
        if st.stopped:
            rows.append(("stopped early", st.stopped))
        return rows


def run_distill(
    table: pa.Table,
    teacher: TeacherSettings,
    *,
    quiet: bool = False,
    progress_stream: IO[str] | None = None,
    progress_interval: float | None = None,
) -> DistillResult:
    """Fetch what the cache lacks (unless `offline`), then one row per (question, sample) with `error` where the
    request still failed. Progress goes to `progress_stream` (stderr by default) unless `quiet`."""
    teacher.check()
    plan = plan_requests(table, teacher)
    cache = ResponseCache(teacher.cache)
    columns = read_cache_columns(cache.path)
    cached = cache.load() if columns is None else {}
    have = cached if columns is None else set(columns.column("key").to_pylist())
    jobs = _jobs(table, plan, have)
    del have
    stats = RunStats(total=len({k for _, _, k in plan.requests}), to_fetch=len(jobs))
    stats.cached_before = stats.total - stats.to_fetch
    errors: dict[str, str] = {}
    if jobs and not teacher.offline:
        if teacher.endpoint == "recorded":
            raise Medr1Error("teacher endpoint 'recorded' only serves the cache: set offline: true")
        teacher.url(), _api_key(teacher)  # fail before anything is created or sent
        stream = None if quiet else (progress_stream or sys.stderr)
        progress = _Progress(stats, stream, progress_interval)
        try:
            records, errors = _run_coroutine(_fetch_missing(jobs, teacher, stats, progress))
        except asyncio.CancelledError:  # SIGTERM: what succeeded is in the cache
            raise KeyboardInterrupt from None
        finally:
            stats.seconds = time.monotonic() - stats.started
        cached.update(records)
        stopped = stats.stopped
        for job in jobs:
            if job.key not in cached and job.key not in records and job.key not in errors:
                errors[job.key] = f"not requested: the run stopped ({stopped})" if stopped else "not requested"
        if columns is not None:  # the new responses are in the file now
            del columns
            columns = read_cache_columns(cache.path)
            if columns is None:
                cached = cache.load()
    elif jobs:
        errors = {j.key: "not in the cache (offline)" for j in jobs}
    if columns is None:
        return _assemble(table, plan, cached, errors, teacher, stats)
    holder = [columns]
    del columns
    return _assemble_columns(table, plan, holder, errors, teacher, stats)


def _run_coroutine(coro: Any) -> Any:
    """asyncio.run, or asyncio.run in a helper thread when this thread already runs a loop (notebooks)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


def _assemble(
    table: pa.Table,
    plan: Plan,
    cached: dict[str, dict[str, Any]],
    errors: dict[str, str],
    teacher: TeacherSettings,
    stats: RunStats,
) -> DistillResult:
    price = teacher.price()
    cols: dict[str, list[Any]] = {f.name: [] for f in TRACE_FIELDS}
    take = []
    missing = 0
    first_missing = None
    ids = table.column("id")
    for i, s, k in plan.requests:
        rec = cached.get(k)
        if rec is None:
            missing += 1
            if first_missing is None:
                first_missing = (ids[i].as_py(), s)
            values: tuple[Any, ...] = (s, teacher.model, teacher.template, None, None, None, None, None, None, None)
            values += (errors.get(k, "missing"),)
        else:
            reasoning, response = split_reasoning(rec["message"])
            usage = rec.get("usage") or {}
            values = (
                s,
                rec["model"],
                rec["template"],
                reasoning,
                response,
                rec.get("finish_reason"),
                usage.get("prompt_tokens"),
                usage.get("completion_tokens"),
                cost_usd(usage, price),
                rec.get("latency_s"),
                None,
            )
        for f, value in zip(TRACE_FIELDS, values, strict=True):
            cols[f.name].append(value)
        take.append(i)
    out = table.take(pa.array(take, pa.int64()))
    for f in TRACE_FIELDS:
        if f.name in out.column_names:
            out = out.drop_columns([f.name])
        out = out.append_column(f, pa.array(cols[f.name], f.type))
    return DistillResult(conform(out, TRACE_SCHEMA), stats, missing, first_missing)


def distill(table: pa.Table, teacher: TeacherSettings, *, quiet: bool = False) -> pa.Table:
    """One row per (question, sample): the question's columns plus the teacher's trace.

    With `offline: true` every response must be in the cache. Otherwise the missing ones are requested from the
    teacher first; a run that still leaves some missing raises Medr1Error naming how many (rerun to retry them).
    """
    result = run_distill(table, teacher, quiet=quiet)
    if result.missing:
        first, sample = result.first_missing
        total = result.table.num_rows
        if teacher.offline:
            raise Medr1Error(
                f"{teacher.cache}: {result.missing} of {total} teacher responses are not in the cache "
                f"(first: {first} sample {sample}); this build runs offline from recorded responses"
            )
        stopped = f"; stopped early: {result.stats.stopped}" if result.stats.stopped else ""
        raise Medr1Error(
            f"{teacher.cache}: {result.missing} of {total} teacher responses are still missing after the run "
            f"(first: {first} sample {sample}: {_first_error(result.table)}){stopped}; rerun to request them again"
        )
    return result.table


def _first_error(table: pa.Table) -> str:
    errs = table.column("error").drop_null()
    return errs[0].as_py() if len(errs) else "?"


# ------------------------------------------------------------------------------------------------ columnar reading


@functools.cache
def _py_whitespace() -> list[str]:
    """The characters `str.strip()` removes (Python's str.isspace), so that the columnar path strips exactly like it."""
    return [chr(c) for c in range(0x110000) if chr(c).isspace()]


_CACHE_COLUMNS = pa.schema(
    [
        ("key", pa.string()),
        ("model", pa.string()),
        ("template", pa.string()),
        ("finish_reason", pa.string()),
        ("latency_s", pa.float64()),
        (
            "message",
            pa.struct([("content", pa.string()), ("reasoning_content", pa.string()), ("reasoning", pa.string())]),
        ),
        (
            "usage",
            pa.struct(
                [
                    ("prompt_tokens", pa.int64()),
                    ("completion_tokens", pa.int64()),
                    ("prompt_cache_hit_tokens", pa.int64()),
                    ("prompt_tokens_details", pa.struct([("cached_tokens", pa.int64())])),
                ]
            ),
        ),
    ]
)


def read_cache_columns(path: Path) -> pa.Table | None:
    """The fields of every complete cache record that the traces need, read columnar (C++, no Python objects per
    record); None when a record does not fit that reader (the caller then reads them one by one with
    `ResponseCache.load`, which names the bad line). A half-written last line is left out, as `load` does."""
    import mmap

    import pyarrow.json as pa_json

    if not path.exists() or path.stat().st_size == 0:
        return _CACHE_COLUMNS.empty_table()
    options = {
        "read_options": pa_json.ReadOptions(block_size=16 << 20),
        "parse_options": pa_json.ParseOptions(explicit_schema=_CACHE_COLUMNS, unexpected_field_behavior="ignore"),
    }
    errors = (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError)
    with path.open("rb") as f:
        f.seek(-1, os.SEEK_END)
        complete = f.read(1) == b"\n"
    if complete:  # streamed from the file in blocks: the file's pages are not mapped into this process
        try:
            return pa_json.read_json(path, **options)
        except errors:
            return None
    with path.open("rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        end = mm.rfind(b"\n") + 1
        if end == 0:
            return _CACHE_COLUMNS.empty_table()
        view = memoryview(mm)
        try:
            return pa_json.read_json(pa.BufferReader(pa.py_buffer(view[:end])), **options).combine_chunks()
        except errors:
            return None
        finally:
            view.release()


def _assemble_columns(
    table: pa.Table,
    plan: Plan,
    holder: list[pa.Table],
    errors: dict[str, str],
    teacher: TeacherSettings,
    stats: RunStats,
) -> DistillResult:
    """`_assemble` for a cache read by `read_cache_columns` (`holder`: a one-item list, emptied here so that the
    cache's memory goes as soon as the needed rows are taken): the same table, built with Arrow and polars."""
    import polars as pl

    cache = holder.pop()
    price = teacher.price()
    rows, samples, keys = zip(*plan.requests, strict=True) if plan.requests else ((), (), ())
    last = (  # equal keys: the last record wins, as in `ResponseCache.load`
        pl.from_arrow(cache.select(["key"])).with_row_index("j").group_by("key").agg(pl.col("j").max())
    )
    order = pl.DataFrame({"key": list(keys)}, schema={"key": pl.String}).join(
        last, on="key", how="left", maintain_order="left"
    )
    take = order["j"].to_arrow().cast(pa.int64())
    present = pc.is_valid(take)
    recs = cache.select(["model", "template", "finish_reason", "latency_s", "usage"]).take(take)
    usage = recs.column("usage")
    prompt_tokens = pc.struct_field(usage, "prompt_tokens")  # struct_field keeps a null usage's rows null
    completion_tokens = pc.struct_field(usage, "completion_tokens")
    prompt = pc.fill_null(prompt_tokens, 0)
    details = pc.struct_field(usage, "prompt_tokens_details")
    hit = pc.coalesce(pc.struct_field(usage, "prompt_cache_hit_tokens"), pc.struct_field(details, "cached_tokens"))
    hit = pc.min_element_wise(pc.fill_null(hit, 0), prompt)
    completion = pc.fill_null(completion_tokens, 0)
    cost = pc.divide(
        pc.add(
            pc.add(
                pc.multiply(pc.cast(hit, pa.float64()), price.input_cache_hit),
                pc.multiply(pc.cast(pc.subtract(prompt, hit), pa.float64()), price.input_cache_miss),
            ),
            pc.multiply(pc.cast(completion, pa.float64()), price.output),
        ),
        1e6,
    )
    missing = take.null_count
    first_missing = None
    if missing:
        first = pc.index(present, False).as_py()
        first_missing = (table.column("id")[rows[first]].as_py(), samples[first])
    error = pa.array([None if p else errors.get(k, "missing") for p, k in zip(present.to_pylist(), keys, strict=True)])
    columns: dict[str, pa.Array | pa.ChunkedArray] = {
        "sample_idx": pa.array(samples, pa.int32()),
        "teacher_model": pc.if_else(present, recs.column("model"), teacher.model),
        "prompt_template": pc.if_else(present, recs.column("template"), teacher.template),
        "finish_reason": recs.column("finish_reason"),
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "cost_usd": pc.if_else(present, cost, pa.scalar(None, pa.float64())),
        "latency_s": recs.column("latency_s"),
        "error": error,
    }
    del recs, usage
    columns["reasoning"], columns["response"] = _split_columns(cache, order["j"], pl.from_arrow(present))
    del cache
    out = table.take(pa.array(rows, pa.int64()))
    for f in TRACE_FIELDS:
        if f.name in out.column_names:
            out = out.drop_columns([f.name])
        out = out.append_column(f, columns.pop(f.name).cast(f.type))
    return DistillResult(conform(out, TRACE_SCHEMA), stats, missing, first_missing)


_SPLIT_BATCH_ROWS = 16384


def _split_columns(cache: pa.Table, take: Any, present: Any) -> tuple[pa.ChunkedArray, pa.ChunkedArray]:
    """`split_reasoning` for the cache rows `take` (a polars index Series, null: missing): columnar where the
    thinking is in its own field (the API's and vLLM's shapes), `split_reasoning` itself for the rest (thinking
    inline in the content, or none).

    polars reads the cache's strings in place (views); the text is copied once, into the output, a batch of rows at
    a time, so that the step holds the cache, the output and one batch, not several copies of every trace.
    """
    import polars as pl

    msg = pl.from_arrow(cache.select(["message"])).unnest("message")
    nonempty = [pl.when(pl.col(c) != "").then(pl.col(c)) for c in ("reasoning_content", "reasoning")]
    texts = (msg.select(pl.coalesce(nonempty))[:, 0], msg["content"].fill_null(""))
    own = texts[0].is_not_null().gather(take).fill_null(False) & present
    inline = (~own & present).arg_true()
    parsed = dict(
        zip(
            inline.to_list(),
            map(split_reasoning, msg["content"].gather(take.gather(inline)).to_frame("content").to_dicts()),
            strict=True,
        )
    )
    space = _py_whitespace()
    out: list[list[pa.Array]] = [[], []]
    for start in range(0, max(len(take), 1), _SPLIT_BATCH_ROWS):
        rows = take.slice(start, _SPLIT_BATCH_ROWS)
        keep = own.slice(start, _SPLIT_BATCH_ROWS)
        here = [i - start for i in parsed if start <= i < start + _SPLIT_BATCH_ROWS]
        for k, text in enumerate(texts):
            col = pl.select(pl.when(keep).then(text.gather(rows)))[:, 0]
            # only values that start or end with whitespace are stripped, in Python: exactly `str.strip`
            edge = (col.str.head(1).is_in(space) | col.str.tail(1).is_in(space)).fill_null(False).arg_true()
            if len(edge):
                col = col.scatter(edge, [v.strip() for v in col.gather(edge).to_list()])
            if here:
                col = col.scatter(here, [parsed[start + i][k] for i in here])
            out[k].append(col.to_arrow(compat_level=pl.CompatLevel.newest()).cast(pa.string()))
    return pa.chunked_array(out[0], pa.string()), pa.chunked_array(out[1], pa.string())


# ------------------------------------------------------------------------------------------------ the estimate


def estimate(table: pa.Table, teacher: TeacherSettings) -> list[tuple[str, str]]:
    """What the run would request and cost, before anything is spent: (what, value) rows.

    Prompt tokens: the messages' UTF-8 bytes / 4 (or the ratio observed on cached responses of this model).
    Completion tokens: the mean over cached responses of this model when there are 20 or more, else the recipe's
    `expected_completion_tokens`, else 1600 (the mean of 862 real DeepSeek-R1 completions on medical MCQs). Input
    is priced as cache misses (an upper bound: DeepSeek bills prefix-cache hits lower), output at the output price;
    the worst case prices every completion at `max_tokens`.
    """
    teacher.check()
    plan = plan_requests(table, teacher)
    cached = ResponseCache(teacher.cache).load()
    jobs = _jobs(table, plan, cached)
    price = teacher.price()

    def size(msgs: list[dict[str, str]]) -> int:
        return sum(len(m["content"].encode("utf-8")) for m in msgs)

    bytes_per_token, observed = BYTES_PER_TOKEN, []
    own = {k: r for k, r in cached.items() if r.get("model") == teacher.model and (r.get("usage") or {})}
    pairs = [(size(plan.messages[i]), own[k]["usage"]) for i, _, k in plan.requests if k in own]
    if len(pairs) >= 20:
        prompt_bytes = sum(b for b, u in pairs if u.get("prompt_tokens"))
        prompt_toks = sum(u["prompt_tokens"] for _, u in pairs if u.get("prompt_tokens"))
        if prompt_toks:
            bytes_per_token = prompt_bytes / prompt_toks
        observed = [u["completion_tokens"] for _, u in pairs if u.get("completion_tokens") is not None]
    if len(observed) >= 20:
        per_completion = sum(observed) / len(observed)
        basis = f"mean of {len(observed)} cached responses of {teacher.model}"
    elif teacher.expected_completion_tokens:
        per_completion, basis = float(teacher.expected_completion_tokens), "the recipe's expected_completion_tokens"
    else:
        per_completion, basis = float(R1_MEAN_COMPLETION_TOKENS), "mean of 862 real DeepSeek-R1 completions"
    per_completion = min(per_completion, teacher.max_tokens)
    prompt = sum(size(j.messages) / bytes_per_token + 4 * len(j.messages) for j in jobs)
    completion = per_completion * len(jobs)
    cost = (prompt * price.input_cache_miss + completion * price.output) / 1e6
    worst = (prompt * price.input_cache_miss + teacher.max_tokens * len(jobs) * price.output) / 1e6
    return [
        ("rows (question x sample)", str(len(plan.requests))),
        ("requests to make (not in the cache)", str(len(jobs))),
        ("served from the cache", str(len({k for _, _, k in plan.requests}) - len(jobs))),
        ("prompt tokens (estimated)", f"{prompt:,.0f} ({bytes_per_token:.2f} bytes/token)"),
        ("completion tokens (estimated)", f"{completion:,.0f} ({per_completion:,.0f} each: {basis})"),
        (
            "price USD per 1M (hit / miss / out)",
            f"{price.input_cache_hit:g} / {price.input_cache_miss:g} / {price.output:g}",
        ),
        ("price source", price.note),
        ("estimated cost (USD)", f"{cost:,.2f}"),
        (f"worst case, every completion at max_tokens={teacher.max_tokens} (USD)", f"{worst:,.2f}"),
    ]
