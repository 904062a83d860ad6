"""The build's progress display on stderr, and each stage's peak memory.

One line per stage: on a terminal it is rewritten in place twice a second while the stage runs (stage, rows, time,
the build's ETA) and then replaced by the stage's result; elsewhere (CI logs, files) only the result lines are
printed. The ETA scales the previous build's stage times (from `build_report.json`) by the number of rows.
"""

from __future__ import annotations

import math
import re
import resource
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def _status_kb(field: str) -> int | None:
    try:
        m = re.search(rf"^{field}:\s+(\d+) kB", _STATUS.read_text(), re.M)
    except OSError:
        return None
    return int(m.group(1)) if m else None


class PeakRSS:
    """The peak resident set size of this process between `start()` and `stop()`, in MB.

    On Linux the kernel's high-water mark (VmHWM) is reset to the current RSS at `start()` (`/proc/self/clear_refs`,
    value 5), so the number is the stage's own peak: everything resident at that moment (the interpreter, the
    libraries, the input table) plus what the stage allocated on top. Where the reset is not allowed, it is the
    process's peak so far (`ru_maxrss`), an upper bound.
    """

    def __init__(self) -> None:
        self.exact = False
        self.start_mb: float | None = None

    def start(self) -> None:
        """Reset the high-water mark where the kernel allows it; note the RSS at the start."""
        kb = _status_kb("VmRSS")
        self.start_mb = round(kb / 1024, 1) if kb is not None else None
        try:
            _CLEAR_REFS.write_text("5")
            self.exact = _status_kb("VmHWM") is not None
        except OSError:
            self.exact = False

    def stop(self) -> float:
        """The peak since `start()` in MB (1 MB = 2**20 bytes)."""
        kb = _status_kb("VmHWM") if self.exact else None
        if kb is None:
            kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return round(kb / 1024, 1)


def human(n: float) -> str:
    """12.3K, 4.5M: a count in three significant figures."""
    for unit in ("", "K", "M", "G"):
        if abs(n) < 1000:
            return f"{n:.0f}" if not unit else f"{n:.1f}{unit}"
        n /= 1000
    return f"{n:.1f}T"


def duration(s: float) -> str:
    """`45s`, `3m05s`, `1h02m`; `?` when unknown."""
    if not math.isfinite(s):
        return "?"
    s = round(s)
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


