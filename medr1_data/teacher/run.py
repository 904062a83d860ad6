"""The distill stage: plan the requests, fetch what the cache lacks under the cache's lock, assemble the traces.

What is guaranteed: a response that arrived and was written to the cache is never requested again (its key is in
the file, and the next run skips it), whichever endpoint or engine fetched it; two runs never share a cache at once
(a file lock), and one run's endpoints share its one cache. What is not: a request that timed out, stalled or whose
connection broke may have been billed by the provider and is retried (on another endpoint when there are several),
and a response that arrived while the process was being killed, before its line was written, is requested again
(with `engine: ray`, every response still at the Ray workers, at most `ray.batch_size` per worker). The requests
that may have been paid twice are among those `RunStats.retries` counts as `timeout`, `stalled`,
`stream_incomplete` and `connection_error`.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, TypeVar

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from medr1_data import Medr1Error
from medr1_data.progress import LiveLine
from medr1_data.prompts import get_template
from medr1_data.teacher.cache import CacheWriter, ResponseCache, lock_cache
from medr1_data.teacher.client import Fatal, RunStats, TeacherClient, api_key, progress_line
from medr1_data.teacher.plan import Job, Plan
from medr1_data.teacher.prices import RETIRED
from medr1_data.teacher.settings import TeacherSettings
from medr1_data.teacher.spill import (
    PLAN_COLUMNS,
    Spill,
    load_questions,
    part_plan,
    part_questions,
    plan_keys,
    read_spill,
)
from medr1_data.teacher.traces import assemble
from medr1_data.workers import Pool

R = TypeVar("R", "Prepared", "DistillResult")


@dataclass(frozen=True)
class PartTraces:
    """A partition's questions (`spill.part_questions`), its planned requests, its spilled cache records and why
    keys are missing: all that its traces are assembled from."""

    questions: Any  # `spill.part_questions`
    requests: list[tuple[int, int, str]]
    spill: list[Path]
    errors: dict[str, str]
    teacher: TeacherSettings

    def assemble(self) -> tuple[pa.Table, dict[str, int], dict[str, int]]:
        """The traces (one row per (question, sample)), traces per reported model name, per imported dataset."""
        records = read_spill(self.spill)
        planned = planned_records(records, [k for _, _, k in self.requests])
        reported = reported_models(planned, self.teacher.model)
        imported = imported_from(planned) if self.teacher.endpoint == "dataset" else {}
        table = assemble(
            load_questions(self.questions), Plan(self.requests, []), [records], self.errors, self.teacher
        ).table
        return table, reported, imported


@dataclass
class Prepared:
    """A distill run whose responses are in the cache or known to be missing: its traces, a partition at a time.

    `cuts` cut the questions into partitions (rows `cuts[p]` to `cuts[p + 1]`); `traces(p)` assembles one.
    `questions` is the table, or one loader a partition (`spill.part_questions`)."""

    questions: pa.Table | list[Any]
    cuts: list[int]
    teacher: TeacherSettings
    keys: pl.DataFrame
    spill: Spill
    stats: RunStats
    errors: dict[str, str]
    missing: int = 0
    first_missing: tuple[str, int] | None = None
    reported_models: Counter[str] = field(default_factory=Counter)
    imported_from: Counter[str] = field(default_factory=Counter)  # dataset teacher: `ref@revision` -> traces

    @property
    def rows(self) -> int:
        """Planned rows (question x sample)."""
        return self.keys.height

    def first_error(self) -> str:
        """Why the first missing response is missing."""
        missing = self.spill.missing()
        return self.errors.get(missing[0], "missing") if len(missing) else "?"

    def part(self, p: int) -> PartTraces:
        """What the traces of partition `p` are assembled from (a worker process can assemble it)."""
        plan = part_plan(self.keys, p)
        errors = {k: self.errors[k] for _, _, k in plan.requests if k in self.errors}
        questions = part_questions(self.questions, self.cuts, p)
        return PartTraces(questions, plan.requests, self.spill.paths(p), errors, self.teacher)

    def traces(self, p: int) -> pa.Table:
        """The traces of partition `p`: one row per (question, sample), `error` where no response is cached."""
        table, reported, imported = self.part(p).assemble()
        self.tally(reported, imported)
        return table

    def tally(self, reported: dict[str, int], imported: dict[str, int]) -> None:
        """Add a partition's traces per reported model name and per imported dataset to the run's counts."""
        self.reported_models.update(reported)
        self.imported_from.update(imported)

    def close(self) -> None:
        """Remove the spill files."""
        self.spill.remove()


def prepare(
    questions: pa.Table | list[Any],
    cuts: list[int],
    teacher: TeacherSettings,
    workdir: Path,
    *,
    quiet: bool = False,
    progress_stream: IO[str] | None = None,
    progress_interval: float | None = None,
    pool: Pool | None = None,
) -> Prepared:
    """Plan every request (in `pool`'s workers), read the cache once (its records spilled by partition under
    `workdir`), fetch what it lacks (unless `offline`) and read the new records. Progress goes to
    `progress_stream` (stderr) unless `quiet`."""
    teacher.check()
    keys = plan_keys(questions, cuts, teacher, pool)
    cache = ResponseCache(teacher.cache)
    spill = Spill(workdir, keys, pool)
    end = spill.scan(cache)
    missing = spill.missing()
    stats = RunStats(total=keys["key"].n_unique(), to_fetch=len(missing))
    stats.cached_before = stats.total - stats.to_fetch
    errors: dict[str, str] = {}
    if len(missing) and (teacher.endpoint == "dataset" or not teacher.offline):
        jobs, asked = jobs_for(questions, cuts, keys, missing, teacher)
        if teacher.endpoint == "dataset":
            from medr1_data.teacher.importer import import_responses

            errors = import_responses(jobs, asked, teacher, stats)
        else:
            stream = None if quiet else (progress_stream or sys.stderr)
            errors = _fetch(jobs, teacher, stats, stream, progress_interval)
        spill.scan(cache, end)  # the new responses are at the end of the file now
    elif len(missing):
        errors = dict.fromkeys(missing.to_list(), "not in the cache (offline)")
    run = Prepared(questions, cuts, teacher, keys, spill, stats, errors)
    still = set(spill.missing().to_list())
    if still:
        first = keys.filter(pl.col("key").is_in(list(still))).row(0, named=True)
        ids = load_questions(part_questions(questions, cuts, first["part"]), ["id"]).column("id")
        run.first_missing = (ids[first["row"]].as_py(), first["sample"])
        run.missing = keys.filter(pl.col("key").is_in(list(still))).height
    return run


def jobs_for(
    questions: pa.Table | list[Any], cuts: list[int], keys: pl.DataFrame, missing: pl.Series, teacher: TeacherSettings
) -> tuple[list[Job], pa.Table]:
    """One job per missing key (its first row in question order), with the messages of its question; and those
    questions (id, question, options, context), read a partition at a time."""
    first = keys.filter(pl.col("key").is_in(missing.implode())).unique("key", keep="first", maintain_order=True)
    asked = [
        load_questions(part_questions(questions, cuts, p), PLAN_COLUMNS).take(pa.array(rows, pa.int64()))
        for p, rows in first.group_by("part", maintain_order=True).agg("row").iter_rows()
    ]
    table = pa.concat_tables(asked)
    cols = table.select(["id", "question", "options", "context"]).to_pydict()
    template = get_template(teacher.template)
    jobs = [
        Job(key, template.messages(q, o, c), sample, qid)
        for key, sample, qid, q, o, c in zip(
            first["key"], first["sample"], cols["id"], cols["question"], cols["options"], cols["context"], strict=True
        )
    ]
    return jobs, table


@dataclass
class DistillResult:
    """The traces table (one row per (id, sample_idx); failed requests have `error`) and the run's counters."""

    table: pa.Table
    stats: RunStats
    missing: int
    first_missing: tuple[str, int] | None = None
    reported_models: dict[str, int] = field(default_factory=dict)  # model name the server reported -> traces

    @property
    def rows(self) -> int:
        """Rows (question x sample)."""
        return self.table.num_rows

    def first_error(self) -> str:
        """Why the first missing response is missing."""
        errs = self.table.column("error").drop_null()
        return errs[0].as_py() if len(errs) else "?"

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
        if len(st.endpoints) > 1:
            rows += [
                (f"  endpoint {e['url']}", f"{e['ok']} ok, {e['failed']} failed, breaker opened {e['trips']}x")
                for e in st.endpoints
            ]
        rows += [(f"  model reported: {k}", str(v)) for k, v in sorted(self.reported_models.items())]
        if st.to_fetch:
            rate = st.fetched / st.seconds if st.seconds else 0.0
            rows += [
                ("prompt tokens (this run)", str(st.prompt_tokens)),
                ("completion tokens (this run)", str(st.completion_tokens)),
                ("cost this run (USD)", f"{st.cost_usd:.4f}"),
                ("wall time", f"{st.seconds:.1f}s ({rate:.1f} req/s)"),
            ]
        cost = self.table.column("cost_usd")
        rows.append(("cost of all rows (USD)", f"{(pc.sum(cost).as_py() or 0.0):.4f}"))
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
    """Fetch what the cache lacks (unless `offline`), then one row per (question, sample) of `table`, in its order,
    with `error` where the request still failed. Progress goes to `progress_stream` (stderr) unless `quiet`."""
    with tempfile.TemporaryDirectory(prefix="medr1-distill-") as tmp:
        run = prepare(
            table,
            [0, table.num_rows],
            teacher,
            Path(tmp) / "spill",
            quiet=quiet,
            progress_stream=progress_stream,
            progress_interval=progress_interval,
        )
        traces = run.traces(0)
        run.close()
    return DistillResult(traces, run.stats, run.missing, run.first_missing, dict(sorted(run.reported_models.items())))


