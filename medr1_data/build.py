"""The build runner: a recipe's stages in order, each served from its checkpoint while it is valid, and the report.

Each stage's output is checkpointed in the build folder (`medr1_data/checkpoints.py`), keyed by the previous stage's
key, the recipe settings the stage reads (`stage_settings`), fingerprints of the files it reads and the library
(version and code). A rerun serves every stage whose checkpoint is still valid and runs the rest: a changed
threshold reruns from the stage that reads it, a build killed in a stage starts again at that stage, and the
teacher's response cache (`medr1_data/teacher/cache.py`) makes sure no response that arrived is requested again.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import pyarrow as pa

from medr1_data import Medr1Error, __version__
from medr1_data.checkpoints import Checkpoints, decode_stats, encode_stats, fingerprint, stage_key
from medr1_data.parts import Parts
from medr1_data.progress import BuildProgress, PeakRSS, release_memory
from medr1_data.reach import require_teacher
from medr1_data.recipe import Recipe
from medr1_data.select import drop_counts
from medr1_data.shards import sha256_file
from medr1_data.stages import BATCH_ROWS, STAGES, Build
from medr1_data.workers import Pool

REPORT = "build_report.json"


# Teacher keys that change how responses are fetched, not which responses a build gets (the request key ignores them).
_TEACHER_RUNTIME_KEYS = (
    "base_url",
    "api_key_env",
    "offline",
    "concurrency",
    "request_timeout",
    "max_retries",
    "backoff_s",
    "backoff_max_s",
    "expected_completion_tokens",
    "label",
    "endpoints",
    "engine",
    "stream",
    "stall_timeout",
    "breaker_failures",
    "breaker_cooldown_s",
    "ray",
)


def stage_settings(name: str, r: Recipe, out: Path) -> Any:
    """What a stage's checkpoint key covers besides its input: the recipe settings and files the stage reads."""
    if name == "ingest":
        paths = [r.spec_path(s.spec) for s in r.sources]
        return {"sources": [dataclasses.asdict(s) for s in r.sources], "files": [fingerprint(p) for p in paths if p]}
    if name == "decontam":
        paths = [r.spec_path(s) for s in r.decontam.benchmarks]
        if r.decontam.benchmark_dir:
            paths.append(r.resolve(r.decontam.benchmark_dir))
        if os.environ.get("MEDR1_BENCHMARK_DIR"):
            paths.append(Path(os.environ["MEDR1_BENCHMARK_DIR"]))
        return {"decontam": dataclasses.asdict(r.decontam), "files": [fingerprint(p) for p in paths if p]}
    if name == "dedup":
        return dataclasses.asdict(r.dedup)
    if name == "distill":
        teacher = dataclasses.asdict(r.teacher)
        teacher["cache"] = str(r.resolve(r.teacher.cache).resolve())
        return {k: v for k, v in teacher.items() if k not in _TEACHER_RUNTIME_KEYS}
    if name == "verify":
        return {}
    if name == "score":
        return dataclasses.asdict(r.score)
    if name == "select":
        return dataclasses.asdict(r.select)
    # shards and card write the release folder, whose manifest and card record the whole recipe
    return {"recipe_sha256": r.sha256, "out": str(Path(out).resolve())}


def _drop_counts(table: Parts | None) -> dict[str, int]:
    """Dropped rows per reason of a stage's table (read a column at a time)."""
    if table is None or not table.has("drop_reason"):
        return {}
    return drop_counts(table.read(["drop_reason"]))


def _files(*folders: Path) -> dict[Path, tuple[int, int]]:
    """(size, mtime) of every file a stage may write: the release folder and the build folder, checkpoints aside."""
    found = {}
    for folder in folders:
        for p in folder.rglob("*"):
            if p.is_file() and "checkpoints" not in p.relative_to(folder).parts and p.name != REPORT:
                st = p.stat()
                found[p] = (st.st_size, st.st_mtime_ns)
    return found


