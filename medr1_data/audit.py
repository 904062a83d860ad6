"""Audit someone else's reasoning dataset: benchmark leaks with provenance, near-duplicates, verification, quality.

The dataset is read a batch at a time (`batches.py`), each batch mapped to canonical rows (`layouts.py`) and run
through the same stage functions a build uses: decontamination against a benchmark index built once, verification
where a gold answer exists, trace-quality scores. Only the question columns of every row are kept for the
near-duplicate pass at the end (spilled to a Parquet file in the output folder until then), and flagged rows are
written as they are found, so memory holds one batch of traces at a time. Writes `report.json`, `report.md` and
`flagged.parquet` to the output folder.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from medr1_data import Medr1Error, contracts
from medr1_data.batches import open_dataset
from medr1_data.contracts import check_input
from medr1_data.decontam import BenchmarkIndex, DecontamSettings, build_index, decontaminate
from medr1_data.dedup import DedupSettings, dedup
from medr1_data.layouts import map_rows, resolve_layout
from medr1_data.parts import writer_options
from medr1_data.progress import release_memory
from medr1_data.score import score
from medr1_data.verify import verify

FLAGGED = "flagged.parquet"
FLAGGED_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("row", pa.int64()),
        ("contam_benchmark", pa.string()),
        ("contam_item_id", pa.string()),
        ("contam_rule", pa.string()),
        ("contam_score", pa.float64()),
        ("question", pa.string()),
    ]
)
QUESTION_COLUMNS = ["id", "question", "options", "answer_label", "context"]
QUESTIONS_SPILL = "questions.tmp.parquet"  # removed once the near-duplicate pass has read it
EXCERPT_CHARS = 160


@dataclass
class Tally:
    """What the audit counted so far."""

    rows: int = 0
    mapped: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    flagged: Counter[tuple[str, str]] = field(default_factory=Counter)
    examples: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    verdicts: Counter[str] = field(default_factory=Counter)
    quality: Counter[str] = field(default_factory=Counter)
    with_gold: int = 0
    with_options: int = 0
    with_reasoning: int = 0


def _tally_contamination(t: Tally, flagged: pa.Table, examples: int) -> None:
    df = pl.from_arrow(flagged)
    for (bench, rule), n in Counter(zip(df["contam_benchmark"], df["contam_rule"], strict=True)).items():
        t.flagged[(bench, rule)] += n
    for row in df.head(examples * 4).iter_rows(named=True):
        kept = t.examples.setdefault(row["contam_benchmark"], [])
        if len(kept) < examples:
            kept.append(row)


def _flagged_rows(dec: pa.Table) -> pa.Table:
    hit = dec.filter(dec.column("contaminated"))
    ids = hit.column("id")
    return pa.table(
        {
            "id": ids,
            "row": pa.array([int(i.rsplit("/", 1)[1]) for i in ids.to_pylist()], pa.int64()),
            "contam_benchmark": hit.column("contam_benchmark"),
            "contam_item_id": hit.column("contam_item_id"),
            "contam_rule": hit.column("contam_rule"),
            "contam_score": hit.column("contam_score").cast(pa.float64()),
            "question": pc.utf8_slice_codeunits(hit.column("question"), 0, EXCERPT_CHARS),
        },
        schema=FLAGGED_SCHEMA,
    )


def _tally_traces(t: Tally, rows: pa.Table) -> None:
    has_options = pc.greater(pc.list_value_length(rows["options"]), 0)
    has_gold = pc.and_(pc.is_valid(rows.column("answer_label")), has_options)
    t.with_gold += pc.sum(has_gold).as_py() or 0
    t.with_options += pc.sum(has_options).as_py() or 0
    t.with_reasoning += rows.num_rows - rows.column("reasoning").null_count
    checked = score(verify(check_input(rows, contracts.TRACES, "audit rows")))
    gold = pl.from_arrow(checked.select(["verify_reason"]).filter(has_gold))
    t.verdicts.update(dict(gold.group_by("verify_reason").len().iter_rows()))
    flags = pl.from_arrow(checked.select(["quality"])).select(pl.col("quality").struct.field("flags").explode())
    t.quality.update(dict(flags.drop_nulls().group_by("flags").len().iter_rows()))


def _benchmark_index(benchmarks: list[tuple[str, pa.Table]]) -> BenchmarkIndex:
    if not benchmarks:
        raise Medr1Error("audit: no benchmark to check against (give --benchmark SPEC or --benchmark-dir DIR)")
    return build_index(benchmarks, DecontamSettings())


def _scan(spec: str, split: str, index: BenchmarkIndex, out: Path, rows: int, examples: int) -> tuple:
    """One pass over the dataset: decontam, verify, score per batch. (tally, input, layout, question tables)."""
    layout, source, batches = open_dataset(spec, split, rows)
    t, questions = Tally(), _QuestionSpill(out / QUESTIONS_SPILL)
    with pq.ParquetWriter(out / FLAGGED, FLAGGED_SCHEMA) as writer, questions:
        for batch in batches:
            layout = resolve_layout(layout, batch.schema.names, source.describe())
            mapped, rejected = map_rows(batch, layout, split, t.rows)
            t.rows += batch.num_rows
            t.mapped += mapped.num_rows
            t.rejected.update(rejected)
            if not mapped.num_rows:
                continue
            dec, _ = decontaminate(mapped, index)
            flagged = _flagged_rows(dec)
            writer.write_table(flagged)
            _tally_contamination(t, flagged, examples)
            _tally_traces(t, mapped)
            questions.write(mapped.select(QUESTION_COLUMNS))
            del mapped, dec, flagged
            release_memory()  # a batch's traces are Python strings for a moment: give their heap back
    if layout is None:
        raise Medr1Error(f"{source.describe()}: the dataset has no rows")
    return t, source, layout, questions


class _QuestionSpill:
    """The question columns of every mapped row, written to a Parquet file as the batches pass (not held in memory
    during the scan) and read back once for the near-duplicate pass."""

    def __init__(self, path: Path) -> None:
        self.path, self.writer = path, None

    def write(self, table: pa.Table) -> None:
        """Append a batch's question columns."""
        if self.writer is None:
            self.writer = pq.ParquetWriter(self.path, table.schema, **writer_options(table.schema))
        self.writer.write_table(table.cast(self.writer.schema))

    def read(self) -> pa.Table | None:
        """Every row written, or None when there was none."""
        return pq.read_table(self.path) if self.path.exists() else None

    def __enter__(self) -> _QuestionSpill:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.writer is not None:
            self.writer.close()


