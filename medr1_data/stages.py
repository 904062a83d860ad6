"""The stages of a build: each maps a table to a table and records its numbers in the `Build`.

ingest -> decontam -> dedup -> distill -> verify -> score -> select -> shards -> card. A question that decontam or
dedup flags stays in the table with its `drop_reason` (sample 0, no trace, never sent to the teacher) so that every
drop is counted; rows leave the table only when the shards stage writes the release and `dropped.parquet`.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from medr1_data import Medr1Error, __version__, contracts
from medr1_data import sources as source_registry
from medr1_data.contracts import check_input
from medr1_data.progress import BuildProgress
from medr1_data.prompts import get_template
from medr1_data.recipe import Recipe
from medr1_data.schema import REJECT_SCHEMA, TRACE_FIELDS, normalize
from medr1_data.score import score
from medr1_data.select import drop_counts, select, unanswered_questions
from medr1_data.shards import chat_columns, take_rows, with_columns, write_manifest, write_shards
from medr1_data.teacher.run import require_complete, run_distill
from medr1_data.verify import verify

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

    def log(self, message: str) -> None:
        """A progress line on stderr (silent with --quiet)."""
        if self.quiet:
            return
        if self.progress is not None:
            self.progress.message(f"[medr1] {message}")
        else:
            print(f"[medr1] {message}", file=sys.stderr, flush=True)


def unreachable(url: str) -> str | None:
    """Why `url`'s host cannot be reached from here (a TCP connect to its port), or None."""
    parts = urlparse(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        socket.create_connection((parts.hostname or "", port), timeout=5).close()
    except OSError as e:
        return f"{parts.hostname} cannot be reached ({type(e).__name__})"
    return None


def hub_unreachable() -> str | None:
    """Why the Hub cannot be reached from here (HF_HUB_OFFLINE, or no route to its host), or None."""
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        return "HF_HUB_OFFLINE is set"
    return unreachable(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")


def require_hub(b: Build, needs: list[str], local_way: str) -> None:
    """Stop at once, naming what needs the Hub and how to run from local files, when the Hub is out of reach."""
    if not needs:
        return
    why = hub_unreachable()
    if why:
        raise Medr1Error(
            f"recipe {b.recipe.name} reads {', '.join(needs)} from the Hub, but {why}; to run from local files, "
            f"{local_way}"
        )


def stage_ingest(_: pa.Table | None, b: Build) -> pa.Table:
    """Read every source split of the recipe into one canonical table; rejects go to `rejects.parquet`."""
    hub = [f"source {s.spec}/{s.split}" for s in b.recipe.sources if b.recipe.spec_path(s.spec) is None]
    require_hub(b, hub, "give each source as NAME=PATH, e.g. --set 'sources=[{spec: medqa=data/medqa, split: train}]'")
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


def stage_decontam(table: pa.Table, b: Build) -> pa.Table:
    """`contam_*` columns against every benchmark of the recipe; contaminated questions get a drop_reason."""
    from medr1_data.benchmarks import load_benchmark
    from medr1_data.benchmarks import resolve as resolve_benchmark
    from medr1_data.decontam import decontaminate

    r = b.recipe
    folder = r.resolve(r.decontam.benchmark_dir) if r.decontam.benchmark_dir else None
    hub = [f"benchmark {spec}" for spec in r.decontam.benchmarks if resolve_benchmark(spec, folder)[3] is None]
    require_hub(b, hub, "set decontam.benchmark_dir (or MEDR1_BENCHMARK_DIR) to a folder of the test files")
    benches = []
    for spec in r.decontam.benchmarks:
        path = r.spec_path(spec)
        name, loaded = load_benchmark(f"{spec.partition('=')[0]}={path}" if path else spec, folder)
        benches.append((name, loaded.table))
    table = check_input(table, contracts.QUESTIONS, "decontam stage input")
    out, report = decontaminate(table, benches, r.decontam.parsed())
    b.stats["decontam"] = report
    (b.build_dir / "decontam_report.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    b.log(f"decontam: {report['rows_flagged']} of {report['rows']} rows match a benchmark item")
    return _mark_dropped(out, pl.col("contaminated"), "contaminated")


def stage_dedup(table: pa.Table, b: Build) -> pa.Table:
    """`dup_cluster` for every question; all but one question per cluster get a drop_reason."""
    from medr1_data.dedup import dedup

    settings = b.recipe.dedup.parsed()
    out = dedup(check_input(table, contracts.QUESTIONS, "dedup stage input"), settings)
    clusters = pl.from_arrow(out.select(["dup_cluster", "dup_keep"]))
    b.stats["dedup"] = {
        "questions": clusters.height,
        "clusters_with_duplicates": clusters.filter(pl.col("dup_cluster").is_duplicated())["dup_cluster"].n_unique(),
        "duplicates": int((~clusters["dup_keep"]).sum()),
        "parameters": dataclasses.asdict(settings),
    }
    return _mark_dropped(out, ~pl.col("dup_keep"), "near_duplicate")


def require_teacher(recipe: Recipe) -> None:
    """Stop at once when the recipe's teacher cannot answer (no key, no route) and its cache holds no response."""
    from medr1_data.teacher import ResponseCache
    from medr1_data.teacher.client import api_key

    t = recipe.teacher
    cache = ResponseCache(recipe.resolve(t.cache))
    if t.offline or t.endpoint in ("recorded", "dataset") or (cache.path.is_file() and cache.path.stat().st_size):
        return
    local = "to run without a teacher, import responses into the cache or set teacher.offline=true"
    try:
        api_key(t)
        why = unreachable(t.url())
    except Medr1Error as e:
        why = str(e)
    if why:
        raise Medr1Error(f"recipe {recipe.name} asks the teacher {t.model} at {t.url()}, but {why}; {local}")


def _distill(table: pa.Table, teacher: Any, b: Build) -> pa.Table:
    """The traces of every row (all responses present), and the model names the servers reported into `b.stats`."""
    result = require_complete(run_distill(table, teacher, quiet=b.quiet), teacher)
    b.stats["teacher_reported"] = result.reported_models  # model name the server reported -> traces
    return result.table


def stage_distill(table: pa.Table, b: Build) -> pa.Table:
    """Teacher traces, one row per (question, sample); questions already dropped are not sent (nothing is paid)."""
    teacher = dataclasses.replace(b.recipe.teacher, cache=str(b.recipe.resolve(b.recipe.teacher.cache)))
    # Questions go in by id, so the traces come out in release order (id, sample_idx) whatever the sources' order.
    table = check_input(table, contracts.DISTILL, "distill stage input")
    if "drop_reason" not in table.column_names:
        return _distill(table.sort_by("id"), teacher, b)
    active = table.filter(pa.compute.is_null(table.column("drop_reason"))).sort_by("id")
    skipped = table.filter(pa.compute.is_valid(table.column("drop_reason")))
    traces = _distill(active.drop_columns(["drop_reason"]), teacher, b)
    absent = pc.if_else(pc.is_valid(traces.column("error")), "not_in_dataset", pa.scalar(None, pa.string()))
    traces = traces.append_column("drop_reason", absent)  # only a dataset teacher leaves rows without a response
    # A dropped question stays as one row (sample 0, no trace) so that its drop is counted and written out.
    for f in TRACE_FIELDS:
        value = (
            pa.array([0] * skipped.num_rows, f.type) if f.name == "sample_idx" else pa.nulls(skipped.num_rows, f.type)
        )
        skipped = skipped.append_column(f, value)
    return pa.concat_tables([traces, skipped.select(traces.column_names).cast(traces.schema)])


def stage_verify(table: pa.Table, b: Build) -> pa.Table:
    """`pred_label`, `is_correct`, `verify_reason`."""
    return verify(check_input(table, contracts.TRACES, "verify stage input"))


def stage_score(table: pa.Table, b: Build) -> pa.Table:
    """The `quality` struct and `quality_score` of every trace."""
    out = score(check_input(table, contracts.VERIFIED, "score stage input"), b.recipe.score)
    flags = pl.from_arrow(out.select(["quality"])).select(pl.col("quality").struct.field("flags").explode())
    b.stats["quality_flags"] = dict(flags.drop_nulls().group_by("flags").len().sort("flags").iter_rows())
    b.stats["quality_weights"] = dict(b.recipe.score.weights)
    return out


def stage_select(table: pa.Table, b: Build) -> pa.Table:
    """`drop_reason` for every trace that is not kept."""
    return select(table, b.recipe.select)


def _write_rows(table: pa.Table, rows: pa.Array, path: Path, group_rows: int = 16_384) -> None:
    """The rows at `rows` of `table` as one Parquet file, taken `group_rows` at a time (one row group each)."""
    schema = normalize(table.slice(0, 0)).schema
    with pq.ParquetWriter(path, schema) as writer:
        for start in range(0, max(1, len(rows)), group_rows):
            writer.write_table(normalize(take_rows(table, rows.slice(start, group_rows))))


def stage_shards(table: pa.Table, b: Build) -> pa.Table:
    """Write kept rows as release shards (with their chat columns) plus manifest; dropped rows and unanswered
    questions to the build folder."""
    internal = ["drop_reason", "error", "dup_keep", "contam_benchmark", "contam_item_id", "contam_score", "contam_rule"]
    # No copy of the table is made: kept and dropped rows are taken from it a shard or a row group at a time.
    is_kept = pc.is_null(table.column("drop_reason")).combine_chunks()
    if not pc.any(is_kept).as_py():
        counts = ", ".join(f"{k} {v}" for k, v in drop_counts(table).items())
        raise Medr1Error(f"no trace was kept ({table.num_rows} rows; dropped: {counts}); no release was written")
    _write_rows(table, pc.indices_nonzero(pc.invert(is_kept)), b.build_dir / "dropped.parquet")
    unanswered = unanswered_questions(table)
    pq.write_table(normalize(unanswered), b.build_dir / "unanswered.parquet")
    release = table.drop_columns([c for c in internal if c in table.column_names])
    # Each shard gets its rows' `messages` and `messages_think_inline`, built from them as the shard is written.
    derive = functools.partial(chat_columns, template=get_template(b.recipe.teacher.template))
    schema = normalize(with_columns(release.slice(0, 0), derive)).schema
    files = write_shards(release, b.out, b.recipe.output, rows=pc.indices_nonzero(is_kept), derive=derive)
    manifest = write_manifest(b.out, files, schema, b.recipe.raw, b.recipe.sha256, b.recipe.version)
    from medr1_data.card import length_stats

    df = pl.from_arrow(
        pa.table(
            {
                "id": table.column("id"),
                "source": table.column("source"),
                "source_split": table.column("source_split"),
                "drop_reason": table.column("drop_reason"),
            }
        )
    )
    kept = df.filter(pl.col("drop_reason").is_null())
    not_sent = pl.col("drop_reason").is_in(PRE_TEACHER_DROPS).fill_null(False)
    drops = drop_counts(table)
    b.stats.update(
        configs=manifest["configs"],
        lengths=length_stats(release, mask=is_kept),
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
    return table


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


def stage_card(table: pa.Table, b: Build) -> pa.Table:
    """Render the dataset card from the build's numbers."""
    from medr1_data.card import render_card

    render_card(b.out, b.stats["schema"], card_inputs(b))
    return table


STAGES: dict[str, Callable[[pa.Table | None, Build], pa.Table]] = {
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