def _run_stage(name: str, table: Parts | None, b: Build) -> tuple[Parts | None, dict[str, Any], dict[str, str]]:
    """Run one stage, measuring it: (output table or None if unchanged, report entry, the numbers it changed)."""
    stats_before = encode_stats({k: v for k, v in b.stats.items() if k != "build_report"})
    files_before = _files(b.out, b.build_dir)
    drops_before = _drop_counts(table)
    rows_in = None if table is None else table.num_rows
    assert b.progress is not None
    b.progress.start(name, rows_in, live=name != "distill")
    start = time.perf_counter()
    try:
        out = STAGES[name](table, b)
    finally:
        b.progress.close()
    seconds = time.perf_counter() - start
    stats_after = encode_stats({k: v for k, v in b.stats.items() if k != "build_report"})
    added = {k: v for k, v in stats_after.items() if stats_before.get(k) != v}
    result = out if out is not None else table
    rows_out = result.num_rows if result is not None else 0
    if name == "ingest":
        rows_in = sum(s["rows_read"] for s in b.stats.get("sources", []))
        dropped = dict(b.stats.get("reject_reasons", {}))
    elif name == "shards" and "rows" in b.stats:
        rows_out = b.stats["rows"]
        flagged = sum(drops_before.values())  # the shards stage adds no drop reason of its own
        dropped = {"flagged by an earlier stage": flagged} if flagged else {}
    else:
        after = _drop_counts(result)
        dropped = {k: n - drops_before.get(k, 0) for k, n in sorted(after.items()) if n > drops_before.get(k, 0)}
    entry = {
        "stage": name,
        "rows_in": rows_in,
        "rows_out": rows_out,
        "dropped": dropped,
        "seconds": round(seconds, 3),
        "peak_rss_mb": 0.0,  # set by the caller
        "cached": False,
    }
    if name == "distill" and result is not None and result.has("completion_tokens"):
        sums = result.read(["completion_tokens", "cost_usd"])
        entry["completion_tokens"] = int(pa.compute.sum(sums.column("completion_tokens")).as_py() or 0)
        entry["cost_usd"] = round(float(pa.compute.sum(sums.column("cost_usd")).as_py() or 0.0), 4)
    known = {str(b.out / f["path"]): f["sha256"] for f in b.stats.get("files", [])}  # hashed by write_shards
    changed = [p for p, sig in _files(b.out, b.build_dir).items() if files_before.get(p) != sig]
    outputs = {str(p): known.get(str(p)) or sha256_file(p) for p in changed}
    return out, entry, {"stats": added, "outputs": outputs}


def _stage_index(stages: list[str], name: str | None, option: str, recipe: Recipe) -> int | None:
    if name is None:
        return None
    if name not in stages:
        raise Medr1Error(f"{option} {name}: recipe {recipe.name} has no such stage (stages: {', '.join(stages)})")
    return stages.index(name)


def _window(recipe: Recipe, from_stage: str | None, until_stage: str | None) -> tuple[int | None, int]:
    """The indices of `--from` (None: serve every valid checkpoint) and `--until` (default: the last stage)."""
    stages = list(recipe.stages)
    first = _stage_index(stages, from_stage, "--from", recipe)
    last = _stage_index(stages, until_stage, "--until", recipe)
    last = len(stages) - 1 if last is None else last
    if first is not None and first > last:
        raise Medr1Error(f"--from {from_stage} comes after --until {until_stage} (stages: {', '.join(stages)})")
    return first, last


def _start(recipe: Recipe, out: Path, quiet: bool, stages: list[str], batch_rows: int) -> Build:
    """The Build of a new run: its folders made, its progress display set up from the previous report's times."""
    build_dir = out.with_name(out.name + ".build")
    out.mkdir(parents=True, exist_ok=True)
    build_dir.mkdir(parents=True, exist_ok=True)
    try:
        previous = json.loads((build_dir / REPORT).read_text(encoding="utf-8")).get("stages")
    except (OSError, ValueError, AttributeError):
        previous = None
    b = Build(recipe, out, build_dir, quiet, batch_rows=batch_rows)
    b.progress = BuildProgress(stages, quiet=quiet, previous=previous)
    b.stats["build_report"] = b.report
    return b


def stage_keys(recipe: Recipe, out: Path) -> list[str]:
    """The checkpoint key of every stage: each one chains the key of the stage before it."""
    keys: list[str] = []
    key = None
    for name in recipe.stages:
        key = stage_key(key, name, stage_settings(name, recipe, out))
        keys.append(key)
    return keys


def _serve(meta: dict[str, Any], b: Build) -> None:
    """A stage served from its valid checkpoint: its numbers and report entry come back."""
    b.stats.update(decode_stats(meta["stats"]))
    entry = {**meta["report"], "cached": True}
    b.report.append(entry)
    assert b.progress is not None
    b.progress.finish(entry)


def _compute(
    name: str, key: str, table: Parts | None, checkpoints: Checkpoints, b: Build
) -> tuple[Parts | None, dict[str, Any]]:
    """Run one stage on its input table (parts on disk) and commit its checkpoint."""
    peak = PeakRSS()
    peak.start()
    b.checkpoints, b.stage = checkpoints, name
    result, entry, meta = _run_stage(name, table, b)
    entry["peak_rss_mb"] = round(peak.stop() + b.pool.take_peaks(), 1)  # with the workers' peaks added
    entry["start_rss_mb"] = peak.start_mb  # resident when the stage began
    checkpoints.save(name, key, result, {"report": entry, **meta})
    return result if result is not None else table, entry


def _record(entry: dict[str, Any], b: Build) -> None:
    """A computed stage's report entry and result line."""
    b.report.append(entry)
    extra = ""
    if "completion_tokens" in entry:
        extra = f"; {entry['completion_tokens']:,} completion tokens, ${entry['cost_usd']:,.2f}"
    assert b.progress is not None
    b.progress.finish(entry, extra)