NOT_RECORDED = "(not recorded)"


def planned_records(cache: pa.Table, keys: list[str]) -> pl.DataFrame:
    """The cache's last record of each planned key: key, served and listed model."""
    df = pl.from_arrow(cache.select(["key", "served_model", "listed_model"])).unique("key", keep="last")
    return df.filter(pl.col("key").is_in(list(set(keys))))


def imported_from(planned: pl.DataFrame) -> dict[str, int]:
    """Traces per dataset (`ref@revision`, recorded as the listed model) over the planned records (`planned_records`)
    a dataset teacher imported."""
    counts = planned.drop_nulls("listed_model").group_by("listed_model").len().sort("listed_model")
    return dict(counts.iter_rows())


def reported_models(planned: pl.DataFrame, requested: str) -> dict[str, int]:
    """Traces per model name the server reported, over the planned records the cache holds (`planned_records`).

    The name is the response's `model` when it differs from the requested one; else the one model the endpoint
    listed at GET /models when it listed one (llama.cpp echoes the requested name but lists the file it serves);
    else the response's `model`. Records written before these fields existed count as "(not recorded)"."""
    served, listed = pl.col("served_model"), pl.col("listed_model")
    name = (
        pl.when(served.is_not_null() & (served != requested))
        .then(served)
        .otherwise(pl.coalesce(listed, served, pl.lit(NOT_RECORDED)))
    )
    counts = planned.select(name.alias("name")).group_by("name").len().sort("name")
    return dict(counts.iter_rows())


