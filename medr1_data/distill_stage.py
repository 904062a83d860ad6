"""The distill stage: the teacher's traces of the questions still to distill, a part at a time, in the workers.

Each part's job carries the rows of its questions as a reference into the stage's input (`QuestionRows`), its
planned requests and its spill files; the worker reads the questions, assembles the traces, adds the questions
dropped before the teacher (one row each, no trace) and writes the part in release order. No process holds every
question or every trace.
"""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from medr1_data import Medr1Error, contracts
from medr1_data.contracts import check_input
from medr1_data.parts import Parts, write_part
from medr1_data.schema import TRACE_FIELDS
from medr1_data.shards import sort_order, take_rows
from medr1_data.teacher.run import PartTraces, prepare, require_complete
from medr1_data.workers import PartResult

if TYPE_CHECKING:
    from medr1_data.stages import Build


def _cuts(rows: int, per_part: int) -> list[int]:
    """Part boundaries of `rows` rows, `per_part` each (at least one part)."""
    return [*range(0, rows, per_part), rows] if rows else [0, 0]


def _skipped_rows(questions: pa.Table) -> pa.Table:
    """Questions dropped before the teacher, as trace rows: sample 0, no trace (their drop is counted)."""
    for f in TRACE_FIELDS:
        n = questions.num_rows
        value = pa.array([0] * n, f.type) if f.name == "sample_idx" else pa.nulls(n, f.type)
        questions = questions.append_column(f, value)
    return questions


def _active_rows(parts: Parts) -> np.ndarray:
    """Which rows of the distill stage's input are still to distill (no `drop_reason`), in release order; the input
    is checked at the door (its first part whole, then every id in order)."""
    check_input(parts.part(0), contracts.DISTILL, "distill stage input")
    masks, last = [], None
    for table in parts.tables(["id", "drop_reason"]):
        ids = pl.from_arrow(table.column("id"))
        if not ids.is_sorted() or (last is not None and len(ids) and ids[0] < last):
            raise Medr1Error("distill stage input: rows are not in id order (the question stages keep ingest's order)")
        last = ids[-1] if len(ids) else last
        dropped = table.column("drop_reason") if "drop_reason" in table.column_names else pa.nulls(len(ids))
        masks.append(pc.is_null(dropped).to_numpy(zero_copy_only=False))
    return np.concatenate(masks)


@dataclass(frozen=True)
class QuestionRows:
    """Rows `lo` to `hi` of the distill stage's input, those still to distill (`active`) or those dropped before:
    read where they are used (a worker), so that no process holds every question."""

    parts: Parts
    lo: int
    hi: int
    active: bool

    def read(self, columns: list[str] | None = None) -> pa.Table:
        """The rows (only `columns`, those of them the input has, when given), checked at the door."""
        wanted = None if columns is None else [*contracts.DISTILL.required, *columns, "drop_reason"]
        table = check_input(self.parts.rows(self.lo, self.hi, wanted), contracts.DISTILL, "distill stage input")
        if "drop_reason" not in table.column_names:
            table = table.append_column("drop_reason", pa.nulls(table.num_rows, pa.string()))
        keep = pc.is_null(table.column("drop_reason"))
        table = table.filter(keep).drop_columns(["drop_reason"]) if self.active else table.filter(pc.invert(keep))
        return table if columns is None else table.select([c for c in columns if c in table.column_names])


@dataclass(frozen=True)
class DistillPart:
    """A part of the distill stage: its traces to assemble, its questions dropped before the teacher, its file."""

    traces: PartTraces
    skipped: QuestionRows
    path: Path


def distill_part(job: DistillPart) -> tuple[PartResult, dict[str, int], dict[str, int]]:
    """Write one part of the distill stage: its traces and its skipped questions in release order; the traces per
    reported model name and per imported dataset."""
    traces, reported, imported = job.traces.assemble()
    absent = pc.if_else(pc.is_valid(traces.column("error")), "not_in_dataset", pa.scalar(None, pa.string()))
    traces = traces.append_column("drop_reason", absent)  # only a dataset teacher leaves rows unanswered
    here = _skipped_rows(job.skipped.read())
    out = pa.concat_tables([traces, here.select(traces.column_names).cast(traces.schema)])
    out = take_rows(out, sort_order(out))
    return PartResult(write_part(out, job.path), out.column_names, None), reported, imported


def stage_distill(parts: Parts, b: Build) -> Parts:
    """Teacher traces, one row per (question, sample), in release order, a part of about `b.batch_rows` traces at a
    time; questions already dropped are not sent (nothing is paid) and stay as one row each."""
    teacher = dataclasses.replace(b.recipe.teacher, cache=str(b.recipe.resolve(b.recipe.teacher.cache)))
    is_active = _active_rows(parts)
    per_part = max(1, b.batch_rows // teacher.samples)
    cuts = _cuts(len(is_active), per_part)
    active_before = np.concatenate([[0], np.cumsum(is_active)])
    active_cuts = [int(active_before[c]) for c in cuts]
    active = [QuestionRows(parts, lo, hi, True) for lo, hi in itertools.pairwise(cuts)]
    spill = b.build_dir / "distill-spill"
    run = require_complete(prepare(active, active_cuts, teacher, spill, quiet=b.quiet, pool=b.pool), teacher)
    writer = b.writer()
    jobs = (
        DistillPart(run.part(p), QuestionRows(parts, cuts[p], cuts[p + 1], False), writer.path(p))
        for p in range(len(cuts) - 1)
    )
    try:
        for result, reported, imported in b.pool.map(distill_part, jobs, len(cuts) - 1):
            writer.layout(result.names)
            writer.add(result.entry)
            run.tally(reported, imported)
            b.progress_rows(result.entry["rows"])
    finally:
        run.close()
    b.stats["teacher_reported"] = dict(sorted(run.reported_models.items()))  # model name reported -> traces
    if run.imported_from:
        b.stats["teacher_imported_from"] = dict(sorted(run.imported_from.items()))  # dataset ref@revision -> traces
    return writer.close()