def _write_report(b: Build, complete: bool, seconds: float) -> None:
    """`build_report.json`: every stage's entry and the summary, written atomically."""
    report = {
        "recipe": b.recipe.name,
        "recipe_sha256": b.recipe.sha256,
        "library_version": __version__,
        "complete": complete,
        "seconds": round(seconds, 3),
        "peak_rss_mb": max((s["peak_rss_mb"] for s in b.report if not s["cached"]), default=0.0),
        "stages": b.report,
        "summary": summary_rows(b),
    }
    path = b.build_dir / REPORT
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def run(
    recipe: Recipe,
    out: Path | None = None,
    quiet: bool = False,
    *,
    from_stage: str | None = None,
    until_stage: str | None = None,
    batch_rows: int = BATCH_ROWS,
    workers: int = 1,
) -> Build:
    """Run the recipe's stages in order, serving each from its checkpoint while it is valid; write the release to
    `out` and `build_report.json` to the build folder beside it.

    `from_stage`: rerun from this stage on (the stages before it must have valid checkpoints). `until_stage`: stop
    after this stage (the release is complete only when the last stage ran). `batch_rows`: traces per part of
    the trace stages (memory holds about one part a worker; the release does not depend on it). `workers`:
    processes that map the trace stages' parts (`medr1_data/workers.py`; the release does not depend on it either).
    """
    if batch_rows < 1:
        raise Medr1Error(f"--batch-rows {batch_rows}: expected a whole number >= 1")
    out = Path(out or recipe.output.dir)
    first, last = _window(recipe, from_stage, until_stage)
    pool = Pool(workers)  # its worker processes start on first use
    created = [p for p in (out, out.with_name(out.name + ".build")) if not p.exists()]
    try:
        return _run(recipe, out, quiet, first, last, from_stage, batch_rows, pool)
    except BaseException:
        for folder in created:  # a failed build leaves no empty folder behind; checkpoints are kept for a rerun
            if folder.is_dir() and not any(p.is_file() for p in folder.rglob("*")):
                shutil.rmtree(folder)
        raise
    finally:
        pool.close()


def _run(
    recipe: Recipe,
    out: Path,
    quiet: bool,
    first: int | None,
    last: int,
    from_stage: str | None,
    batch_rows: int,
    pool: Pool,
) -> Build:
    """`run` once its arguments are checked: the stages in order."""
    stages = list(recipe.stages)
    started = time.perf_counter()
    keys = stage_keys(recipe, out)
    checkpoints = Checkpoints(out.with_name(out.name + ".build"), stages)
    if "distill" in stages[: last + 1] and checkpoints.meta("distill", keys[stages.index("distill")]) is None:
        require_teacher(recipe)
    b = _start(recipe, out, quiet, stages[: last + 1], batch_rows)
    b.pool = pool
    table: Parts | None = None  # the next stage's input
    running = False
    for i, name in enumerate(stages[: last + 1]):
        meta = None if running or (first is not None and i >= first) else checkpoints.meta(name, keys[i])
        if name in checkpoints.damaged:
            b.log(f"checkpoint of {name} is damaged ({checkpoints.damaged[name]} changed): running the stage again")
        if meta is not None:
            _serve(meta, b)
            if meta.get("parts"):
                table = checkpoints.parts(meta)
            continue
        if first is not None and i < first:
            raise Medr1Error(
                f"--from {from_stage}: stage '{name}' before it has no valid checkpoint (never run, or its settings "
                "or input files changed); run the build without --from"
            )
        running = True
        table, entry = _compute(name, keys[i], table, checkpoints, b)
        release_memory(collect=True)  # the next stage's peak starts from what is live
        _record(entry, b)
    _write_report(b, last == len(stages) - 1, time.perf_counter() - started)
    return b


def summary_rows(b: Build) -> list[tuple[str, int]]:
    """The build summary as (what, count) rows: read, rejected per reason, traces, kept, dropped per reason."""
    s = b.stats
    rows: list[tuple[str, int]] = []
    if "sources" in s:
        rows.append(("source rows read", sum(x["rows_read"] for x in s["sources"])))
        rows += [(f"  rejected at ingest: {k}", v) for k, v in s.get("reject_reasons", {}).items()]
    if "traces_total" in s:
        before, after = s["question_drops"], s["trace_drops"]
        rows.append(("questions", s["questions_total"]))
        rows += [(f"  not sent to the teacher: {k}", v) for k, v in before.items()]
        rows.append(("teacher traces", s["traces_total"]))
        rows += [(f"  dropped: {k}", v) for k, v in after.items()]
        rows.append(("traces kept", s["rows"]))
        rows.append(("questions kept", s["questions_kept"]))
        rows.append(("questions with no kept trace", s["questions_unanswered"]))
    return rows