def _fetch(
    jobs: list[Job], teacher: TeacherSettings, stats: RunStats, stream: IO[str] | None, interval: float | None
) -> dict[str, str]:
    """Request the jobs; the reason each key that did not arrive is missing."""
    if teacher.endpoint == "recorded":
        raise Medr1Error("teacher endpoint 'recorded' only serves the cache: set offline: true")
    if (teacher.endpoint, teacher.model) in RETIRED:
        raise Medr1Error(
            f"{teacher.endpoint} retired the API model '{teacher.model}' on {RETIRED[teacher.endpoint, teacher.model]}"
            "; use a live one, e.g. --set teacher.preset=deepseek-v4-pro (or deepseek-v4-flash), or DeepSeek-R1-0528 "
            "on your own vLLM/SGLang server (--set teacher.preset=deepseek-r1-0528)"
        )
    teacher.url(), api_key(teacher)  # fail before anything is created or sent
    progress = LiveLine(stream, lambda: progress_line(stats), interval, log_off_tty=True) if stream else None
    try:
        if teacher.engine == "ray":
            from medr1_data.teacher.ray_engine import fetch_with_ray

            errors, fetched = fetch_with_ray(jobs, teacher, stats, progress)
        else:
            errors, fetched = _run_coroutine(_fetch_missing(jobs, teacher, stats, progress))
    except asyncio.CancelledError:  # SIGTERM: what succeeded is in the cache
        raise KeyboardInterrupt from None
    finally:
        stats.seconds = time.monotonic() - stats.started
    stopped = stats.stopped
    for job in jobs:
        if job.key not in fetched and job.key not in errors:
            errors[job.key] = f"not requested: the run stopped ({stopped})" if stopped else "not requested"
    return errors


