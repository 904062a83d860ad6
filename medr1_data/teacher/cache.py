"""The teacher's response cache: an append-only JSON-lines file of successful responses, keyed by request key.

`<cache>/responses.jsonl` holds one record per line (`cache_record`). `CacheWriter` is its one writer: a record is
written with one `os.write` on an O_APPEND descriptor as soon as its response arrives and fsynced soon after (group
commit), so a process killed even by `kill -9` loses only responses that had not fully arrived. A half-written last
line (a killed writer) is skipped by the readers and cut before the next append. Failures are never cached: they go
to `<cache>/errors.jsonl` (a log) and the next run asks for them again.

Reading: `ResponseCache.scan` gives the fields the traces need as Arrow tables, a block of lines at a time (C++ JSON
reader; a block with a record it cannot type is read line by line into the same columns), `read_columns` all of
them at once, `ResponseCache.load` whole records by key. When a key occurs twice, the last record wins.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.json as pa_json
from filelock import FileLock, Timeout

from medr1_data import Medr1Error
from medr1_data.teacher.prices import USAGE_TYPE, clean_usage
from medr1_data.teacher.settings import TeacherSettings

CACHE_FILE = "responses.jsonl"
ERRORS_FILE = "errors.jsonl"
PARSE_PIECE_BYTES = 1 << 20
SCAN_BLOCK_BYTES = 16 << 20  # the reader parses the file a block of lines at a time
MESSAGE_TYPE = pa.struct([("content", pa.string()), ("reasoning_content", pa.string()), ("reasoning", pa.string())])
CACHE_COLUMNS = pa.schema(
    [
        ("key", pa.string()),
        ("model", pa.string()),
        ("template", pa.string()),
        ("finish_reason", pa.string()),
        ("latency_s", pa.float64()),
        ("message", MESSAGE_TYPE),
        ("usage", USAGE_TYPE),
        ("served_model", pa.string()),  # the model name in the server's response
        ("listed_model", pa.string()),  # the one model the endpoint listed at GET /models, if it listed one
    ]
)


def loads_json(line: bytes) -> Any:
    try:
        return orjson.loads(line)
    except orjson.JSONDecodeError:
        return json.loads(line)  # orjson is stricter (lone surrogate escapes); json decides


def encode_record(record: dict[str, Any]) -> bytes:
    """One cache line: sorted keys, UTF-8, newline-terminated."""
    try:
        return orjson.dumps(record, option=orjson.OPT_SORT_KEYS) + b"\n"
    except TypeError:  # a string orjson will not encode (lone surrogates): json escapes it
        return json.dumps(record, sort_keys=True).encode("ascii") + b"\n"


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


def drop_partial_tail(path: Path) -> None:
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


class ResponseCache:
    """The cache folder of one teacher: `responses.jsonl` and the `errors.jsonl` log."""

    def __init__(self, folder: Path | str) -> None:
        self.folder = Path(folder)
        self.path = self.folder / CACHE_FILE

    def records(self) -> Iterator[dict[str, Any]]:
        """Every complete record in file order; a half-written last line is skipped, any other bad line raises."""
        if not self.path.exists():
            return
        with self.path.open("rb") as f:
            for n, line in enumerate(f, start=1):
                try:
                    rec = loads_json(line)
                except (json.JSONDecodeError, UnicodeDecodeError):
                    if line.endswith(b"\n"):
                        raise Medr1Error(f"{self.path}: line {n} is not a cache record") from None
                    continue
                if not isinstance(rec, dict) or "key" not in rec:
                    raise Medr1Error(f"{self.path}: line {n} is not a cache record")
                yield rec

    def load(self) -> dict[str, dict[str, Any]]:
        """Every complete record by key (the last one of a key wins)."""
        return {rec["key"]: rec for rec in self.records()}

    def append(self, records: Iterable[dict[str, Any]]) -> None:
        """Append records durably (written, then fsynced once) so that a paid response survives a crash."""
        writer = CacheWriter(self)
        try:
            for rec in records:
                writer.put(rec)
        finally:
            writer.close()

    def scan(self, start: int = 0, schema: pa.Schema = CACHE_COLUMNS) -> tuple[int, Iterator[pa.Table]]:
        """(end, blocks): the `schema` fields of the complete records from offset `start` to `end`, in file order,
        a block of about `SCAN_BLOCK_BYTES` at a time (memory holds a block, not the file)."""
        end = complete_end(self.path)
        if end <= start:
            return start, iter(())
        return end, scan_blocks(self.path, start, end, schema)

    def read_columns(self, schema: pa.Schema = CACHE_COLUMNS) -> pa.Table:
        """The `schema` fields of every complete record (by default all that the traces need), in file order."""
        tables = list(self.scan(0, schema)[1])
        return pa.concat_tables(tables) if tables else schema.empty_table()


def lock_cache(cache: ResponseCache) -> FileLock:
    """An exclusive lock on the cache folder (released with `.release()`): two runs never ask for the same keys."""
    cache.folder.mkdir(parents=True, exist_ok=True)
    lock = FileLock(cache.folder / ".lock", timeout=0, thread_local=False, is_singleton=False)
    try:
        lock.acquire()
    except Timeout:
        raise Medr1Error(f"{cache.folder}: another distill run is using this cache") from None
    return lock


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _columns_of(rec: dict[str, Any]) -> dict[str, Any]:
    """A record's `CACHE_COLUMNS` fields, each of its type or None."""
    msg = rec.get("message") if isinstance(rec.get("message"), dict) else {}
    latency = rec.get("latency_s")
    return {
        "key": str(rec["key"]),
        "model": _text(rec.get("model")),
        "template": _text(rec.get("template")),
        "finish_reason": _text(rec.get("finish_reason")),
        "latency_s": float(latency) if isinstance(latency, int | float) and not isinstance(latency, bool) else None,
        "message": {k: _text(msg.get(k)) for k in ("content", "reasoning_content", "reasoning")},
        "usage": clean_usage(rec.get("usage")),
        "served_model": _text(rec.get("served_model")),
        "listed_model": _text(rec.get("listed_model")),
    }


