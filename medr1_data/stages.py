"""The stages of a build: each maps a table to a table and records its numbers in the `Build`.

ingest -> decontam -> dedup -> distill -> verify -> score -> select -> shards -> card. A question that decontam or
dedup flags stays in the table with its `drop_reason` (sample 0, no trace, never sent to the teacher) so that every
drop is counted; rows leave the table only when the shards stage writes the release and `dropped.parquet`.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from medr1_data import Medr1Error, __version__, contracts
from medr1_data import sources as source_registry
from medr1_data.card import length_stats, text_lengths
from medr1_data.contracts import check_input
from medr1_data.distill_stage import stage_distill
from medr1_data.parts import Parts, PartsWriter, RowGroupWriter
from medr1_data.progress import BuildProgress, release_memory
from medr1_data.prompts import get_template
from medr1_data.reach import require_hub
from medr1_data.recipe import Recipe
from medr1_data.schema import REJECT_SCHEMA, VERIFY_FIELDS, normalize
from medr1_data.score import ScoreSettings, score
from medr1_data.select import SelectSettings, select, unanswered_questions
from medr1_data.shards import ShardWriter, chat_columns, sort_order, take_rows, write_manifest
from medr1_data.verify import verify
from medr1_data.workers import PartFn, PartJob, Pool, run_job

BATCH_ROWS = 16_384  # with two workers, each holds one part of this size (about 0.6 GB above its 0.25 GB base)
QUESTION_PART_ROWS = 65_536  # rows per part of the question stages (fixed: their checkpoints do not depend on it)
# question-level drops: made before any request is paid, or (a dataset teacher) no trace of the question exists
PRE_TEACHER_DROPS = ("contaminated", "near_duplicate", "not_in_dataset")


@dataclass
class Build:
    """The state of one build run: its recipe, output folders and the numbers the report and card need."""

    recipe: Recipe
    out: Path
    build_dir: Path
    quiet: bool = False
    stats: dict[str, Any] = field(default_factory=dict)
    report: list[dict[str, Any]] = field(default_factory=list)
    progress: BuildProgress | None = None
    batch_rows: int = BATCH_ROWS  # traces per part of the trace stages (memory holds about one part)
    checkpoints: Any = None  # the build's `Checkpoints`, set by the runner for the stage that runs
    pool: Pool = field(default_factory=Pool)  # the worker processes of the part-by-part stages
    stage: str = ""

    def writer(self, base: Parts | None = None, own: list[str] | None = None) -> PartsWriter:
        """A writer of the running stage's output table (with a `base`: only the `own` columns are stored)."""
        return self.checkpoints.writer(self.stage, base, own)

    def progress_rows(self, rows: int) -> None:
        """`rows` more rows of the running stage are done; memory freed by the part is handed back."""
        if self.progress is not None:
            self.progress.advance(rows)
        release_memory()

    def log(self, message: str) -> None:
        """A progress line on stderr (silent with --quiet)."""
        if self.quiet:
            return
        if self.progress is not None:
            self.progress.message(f"[medr1] {message}")
        else:
            print(f"[medr1] {message}", file=sys.stderr, flush=True)


def stage_ingest(_: Parts | None, b: Build) -> Parts:
    """Read every source split of the recipe into one canonical table, in release order (by id), as parts of
    `QUESTION_PART_ROWS`; rejects go to `rejects.parquet`."""
    table = ingest(b)
    order = sort_order(table)
    writer = b.writer()
    for start in range(0, max(len(order), 1), QUESTION_PART_ROWS):
        writer.write(take_rows(table, order[start : start + QUESTION_PART_ROWS]))
    return writer.close()


def recipe_questions(recipe: Recipe) -> pa.Table:
    """The recipe's questions as the ingest stage reads them, outside a build (its rejects go to a scratch folder)."""
    with tempfile.TemporaryDirectory() as tmp:
        return ingest(Build(recipe, Path(tmp), Path(tmp), quiet=True))