async def _fetch_missing(
    jobs: list[Job], teacher: TeacherSettings, stats: RunStats, progress: LiveLine | None
) -> tuple[dict[str, str], set[str]]:
    """Request every job under the cache's lock; every success is in the cache file when this returns.

    Returns the final error of each failed key and the keys fetched."""
    cache = ResponseCache(teacher.cache)
    lock = lock_cache(cache)
    with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):  # SIGTERM stops as Ctrl-C does
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, asyncio.current_task().cancel)
    try:
        writer = CacheWriter(cache)
        writer.start_group_commit()
        client = None
        try:
            client = TeacherClient(teacher, stats, writer, teacher.price())
            if progress is not None:
                progress.start()
            try:
                await client.run(jobs)
            except Fatal as e:
                stats.stopped = str(e)
        finally:
            if progress is not None:
                progress.stop()
                progress.write(progress_line(stats))
            await writer.aclose()
            stats.cache_batches = writer.batches
            if client is not None:
                client.write_error_log(cache.folder)
        return client.errors, client.fetched
    finally:
        lock.release()


def _run_coroutine(coro: Any) -> Any:
    """asyncio.run, or asyncio.run in a helper thread when this thread already runs a loop (notebooks)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


def distill(table: pa.Table, teacher: TeacherSettings, *, quiet: bool = False) -> pa.Table:
    """One row per (question, sample): the question's columns plus the teacher's trace.

    With `offline: true` every response must be in the cache. Otherwise the missing ones are requested from the
    teacher first; a run that still leaves some missing raises Medr1Error naming how many (rerun to retry them).
    """
    return require_complete(run_distill(table, teacher, quiet=quiet), teacher).table


def require_complete(result: R, teacher: TeacherSettings) -> R:
    """The result when every planned row has its response (or, for a dataset teacher, what it had); a Medr1Error
    naming how many are missing otherwise."""
    if result.missing and teacher.endpoint != "dataset":
        assert result.first_missing is not None
        first, sample = result.first_missing
        if teacher.offline:
            raise Medr1Error(
                f"{teacher.cache}: {result.missing} of {result.rows} teacher responses are not in the cache "
                f"(first: {first} sample {sample}); this build runs offline from recorded responses"
            )
        stopped = f"; stopped early: {result.stats.stopped}" if result.stats.stopped else ""
        raise Medr1Error(
            f"{teacher.cache}: {result.missing} of {result.rows} teacher responses are still missing after the run "
            f"(first: {first} sample {sample}: {result.first_error()}){stopped}; rerun to request them again"
        )
    return result
