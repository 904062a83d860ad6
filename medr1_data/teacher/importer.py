"""A dataset as the teacher (`teacher.endpoint: dataset`): the response cache filled from existing open traces.

`teacher.spec` names a dataset the way `medr1-data audit` does (a Hub id, `LAYOUT=PATH`, a column mapping). Each
missing request is matched to a dataset row by the canonical question text and, when both sides have options, the
canonical option texts in any order; sample k of a question takes the k-th matching row. A match becomes a cache
record like any response (`imported_from` names the dataset, its revision and the row), so the rest of the build
verifies, scores and releases it as usual; nothing is requested and nothing is paid. Questions with no matching
row keep `error` and are counted as `not_in_dataset`. The dataset is read a batch at a time and only the rows the
build needs are kept.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from medr1_data import Medr1Error
from medr1_data.normalize import canon_option, canon_stem
from medr1_data.teacher.cache import ResponseCache, cache_record, lock_cache
from medr1_data.teacher.client import RunStats
from medr1_data.teacher.plan import Job
from medr1_data.teacher.settings import TeacherSettings

NOT_IN_DATASET = "not_in_dataset"


def question_key(question: str | None, options: list[dict[str, Any]] | None) -> str:
    """The match key: canonical stem, then the canonical option texts sorted (options in any order match)."""
    texts = sorted(canon_option(o.get("text")) for o in options or [])
    return canon_stem(question) + ("\x1f" + "\x1f".join(texts) if texts else "")


def _wanted(jobs: list[Job], table: pa.Table) -> dict[str, list[Job]]:
    """Match key -> the jobs (one per sample index, in order) that need a row with that question."""
    cols = table.select(["id", "question", "options"]).to_pydict()
    by_id = {i: (q, o) for i, q, o in zip(cols["id"], cols["question"], cols["options"], strict=True)}
    wanted: dict[str, list[Job]] = {}
    for job in sorted(jobs, key=lambda j: (j.qid, j.sample_idx)):
        wanted.setdefault(question_key(*by_id[job.qid]), []).append(job)
    return wanted


def _records(teacher: TeacherSettings, wanted: dict[str, list[Job]]) -> tuple[list[dict[str, Any]], str]:
    """The cache records of every job a dataset row answers, and the dataset's `ref@revision`."""
    from medr1_data.batches import open_dataset
    from medr1_data.layouts import map_rows, resolve_layout

    if not teacher.spec:
        raise Medr1Error("teacher endpoint 'dataset' needs teacher.spec (a Hub id, LAYOUT=PATH or a column mapping)")
    layout, source, batches = open_dataset(teacher.spec, teacher.spec_split, 50_000)
    ref, seen, records, offset = source.describe(), dict.fromkeys(wanted, 0), [], 0
    for batch in batches:
        layout = resolve_layout(layout, batch.schema.names, source.describe())
        rows, _ = map_rows(batch, layout, teacher.spec_split, offset)
        offset += batch.num_rows
        cols = rows.select(["question", "options", "reasoning", "response", "teacher_model", "source_id"]).to_pydict()
        for q, opts, reasoning, response, model, row in zip(*cols.values(), strict=True):
            key = question_key(q, opts)
            if key not in seen or seen[key] >= len(wanted[key]) or not (reasoning or response):
                continue
            job = wanted[key][seen[key]]
            seen[key] += 1
            message = {"role": "assistant", "content": response or "", "reasoning_content": reasoning}
            origin = {"served_model": model, "listed_model": ref, "imported_from": f"{ref}#row={row}"}
            records.append(cache_record(job.key, teacher, job.sample_idx, message, "stop", {}, None, **origin))
    return records, ref


def import_responses(jobs: list[Job], table: pa.Table, teacher: TeacherSettings, stats: RunStats) -> dict[str, str]:
    """Fill the cache with the dataset's traces for `jobs`; the reason (not in the dataset) of each key left over."""
    cache = ResponseCache(teacher.cache)
    lock = lock_cache(cache)
    try:
        records, ref = _records(teacher, _wanted(jobs, table))
        cache.append(records)
    finally:
        lock.release()
    stats.fetched = len(records)
    found = {r["key"] for r in records}
    return {j.key: f"{NOT_IN_DATASET}: no row of {ref} has this question" for j in jobs if j.key not in found}