def _duplicates(questions: _QuestionSpill, examples: int) -> dict[str, Any]:
    table = questions.read()
    questions.path.unlink(missing_ok=True)
    if table is None or not table.num_rows:
        return {"questions": 0, "clusters_with_duplicates": 0, "duplicate_rows": 0, "examples": []}
    out = pl.from_arrow(dedup(table, DedupSettings()).select(["id", "dup_cluster", "dup_keep"]))
    del table
    dups = out.filter(pl.col("dup_cluster").is_duplicated())
    sample = dups.filter(~pl.col("dup_keep")).head(examples)
    return {
        "questions": out.height,
        "clusters_with_duplicates": dups["dup_cluster"].n_unique(),
        "duplicate_rows": int((~out["dup_keep"]).sum()),
        "examples": [{"id": i, "duplicate_of": c} for i, c in sample.select("id", "dup_cluster").iter_rows()],
    }


def audit(
    spec: str,
    benchmarks: list[tuple[str, pa.Table]],
    out: Path,
    *,
    split: str = "train",
    batch_rows: int = 50_000,
    examples: int = 5,
) -> dict[str, Any]:
    """Audit one dataset against the benchmarks; write the report files to `out` and return `report.json`'s data."""
    start = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    index = _benchmark_index(benchmarks)
    t, source, layout, questions = _scan(spec, split, index, out, batch_rows, examples)
    dups = _duplicates(questions, examples)
    per_bench: dict[str, dict[str, Any]] = {
        name: {"items": n, "rows_flagged": 0, "by_rule": {}, "examples": t.examples.get(name, [])}
        for name, n in index.counts.items()
    }
    for (bench, rule), n in sorted(t.flagged.items()):
        per_bench[bench]["rows_flagged"] += n
        per_bench[bench]["by_rule"][rule] = n
    correct = t.verdicts.get("correct", 0)
    report = {
        "dataset": source.describe(),
        "layout": layout.name if not layout.mapping else f"columns {layout.mapping}",
        "split": split,
        "rows": t.rows,
        "rows_mapped": t.mapped,
        "rows_not_mapped": dict(t.rejected),
        "rows_with_options": t.with_options,
        "rows_with_gold": t.with_gold,
        "rows_with_reasoning": t.with_reasoning,
        "contamination": {"rows_flagged": sum(t.flagged.values()), "benchmarks": per_bench},
        "duplicates": dups,
        "verification": {
            "rows": t.with_gold,
            "accuracy": round(correct / t.with_gold, 4) if t.with_gold else None,
            "verdicts": dict(sorted(t.verdicts.items())),
        },
        "quality_flags": dict(sorted(t.quality.items())),
        "seconds": round(time.perf_counter() - start, 1),
    }
    (out / "report.json").write_text(json.dumps(report, indent=2, default=str) + "\n", encoding="utf-8")
    from medr1_data.audit_report import render

    (out / "report.md").write_text(render(report), encoding="utf-8")
    return report