def ingest(b: Build) -> pa.Table:
    """Every source split of the recipe as one canonical table; rejects go to `rejects.parquet`, counts to stats."""
    hub = [f"source {s.spec}/{s.split}" for s in b.recipe.sources if b.recipe.spec_path(s.spec) is None]
    way = "give each source as NAME=PATH, e.g. --set 'sources=[{spec: medqa=data/medqa, split: train}]'"
    require_hub(b.recipe, hub, way)
    tables, rejects, per_source = [], [], []
    for s in b.recipe.sources:
        name, path = source_registry.parse_spec(s.spec)
        source = source_registry.get_source(name)
        loaded = source_registry.load_rows(source, s.split, b.recipe.resolve(str(path)) if path else None)
        tables.append(loaded.table)
        rejects.append(loaded.rejects)
        per_source.append(
            {
                "name": name,
                "split": s.split,
                "license": source.license,
                "homepage": source.homepage,
                "rows_read": loaded.table.num_rows + loaded.rejects.num_rows,
                "rejected": loaded.rejects.num_rows,
                "reject_reasons": loaded.reject_counts(),
            }
        )
        b.log(
            f"ingest {name}/{s.split}: {loaded.table.num_rows} questions, {loaded.rejects.num_rows} rejected "
            f"{loaded.reject_counts() or ''}".rstrip()
        )
    table = pa.concat_tables(tables)
    all_rejects = pa.concat_tables(rejects) if rejects else REJECT_SCHEMA.empty_table()
    pq.write_table(all_rejects, b.build_dir / "rejects.parquet")
    b.stats["sources"] = per_source
    b.stats["reject_reasons"] = source_registry.Loaded(table, all_rejects).reject_counts()
    return table


def _mark_dropped(table: pa.Table, reason: pl.Expr, name: str) -> pa.Table:
    """Fill `drop_reason` with `name` where `reason` holds and no earlier stage gave a reason."""
    df = pl.from_arrow(table)
    current = pl.col("drop_reason") if "drop_reason" in df.columns else pl.lit(None, pl.String)
    df = df.with_columns(pl.coalesce(current, pl.when(reason).then(pl.lit(name))).alias("drop_reason"))
    return df.to_arrow()


def decontam_part(table: pa.Table, index: Any) -> tuple[pa.Table, tuple[pa.Table, int]]:
    """One part of the decontam stage against `index` (a `BenchmarkIndex`, or the file `save_index` wrote): the
    part with its flags, and the flags and questions checked for the report."""
    from medr1_data.decontam import decontaminate, load_index

    out, part_report = decontaminate(check_input(table, contracts.QUESTIONS, "decontam stage input"), load_index(index))
    flags = out.select(["contaminated", "contam_benchmark", "contam_rule"])
    return _mark_dropped(out, pl.col("contaminated"), "contaminated"), (flags, part_report["questions_checked"])