def read_fast(block: bytes, schema: pa.Schema = CACHE_COLUMNS) -> pa.Table | None:
    """The `schema` fields of a block of complete cache lines, in C++ (no Python object per record); None when a
    record does not fit the schema's types (the caller then reads the block record by record)."""
    parse = pa_json.ParseOptions(explicit_schema=schema, unexpected_field_behavior="ignore")
    # 1 MiB pieces parse on every core (2x faster on 2); a record longer than a piece fails there: one piece then.
    for size in dict.fromkeys((min(PARSE_PIECE_BYTES, len(block) + 1), len(block) + 1)):
        try:
            return pa_json.read_json(pa.BufferReader(block), pa_json.ReadOptions(block_size=size), parse)
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
            continue
    return None


def _read_slow(block: bytes, path: Path, offset: int, schema: pa.Schema) -> pa.Table:
    """`read_fast` record by record (for records the C++ reader cannot type); a bad line raises, naming its line."""
    rows = []
    for n, line in enumerate(block.splitlines()):
        if not line.strip():
            continue
        try:
            rec = loads_json(line)
        except (json.JSONDecodeError, UnicodeDecodeError):
            rec = None
        if not isinstance(rec, dict) or "key" not in rec:
            raise Medr1Error(f"{path}: line {_lines_before(path, offset) + n + 1} is not a cache record")
        rows.append({k: v for k, v in _columns_of(rec).items() if k in schema.names})
    return pa.Table.from_pylist(rows, schema=schema)


def _lines_before(path: Path, offset: int) -> int:
    """How many lines of the file end before byte `offset` (for an error message only: it reads that far)."""
    with path.open("rb") as f:
        return sum(f.read(min(1 << 20, offset - pos)).count(b"\n") for pos in range(0, offset, 1 << 20))


def line_starts(path: Path, start: int, end: int, pieces: int) -> list[int]:
    """About `pieces` + 1 offsets from `start` to `end` (both line starts), each one the start of a line."""
    cuts = [start]
    with path.open("rb") as f:
        for k in range(1, pieces):
            f.seek(max(cuts[-1], start + (end - start) * k // pieces))
            f.readline()  # to the start of the next line
            pos = f.tell()
            if cuts[-1] < pos < end:
                cuts.append(pos)
    return [*cuts, end] if end > start else [start]


def complete_end(path: Path) -> int:
    """The offset just after the last complete line of the file (a half-written last line is not counted)."""
    if not path.exists():
        return 0
    with path.open("rb") as f:
        size = f.seek(0, os.SEEK_END)
        block = 1 << 16
        while size:
            start = max(0, size - block)
            f.seek(start)
            cut = f.read(size - start).rfind(b"\n")
            if cut >= 0:
                return start + cut + 1
            if start == 0:
                return 0
            size, block = start, block * 2
    return 0


def scan_blocks(path: Path, start: int, end: int, schema: pa.Schema = CACHE_COLUMNS) -> Iterator[pa.Table]:
    """The `schema` fields of the records between two line starts of the file, a block of lines at a time."""
    with path.open("rb") as f:
        f.seek(start)
        pos, carry = start, b""
        while pos < end:
            data = f.read(min(SCAN_BLOCK_BYTES, end - pos))
            if not data:
                break
            block_start = pos - len(carry)
            pos += len(data)
            block = carry + data
            cut = block.rfind(b"\n") + 1
            block, carry = block[:cut], block[cut:]
            if not block:
                continue
            table = read_fast(block, schema)
            yield table if table is not None else _read_slow(block, path, block_start, schema)


class CacheWriter:
    """The one writer of the cache file: each record is appended the moment its response arrives.

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
            drop_partial_tail(cache.path)
        self._fd = os.open(cache.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self._dirty = 0  # records written since the last fsync
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Future | None = None
        self._closing = False
        self.batches = 0  # fsyncs
        self.records = 0

    def start_group_commit(self) -> None:
        """fsync in a worker thread from now on (call inside the event loop that calls `put`)."""
        self._wake = asyncio.Event()
        self._task = asyncio.ensure_future(self._run())

    def put(self, record: dict[str, Any]) -> None:
        """Write one record's line; it is durable after the next fsync (`close`, or the group commit)."""
        view = memoryview(encode_record(record))
        while view:
            view = view[os.write(self._fd, view) :]
        self._dirty += 1
        self.records += 1
        if self._wake is not None:
            self._wake.set()

    def _fsync(self) -> None:
        os.fsync(self._fd)
        self.batches += 1

    def sync(self) -> None:
        """fsync now what is not yet durable (for writers without the group commit's event loop)."""
        if self._dirty:
            self._dirty = 0
            self._fsync()

    async def _run(self) -> None:
        assert self._wake is not None
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

    def close(self) -> None:
        """fsync what is not yet durable and close the file."""
        if self._dirty:
            self._dirty = 0
            self._fsync()
        os.close(self._fd)

    async def aclose(self) -> None:
        """Stop the group commit, then `close`."""
        self._closing = True
        if self._wake is None or self._task is None:
            return self.close()
        self._wake.set()
        try:
            await asyncio.shield(self._task)
        finally:
            if not self._task.done():  # cancelled while an fsync was in the thread: let it finish first
                await asyncio.wait([self._task], timeout=30)
            self.close()