class LiveLine:
    """One status line on `stream`, redrawn every `interval` seconds by a background thread from `render()`.

    On a terminal the line is rewritten in place; elsewhere (CI logs, files) it is printed as a new line each time
    when `log_off_tty`, and not at all otherwise. `write` prints a final line above (or instead of) the live one.
    """

    def __init__(
        self,
        stream: IO[str],
        render: Callable[[], str | None],
        interval: float | None = None,
        log_off_tty: bool = False,
    ) -> None:
        self.stream, self.render, self.log_off_tty = stream, render, log_off_tty
        self.tty = bool(getattr(stream, "isatty", lambda: False)())
        self.interval = interval if interval is not None else (0.5 if self.tty else 10.0)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def write(self, line: str, final: bool = True) -> None:
        """A line: `final` ends it (a newline); a live line is redrawn in place on a terminal."""
        with self._lock:
            if self.tty:
                self.stream.write("\r\x1b[2K" + line + ("\n" if final else ""))
            elif final or self.log_off_tty:
                self.stream.write(line + "\n")
            self.stream.flush()

    def _tick(self) -> None:
        while not self._stop.wait(self.interval):
            line = self.render()
            if line is not None:
                self.write(line, final=False)

    def start(self) -> None:
        """Start redrawing (nothing is drawn off a terminal unless `log_off_tty`)."""
        if self._thread is not None or not (self.tty or self.log_off_tty):
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._tick, name="medr1-progress", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop redrawing."""
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None


class BuildProgress:
    """Stage-by-stage progress of one build on `stream` (stderr); silent when `quiet`."""

    def __init__(
        self,
        stages: list[str],
        *,
        quiet: bool = False,
        stream: IO[str] | None = None,
        previous: list[dict[str, Any]] | None = None,
        interval: float = 0.5,
    ) -> None:
        self.stages, self.quiet = stages, quiet
        self.stream = stream or sys.stderr
        self.previous = {s["stage"]: s for s in previous or [] if s.get("seconds") is not None}
        self.started = time.monotonic()
        self.scale: float | None = None
        self._stage: str | None = None
        self._rows: int | None = None
        self._done = 0
        self._t0 = 0.0
        self.line = LiveLine(self.stream, self._live, interval)

    def _eta(self, elapsed_in_stage: float = 0.0) -> float:
        """Seconds left: the previous build's time of the stages not done yet, scaled by rows (NaN if unknown)."""
        if self._stage is None or not self.previous:
            return math.nan
        left = 0.0
        for name in self.stages[self.stages.index(self._stage) :]:
            prev = self.previous.get(name)  # a cached entry carries the time of the run that computed it
            if prev is None:
                return math.nan
            left += prev["seconds"] * (self.scale or 1.0)
        return max(left - elapsed_in_stage, 0.0)

    def _label(self, stage: str) -> str:
        return f"[medr1] [{self.stages.index(stage) + 1}/{len(self.stages)}] {stage}"

    def _live(self) -> str | None:
        stage, rows = self._stage, self._rows
        if stage is None:
            return None
        t = time.monotonic() - self._t0
        rows_text = f"{human(rows)} rows in" if rows is not None else "reading sources"
        if self._done and rows:
            rows_text = f"{human(self._done)} of {human(rows)} rows"
        return (
            f"{self._label(stage)}: {rows_text}, {duration(t)} | build {duration(time.monotonic() - self.started)}"
            f" | ETA {duration(self._eta(t))}"
        )

    def start(self, stage: str, rows_in: int | None, *, live: bool = True) -> None:
        """A stage begins; `live=False` for a stage that shows its own progress (the teacher's requests)."""
        if rows_in is not None and self.scale is None:
            prev = self.previous.get(stage, {}).get("rows_in")
            self.scale = rows_in / prev if prev else None
        self._stage, self._rows, self._t0, self._done = stage, rows_in, time.monotonic(), 0
        if not self.quiet and live:
            self.line.start()

    def finish(self, entry: dict[str, Any], extra: str = "") -> None:
        """A stage ended (or was served from its checkpoint): its result line."""
        self.line.stop()
        if entry["stage"] == self.stages[0] and self.scale is None:
            prev = self.previous.get(entry["stage"], {}).get("rows_out")
            self.scale = entry["rows_out"] / prev if prev else None
        if self.quiet:
            return
        stage, seconds = entry["stage"], entry["seconds"]
        if entry.get("cached"):
            text = f"{entry['rows_out']:,} rows from the checkpoint"
        else:
            rate = (entry["rows_in"] or entry["rows_out"]) / seconds if seconds > 0 else math.inf
            text = (
                f"{entry['rows_in'] or 0:,} -> {entry['rows_out']:,} rows in {seconds:.1f}s "
                f"({human(rate)} rows/s), peak {entry['peak_rss_mb'] / 1024:.2f} GB"
            )
        dropped = ", ".join(f"{k} {v:,}" for k, v in sorted(entry.get("dropped", {}).items()))
        if dropped:
            text += f"; dropped: {dropped}"
        text += extra
        nxt = self.stages.index(stage) + 1
        if nxt < len(self.stages) and not entry.get("cached"):
            self._stage = self.stages[nxt]
            eta = self._eta()
            self._stage = stage
            if math.isfinite(eta):
                text += f" | ETA {duration(eta)}"
        self.line.write(f"{self._label(stage)}: {text}", final=True)

    def advance(self, rows: int) -> None:
        """`rows` more rows of the running stage are done (a stage that works a part at a time)."""
        self._done += rows

    def message(self, line: str) -> None:
        """A line of a stage's own (per source, per benchmark) above the live line."""
        if not self.quiet:
            self.line.write(line, final=True)

    def close(self) -> None:
        """Stop the ticker (a stage that raised)."""
        self.line.stop()


def release_memory(collect: bool = False) -> None:
    """Hand freed memory back to the OS (the Arrow pool, the glibc heap): the next peak starts from what is live.

    `collect` also runs a full garbage collection (for reference cycles; 0.1 s with a build's objects alive), once
    per stage rather than once per part.
    """
    import contextlib
    import ctypes
    import gc

    import pyarrow as pa

    if collect:
        gc.collect()
    pa.default_memory_pool().release_unused()
    with contextlib.suppress(OSError, AttributeError):  # glibc keeps freed Python strings in its heap until asked
        ctypes.CDLL("libc.so.6").malloc_trim(0)