def stage_decontam(parts: Parts, b: Build) -> Parts:
    """`contam_*` columns against every benchmark of the recipe; contaminated questions get a drop_reason."""
    from medr1_data.benchmarks import load_benchmark
    from medr1_data.benchmarks import resolve as resolve_benchmark
    from medr1_data.decontam import OUT_FIELDS as DECONTAM_FIELDS
    from medr1_data.decontam import build_index, save_index
    from medr1_data.decontam import report as decontam_report

    r = b.recipe
    folder = r.resolve(r.decontam.benchmark_dir) if r.decontam.benchmark_dir else None
    hub = [f"benchmark {spec}" for spec in r.decontam.benchmarks if resolve_benchmark(spec, folder)[3] is None]
    require_hub(b.recipe, hub, "set decontam.benchmark_dir (or MEDR1_BENCHMARK_DIR) to a folder of the test files")
    benches = []
    for spec in r.decontam.benchmarks:
        path = r.spec_path(spec)
        name, loaded = load_benchmark(f"{spec.partition('=')[0]}={path}" if path else spec, folder)
        benches.append((name, loaded.table))
    index = build_index(benches, r.decontam.parsed())
    start = time.perf_counter()
    shipped = save_index(index, b.build_dir / "decontam-index.pickle") if b.pool.workers > 1 else index
    read = [*_columns(contracts.QUESTIONS), "drop_reason"]
    own = [f.name for f in DECONTAM_FIELDS] + ["drop_reason"]
    written, counts = _map_parts(parts, b, functools.partial(decontam_part, index=shipped), read, own)
    if isinstance(shipped, Path):
        shipped.unlink()
    flags, questions = [f for f, _ in counts], sum(n for _, n in counts)
    flagged = pl.from_arrow(pa.concat_tables(flags))
    report = decontam_report(index, flagged, questions, time.perf_counter() - start, index.settings)
    b.stats["decontam"] = report
    (b.build_dir / "decontam_report.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    b.log(f"decontam: {report['rows_flagged']} of {report['rows']} rows match a benchmark item")
    return written


def _write_questions(table: pa.Table, parts: Parts, b: Build) -> Parts:
    """A question stage's output: its new columns and `drop_reason` over its input's parts."""
    writer = b.writer(base=parts, own=["drop_reason"])
    writer.write_aligned(table)
    return writer.close()


def stage_dedup(parts: Parts, b: Build) -> Parts:
    """`dup_cluster` for every question; all but one question per cluster get a drop_reason."""
    from medr1_data.dedup import dedup

    settings = b.recipe.dedup.parsed()
    read = [*_columns(contracts.QUESTIONS), "source", "drop_reason"]  # what the keep rule and the output need
    out = dedup(check_input(parts.read(read), contracts.QUESTIONS, "dedup stage input"), settings)
    out = out.select([c for c in ("id", "dup_cluster", "dup_keep", "drop_reason") if c in out.column_names])
    clusters = pl.from_arrow(out.select(["dup_cluster", "dup_keep"]))
    b.stats["dedup"] = {
        "questions": clusters.height,
        "clusters_with_duplicates": clusters.filter(pl.col("dup_cluster").is_duplicated())["dup_cluster"].n_unique(),
        "duplicates": int((~clusters["dup_keep"]).sum()),
        "parameters": dataclasses.asdict(settings),
    }
    return _write_questions(_mark_dropped(out, ~pl.col("dup_keep"), "near_duplicate"), parts, b)


def _map_parts(parts: Parts, b: Build, fn: PartFn, read: list[str], own: list[str]) -> tuple[Parts, list[Any]]:
    """A stage part by part, in the build's workers: `fn` over the `read` columns of each part; its `own` columns
    are stored. Returns the table and what `fn` gave for each part."""
    writer = b.writer(base=parts, own=own)
    jobs = (PartJob(parts, i, read, fn, own, writer.path(i)) for i in range(len(parts)))
    extras = []
    for result in b.pool.map(run_job, jobs, len(parts)):
        writer.layout(result.names)
        writer.add(result.entry)
        extras.append(result.extra)
        b.progress_rows(result.entry["rows"])
    return writer.close(), extras


def _columns(contract: contracts.Contract) -> list[str]:
    return [*contract.required, *contract.optional]


def verify_part(table: pa.Table) -> tuple[pa.Table, None]:
    """One part of the verify stage."""
    return verify(check_input(table, contracts.TRACES, "verify stage input")), None


def stage_verify(parts: Parts, b: Build) -> Parts:
    """`pred_label`, `is_correct`, `verify_reason`, a part at a time."""
    return _map_parts(parts, b, verify_part, _columns(contracts.TRACES), [f.name for f in VERIFY_FIELDS])[0]


def score_part(table: pa.Table, settings: ScoreSettings) -> tuple[pa.Table, Counter[str]]:
    """One part of the score stage, and how often each quality flag was raised in it."""
    out = score(check_input(table, contracts.VERIFIED, "score stage input"), settings)
    raised = pl.from_arrow(out.select(["quality"])).select(pl.col("quality").struct.field("flags").explode())
    return out, Counter(dict(raised.drop_nulls().group_by("flags").len().iter_rows()))


def stage_score(parts: Parts, b: Build) -> Parts:
    """The `quality` struct and `quality_score` of every trace, a part at a time."""
    fn = functools.partial(score_part, settings=b.recipe.score)
    out, counts = _map_parts(parts, b, fn, _columns(contracts.VERIFIED), ["quality", "quality_score"])
    b.stats["quality_flags"] = dict(sorted(sum(counts, Counter()).items()))
    b.stats["quality_weights"] = dict(b.recipe.score.weights)
    return out


SELECT_COLUMNS = ["id", "sample_idx", "verify_reason", "finish_reason", "reasoning", "drop_reason", "quality"]


def select_part(table: pa.Table, settings: SelectSettings) -> tuple[pa.Table, None]:
    """One part of the select stage."""
    return select(table, settings), None


def stage_select(parts: Parts, b: Build) -> Parts:
    """`drop_reason` for every trace that is not kept (a question's samples are in one part)."""
    settings = b.recipe.select
    # With one sample a question and thoughtless traces kept, no rule reads the thinking: it is not read at all.
    text = b.recipe.teacher.samples > 1 or settings.no_thinking == "drop"
    read = [c for c in [*SELECT_COLUMNS, "quality_score"] if text or c != "reasoning"]
    return _map_parts(parts, b, functools.partial(select_part, settings=settings), read, ["drop_reason"])[0]


INTERNAL = ["drop_reason", "error", "dup_keep", "contam_benchmark", "contam_item_id", "contam_score", "contam_rule"]


def _write_release(parts: Parts, b: Build) -> tuple[list[dict[str, Any]], pa.Schema, pa.Table]:
    """Kept rows (with their chat columns) to the release shards, dropped rows to `dropped.parquet`, a part at a
    time; returns the shards' manifest entries, the release schema and the kept rows' lengths."""
    derive = functools.partial(chat_columns, template=get_template(b.recipe.teacher.template))
    shards = ShardWriter(b.out, b.recipe.output, derive)
    dropped = RowGroupWriter(b.build_dir / "dropped.parquet")
    lengths = []
    try:
        for table in parts.tables():
            is_kept = pc.is_null(table.column("drop_reason"))
            dropped.write(table.filter(pc.invert(is_kept)))
            kept = table.filter(is_kept)
            shards.write(kept.drop_columns([c for c in INTERNAL if c in kept.column_names]))
            lengths.append(text_lengths(kept))
            b.progress_rows(table.num_rows)
            del table, kept
    finally:
        dropped.close()
    files = shards.close()
    assert shards.schema is not None
    return files, shards.schema, pa.concat_tables(lengths)


def stage_shards(parts: Parts, b: Build) -> None:
    """Write kept rows as release shards (with their chat columns) plus manifest; dropped rows and unanswered
    questions to the build folder."""
    df = pl.from_arrow(parts.read(["id", "source", "source_split", "drop_reason"]))
    kept = df.filter(pl.col("drop_reason").is_null())
    drops = dict(df.drop_nulls("drop_reason").group_by("drop_reason").len().sort("drop_reason").iter_rows())
    if not kept.height:
        counts = ", ".join(f"{k} {v}" for k, v in drops.items())
        raise Medr1Error(f"no trace was kept ({df.height} rows; dropped: {counts}); no release was written")
    unanswered = unanswered_questions(df.select("id", "source", "drop_reason").to_arrow())
    pq.write_table(normalize(unanswered), b.build_dir / "unanswered.parquet")
    files, schema, lengths = _write_release(parts, b)
    manifest = write_manifest(b.out, files, schema, b.recipe.raw, b.recipe.sha256, b.recipe.version)
    not_sent = pl.col("drop_reason").is_in(PRE_TEACHER_DROPS).fill_null(False)
    b.stats.update(
        configs=manifest["configs"],
        lengths=length_stats(lengths),
        rows=kept.height,
        bytes=sum(f["bytes"] for f in files),
        arrow_bytes=sum(f["arrow_bytes"] for f in files),
        files=files,
        traces_total=df.filter(~not_sent).height,  # every trace the teacher returned, whatever its shape
        questions_not_sent=df.filter(not_sent).height,
        questions_total=df["id"].n_unique(),
        questions_kept=kept["id"].n_unique(),
        questions_unanswered=unanswered.num_rows,
        drop_reasons=drops,
        trace_drops={k: v for k, v in drops.items() if k not in PRE_TEACHER_DROPS},
        question_drops={k: v for k, v in drops.items() if k in PRE_TEACHER_DROPS},
        kept_by_source={
            f"{src}/{split}": n
            for src, split, n in kept.group_by("source", "source_split").agg(pl.col("id").n_unique()).iter_rows()
        },
        schema=schema,
    )


def card_inputs(b: Build) -> dict[str, Any]:
    """Everything the card renders: the build's numbers (`b.stats`) plus what the recipe says about the release."""
    from medr1_data.card import template_version
    from medr1_data.shards import schema_doc

    r, s = b.recipe, b.stats
    keep = r.select
    if keep.keep != "best":
        selection = f"up to {keep.max_per_question} distinct correct samples"
    elif "quality_score" in s["schema"].names:
        selection = "the one with the best quality score (ties: shorter reasoning, then lower sample index)"
    else:
        selection = "the one with the shortest reasoning (ties: lower sample index)"
    for src in s["sources"]:
        src["kept"] = s["kept_by_source"].get(f"{src['name']}/{src['split']}", 0)
    return {
        **s,
        "split": r.output.split,
        "pretty_name": r.card.pretty_name,
        "repo_id": r.card.repo_id,
        "license": r.card.license,
        "summary": r.card.summary,
        "demo_notice": r.card.demo_notice,
        "version": r.version,
        "recipe_name": r.name,
        "recipe_sha256": r.sha256,
        "library_version": __version__,
        "teacher": r.teacher.public(),
        "teacher_reported_names": [n for n in s.get("teacher_reported", {}) if n != "(not recorded)"],
        "template_version": template_version(r.teacher.template),
        "system_prompt": get_template(r.teacher.template).system,
        "user_template": get_template(r.teacher.template).user,
        "selection": selection,
        "min_quality": keep.min_quality,
        "columns": schema_doc(s["schema"]),
        "changelog": r.card.changelog or [f"v{r.version}: first release."],
    }


def stage_card(_: Parts | None, b: Build) -> None:
    """Render the dataset card from the build's numbers."""
    from medr1_data.card import render_card

    render_card(b.out, b.stats["schema"], card_inputs(b))


STAGES: dict[str, Callable[[Any, Build], Parts | None]] = {
    "ingest": stage_ingest,
    "decontam": stage_decontam,
    "dedup": stage_dedup,
    "distill": stage_distill,
    "verify": stage_verify,
    "score": stage_score,
    "select": stage_select,
    "shards": stage_shards,
    "card": stage_card,
}
