"""Worker processes for the part-by-part stages: each part is read, mapped and written by one process, so that a
build uses the cores it is given; `thread_map` does the same in threads for work that releases the GIL (polars).

A part's file depends on its rows alone, never on which worker wrote it or how many there are, and the parts are
recorded in order; the release is the same with one worker or eight (a test builds with both and compares bytes).
Workers are spawned (not forked: Arrow and polars run thread pools) on first use and kept for the build; with one
worker, or a table of one part, everything runs in this process.
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any, TypeVar

import pyarrow as pa

from medr1_data import Medr1Error
from medr1_data.parts import Parts, layout, write_part
from medr1_data.progress import PeakRSS, release_memory

# A part's job: its input columns -> (its output table, what the stage adds up over the parts, or None).
PartFn = Callable[[pa.Table], tuple[pa.Table, Any]]
T = TypeVar("T")
R = TypeVar("R")


def available_cores() -> int:
    """The CPUs this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


@dataclass(frozen=True)
class PartJob:
    """Part `i` of `parts` (its `read` columns) mapped by `fn`; the output's stored columns written to `path`."""

    parts: Parts
    i: int
    read: list[str]
    fn: PartFn
    own: list[str]
    path: Path


@dataclass(frozen=True)
class PartResult:
    """A written part: its file record, the output's column names and what the stage adds up over the parts."""

    entry: dict[str, Any]
    names: list[str]
    extra: Any


def run_job(job: PartJob) -> PartResult:
    """Read, map and write one part."""
    out, extra = job.fn(job.parts.part(job.i, job.read))
    _, stored = layout(job.parts, job.own, out.column_names)
    entry = write_part(out.select(stored), job.path)
    return PartResult(entry, out.column_names, extra)


def _exit_with_parent(parent: int) -> None:
    """In a worker: exit as soon as the build process is gone (killed with SIGKILL, it cannot stop its workers)."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def _measured(fn: Callable[[T], R], item: T) -> tuple[R, int, float]:
    """`fn(item)` in a worker: its result, the worker's pid and its peak RSS (MB) during the call."""
    peak = PeakRSS()
    peak.start()
    result = fn(item)
    release_memory()
    return result, os.getpid(), peak.stop()


def thread_map(fn: Callable[[T], R], items: Iterable[T], threads: int | None = None) -> Iterator[R]:
    """`fn` of each item in `threads` threads (default: the available cores), in order, `threads` items in flight.

    For work that spends its time in polars or Arrow, which release the GIL: a polars query on one batch runs
    most of its kernels on one core, two batches at once use two.
    """
    threads = threads or available_cores()
    if threads == 1:
        yield from map(fn, items)
        return
    with ThreadPoolExecutor(threads) as pool:
        inflight: deque[Future[R]] = deque()
        try:
            for item in items:
                if len(inflight) >= threads:
                    yield inflight.popleft().result()
                inflight.append(pool.submit(fn, item))
            while inflight:
                yield inflight.popleft().result()
        finally:
            for future in inflight:
                future.cancel()


_LOADED: dict[Callable[[Path], Any], tuple[tuple[str, int], Any]] = {}


def load_once(path: Path, load: Callable[[Path], T]) -> T:
    """`load(path)`, once per process and version of the file: what a worker is sent by path (a benchmark index,
    a key table) is read once for all its jobs; one value is kept per `load`."""
    sig = (str(path), path.stat().st_mtime_ns)
    held = _LOADED.get(load)
    if held is None or held[0] != sig:
        _LOADED.pop(load, None)  # the old value goes before the new one is read
        held = _LOADED[load] = (sig, load(path))
    return held[1]


class Pool:
    """Up to `workers` processes that run jobs, results in order, at most two jobs a worker in flight."""

    def __init__(self, workers: int = 1) -> None:
        if workers < 1:
            raise Medr1Error(f"--workers {workers}: expected a whole number >= 1")
        self.workers = workers
        self.executor: ProcessPoolExecutor | None = None
        self.peaks: dict[int, float] = {}  # worker pid -> its peak RSS (MB) since `take_peaks`

    def map(self, fn: Callable[[T], R], items: Iterable[T], count: int) -> Iterator[R]:
        """`fn` of each item, in order (`count`: how many items; one item runs here, not in a worker). `fn` and the
        items must pickle (module-level functions, `functools.partial` of them, plain data)."""
        if self.workers == 1 or count < 2:
            for item in items:
                yield fn(item)
                release_memory()
            return
        if self.executor is None:
            self.executor = ProcessPoolExecutor(
                min(self.workers, count),
                mp_context=get_context("spawn"),
                initializer=_exit_with_parent,
                initargs=(os.getpid(),),
            )
        inflight: deque[Future[tuple[R, int, float]]] = deque()
        try:
            for item in items:
                if len(inflight) >= 2 * self.workers:
                    yield self._result(inflight.popleft())
                inflight.append(self.executor.submit(_measured, fn, item))
            while inflight:
                yield self._result(inflight.popleft())
        finally:
            for future in inflight:
                future.cancel()

    def _result(self, future: Future[tuple[R, int, float]]) -> R:
        try:
            result, pid, peak_mb = future.result()
        except BrokenProcessPool as e:
            self.close()
            raise Medr1Error(f"a worker process died ({e}); rerun with --workers 1, or with more memory") from None
        self.peaks[pid] = max(self.peaks.get(pid, 0.0), peak_mb)
        return result

    def take_peaks(self) -> float:
        """The sum of the workers' peak RSS (MB) since the last call (an upper bound of what they held at once)."""
        total = sum(self.peaks.values())
        self.peaks.clear()
        return total

    def close(self) -> None:
        """Stop the workers."""
        if self.executor is not None:
            self.executor.shutdown(wait=True, cancel_futures=True)
            self.executor = None
