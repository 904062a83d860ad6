"""YAML recipes: read into dataclasses, then run as an ordered list of stages that each map a table to a table.

The stage order is ingest -> decontam -> dedup -> distill -> verify -> score -> select -> shards -> card. The design
sketch put the teacher first and decontamination and dedup after selection; running them on the questions before
the teacher means no request is paid for a benchmark item or a duplicate, and the later stages see fewer rows. A
question they flag stays in the table with its `drop_reason` (sample 0, no trace) so that every drop is counted.

Each stage's output is checkpointed in the build folder (`medr1_data/checkpoints.py`), keyed by the previous stage's
key, the recipe settings the stage reads (`stage_settings`), fingerprints of the files it reads and the library
(version and code). A rerun serves every stage whose checkpoint is still valid from it and runs the rest: a changed
threshold reruns from the stage that reads it, a build killed in a stage starts again at that stage, and the
teacher's response cache (`medr1_data/distill.py`) makes sure no response is requested twice.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import yaml

from medr1_data import Medr1Error, __version__, canonical_sha256
from medr1_data import sources as source_registry
from medr1_data.benchmarks import DEFAULT_BENCHMARKS
from medr1_data.checkpoints import Checkpoints, decode_stats, encode_stats, fingerprint, stage_key
from medr1_data.distill import TeacherSettings, distill
from medr1_data.progress import BuildProgress, PeakRSS
from medr1_data.prompts import get_template
from medr1_data.schema import REJECT_SCHEMA, TRACE_FIELDS, normalize
from medr1_data.score import ScoreSettings, score
from medr1_data.select import SelectSettings, drop_counts, select, unanswered_questions
from medr1_data.shards import ShardSettings, sha256_file, take_rows, write_manifest, write_shards
from medr1_data.verify import verify

RECIPES_DIR = Path(__file__).parent / "recipes"
PRE_TEACHER_DROPS = ("contaminated", "near_duplicate")  # question-level drops made before any request is paid


@dataclass
class SourceSpec:
    """One source split to ingest: `spec` is `NAME` (Hub) or `NAME=PATH` (relative to the recipe file)."""

    spec: str
    split: str = "train"


@dataclass
class DecontamRecipe:
    """The recipe's `decontam` section: benchmark specs (relative paths resolved) and DecontamSettings overrides."""

    benchmarks: list[str] = field(default_factory=lambda: list(DEFAULT_BENCHMARKS))
    benchmark_dir: str | None = None
    settings: dict[str, Any] = field(default_factory=dict)


@dataclass
class DedupRecipe:
    """The recipe's `dedup` section: DedupSettings overrides."""

    settings: dict[str, Any] = field(default_factory=dict)


@dataclass
class CardSettings:
    """The recipe's `card` section."""

    pretty_name: str = "MedR1 reasoning"
    repo_id: str = "medr1/reasoning"
    license: str = "mit"
    summary: str = ""
    demo_notice: str = ""
    changelog: list[str] = field(default_factory=list)


@dataclass
class Recipe:
    """A whole build: sources, teacher, selection, output and card, plus the stages to run in order."""

    name: str
    version: str
    sources: list[SourceSpec]
    teacher: TeacherSettings = field(default_factory=TeacherSettings)
    decontam: DecontamRecipe = field(default_factory=DecontamRecipe)
    dedup: DedupRecipe = field(default_factory=DedupRecipe)
    score: ScoreSettings = field(default_factory=ScoreSettings)
    select: SelectSettings = field(default_factory=SelectSettings)
    output: ShardSettings = field(default_factory=ShardSettings)
    card: CardSettings = field(default_factory=CardSettings)
    stages: list[str] = field(
        default_factory=lambda: [
            "ingest",
            "decontam",
            "dedup",
            "distill",
            "verify",
            "score",
            "select",
            "shards",
            "card",
        ]
    )
    description: str = ""
    base_dir: Path = Path(".")
    raw: dict[str, Any] = field(default_factory=dict)

    @property
    def sha256(self) -> str:
        """SHA-256 of the recipe as read (overrides applied), canonical JSON."""
        return canonical_sha256(self.raw)

    def resolve(self, path: str) -> Path:
        """A path from the recipe, relative to the recipe file's folder unless absolute."""
        p = Path(path).expanduser()
        return p if p.is_absolute() else self.base_dir / p


def _build(cls: type, data: Any, where: str) -> Any:
    if not isinstance(data, dict):
        raise Medr1Error(f"{where}: expected a mapping, got {type(data).__name__}")
    check_keys(cls, data, where)
    return cls(**data)


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply `KEY.PATH=VALUE` overrides (VALUE parsed as YAML) to a recipe mapping."""
    raw = copy.deepcopy(raw)
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise Medr1Error(f"override '{item}': expected KEY=VALUE, e.g. teacher.samples=4")
        node = raw
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise Medr1Error(f"override '{item}': '{part}' is not a section")
        node[parts[-1]] = yaml.safe_load(value)
    return raw


def find_recipe(name_or_path: str) -> Path:
    """A bundled recipe by name (`demo`, `medr1-170k`) or a YAML file path."""
    bundled = RECIPES_DIR / f"{name_or_path}.yaml"
    if bundled.exists():
        return bundled
    path = Path(name_or_path)
    if path.exists():
        return path
    names = ", ".join(sorted(p.stem for p in RECIPES_DIR.glob("*.yaml")))
    raise Medr1Error(f"{name_or_path}: no such recipe file or bundled recipe (bundled: {names})")


def load_recipe(name_or_path: str = "demo", overrides: list[str] | None = None) -> Recipe:
    """Read a recipe into dataclasses, apply overrides, and check its keys and stage names."""
    path = find_recipe(name_or_path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise Medr1Error(f"{path}: not valid YAML: {str(e).splitlines()[0]}") from None
    raw = apply_overrides(raw or {}, overrides or [])
    where = str(path)
    data = dict(raw)
    for key in ("name", "version", "sources"):
        if key not in data:
            raise Medr1Error(f"{where}: missing key '{key}'")
    if not isinstance(data["sources"], list) or not data["sources"]:
        raise Medr1Error(f"{where}: 'sources' must be a non-empty list")
    data["sources"] = [_build(SourceSpec, s, f"{where}: sources[{i}]") for i, s in enumerate(data["sources"])]
    for key, cls in (
        ("teacher", TeacherSettings),
        ("decontam", DecontamRecipe),
        ("dedup", DedupRecipe),
        ("score", ScoreSettings),
        ("select", SelectSettings),
        ("output", ShardSettings),
        ("card", CardSettings),
    ):
        if key in data:
            data[key] = _build(cls, data[key], f"{where}: {key}")
    recipe = _build(Recipe, {**data, "base_dir": path.resolve().parent, "raw": raw}, where)
    unknown = [s for s in recipe.stages if s not in STAGES]
    if unknown:
        raise Medr1Error(f"{where}: unknown stage '{unknown[0]}' (stages: {', '.join(STAGES)})")
    get_template(recipe.teacher.template)
    return recipe


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


def stage_ingest(_: pa.Table | None, b: Build) -> pa.Table:
    """Read every source split of the recipe into one canonical table; rejects go to `rejects.parquet`."""
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


def _benchmark_spec(spec: str, r: Recipe) -> str:
    """A benchmark spec with its PATH (if any) resolved against the recipe's folder."""
    head, sep, path = spec.partition("=")
    return f"{head}={r.resolve(path)}" if sep else spec


def stage_decontam(table: pa.Table, b: Build) -> pa.Table:
    """`contam_*` columns against every benchmark of the recipe; contaminated questions get a drop_reason."""
    from medr1_data.benchmarks import load_benchmark
    from medr1_data.decontam import DecontamSettings, decontaminate

    r = b.recipe
    folder = r.resolve(r.decontam.benchmark_dir) if r.decontam.benchmark_dir else None
    benches = []
    for spec in r.decontam.benchmarks:
        name, loaded = load_benchmark(_benchmark_spec(spec, r), folder)
        benches.append((name, loaded.table))
    out, report = decontaminate(table, benches, _settings(DecontamSettings, r.decontam.settings, "decontam"))
    b.stats["decontam"] = report
    (b.build_dir / "decontam_report.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    b.log(f"decontam: {report['rows_flagged']} of {report['rows']} rows match a benchmark item")
    return _mark_dropped(out, pl.col("contaminated"), "contaminated")


def stage_dedup(table: pa.Table, b: Build) -> pa.Table:
    """`dup_cluster` for every question; all but one question per cluster get a drop_reason."""
    from medr1_data.dedup import DedupSettings, dedup

    out = dedup(table, _settings(DedupSettings, b.recipe.dedup.settings, "dedup"))
    clusters = pl.from_arrow(out.select(["dup_cluster", "dup_keep"]))
    b.stats["dedup"] = {
        "questions": clusters.height,
        "clusters_with_duplicates": clusters.filter(pl.col("dup_cluster").is_duplicated())["dup_cluster"].n_unique(),
        "duplicates": int((~clusters["dup_keep"]).sum()),
        "parameters": dataclasses.asdict(_settings(DedupSettings, b.recipe.dedup.settings, "dedup")),
    }
    return _mark_dropped(out, ~pl.col("dup_keep"), "near_duplicate")


def check_keys(cls: type, values: dict[str, Any], where: str) -> None:
    """Raise Medr1Error naming the first key of `values` that `cls` (a dataclass) does not have."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise Medr1Error(f"{where}: unknown key '{unknown[0]}' (known: {', '.join(sorted(names))})")


def _settings(cls: type, values: dict[str, Any], section: str) -> Any:
    check_keys(cls, values, f"recipe {section}.settings")
    return cls(**values)


def stage_distill(table: pa.Table, b: Build) -> pa.Table:
    """Teacher traces, one row per (question, sample); questions already dropped are not sent (nothing is paid)."""
    teacher = dataclasses.replace(b.recipe.teacher, cache=str(b.recipe.resolve(b.recipe.teacher.cache)))
    # Questions go in by id, so the traces come out in release order (id, sample_idx) whatever the sources' order.
    if "drop_reason" not in table.column_names:
        return distill(table.sort_by("id"), teacher, quiet=b.quiet)
    active = table.filter(pa.compute.is_null(table.column("drop_reason"))).sort_by("id")
    skipped = table.filter(pa.compute.is_valid(table.column("drop_reason")))
    traces = distill(active.drop_columns(["drop_reason"]), teacher, quiet=b.quiet)
    traces = traces.append_column("drop_reason", pa.nulls(traces.num_rows, pa.string()))
    # A dropped question stays as one row (sample 0, no trace) so that its drop is counted and written out.
    for f in TRACE_FIELDS:
        value = (
            pa.array([0] * skipped.num_rows, f.type) if f.name == "sample_idx" else pa.nulls(skipped.num_rows, f.type)
        )
        skipped = skipped.append_column(f, value)
    return pa.concat_tables([traces, skipped.select(traces.column_names).cast(traces.schema)])


def stage_verify(table: pa.Table, b: Build) -> pa.Table:
    """`pred_label`, `is_correct`, `verify_reason`."""
    return verify(table)


def stage_score(table: pa.Table, b: Build) -> pa.Table:
    """The `quality` struct and `quality_score` of every trace."""
    out = score(table, b.recipe.score)
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
    """Write kept rows as release shards plus manifest; dropped rows and unanswered questions to the build folder."""
    internal = ["drop_reason", "error", "dup_keep", "contam_benchmark", "contam_item_id", "contam_score", "contam_rule"]
    # No copy of the table is made: kept and dropped rows are taken from it a shard or a row group at a time.
    is_kept = pc.is_null(table.column("drop_reason")).combine_chunks()
    _write_rows(table, pc.indices_nonzero(pc.invert(is_kept)), b.build_dir / "dropped.parquet")
    unanswered = unanswered_questions(table)
    pq.write_table(normalize(unanswered), b.build_dir / "unanswered.parquet")
    release = table.drop_columns([c for c in internal if c in table.column_names])
    schema = normalize(release.slice(0, 0)).schema
    files = write_shards(release, b.out, b.recipe.output, rows=pc.indices_nonzero(is_kept))
    manifest = write_manifest(b.out, files, schema, b.recipe.raw, b.recipe.sha256, b.recipe.version)
    from medr1_data.card import length_stats

    df = pl.from_arrow(
        pa.table(
            {
                "id": table.column("id"),
                "source": table.column("source"),
                "source_split": table.column("source_split"),
                "drop_reason": table.column("drop_reason"),
                "has_reasoning": pc.is_valid(table.column("reasoning")),
            }
        )
    )
    kept = df.filter(pl.col("drop_reason").is_null())
    b.stats.update(
        configs=manifest["configs"],
        lengths=length_stats(release, mask=is_kept),
        rows=kept.height,
        bytes=sum(f["bytes"] for f in files),
        arrow_bytes=sum(f["arrow_bytes"] for f in files),
        files=files,
        traces_total=df.filter(pl.col("drop_reason").is_null() | pl.col("has_reasoning")).height,
        questions_not_sent=df.filter(pl.col("drop_reason").is_in(PRE_TEACHER_DROPS)).height,
        questions_total=df["id"].n_unique(),
        questions_kept=kept["id"].n_unique(),
        questions_unanswered=unanswered.num_rows,
        drop_reasons=drop_counts(table),
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
)


def _spec_path(spec: str, r: Recipe) -> Path | None:
    _, sep, path = spec.partition("=")
    return r.resolve(path) if sep and path else None


def stage_settings(name: str, r: Recipe, out: Path) -> Any:
    """What a stage's checkpoint key covers besides its input: the recipe settings and files the stage reads."""
    if name == "ingest":
        paths = [_spec_path(s.spec, r) for s in r.sources]
        return {"sources": [dataclasses.asdict(s) for s in r.sources], "files": [fingerprint(p) for p in paths if p]}
    if name == "decontam":
        paths = [_spec_path(s, r) for s in r.decontam.benchmarks]
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


def _drop_counts(table: pa.Table | None) -> dict[str, int]:
    if table is None or "drop_reason" not in table.column_names:
        return {}
    counts = pa.compute.value_counts(table.column("drop_reason").drop_null())
    return {c["values"].as_py(): c["counts"].as_py() for c in counts}


def _files(*folders: Path) -> dict[Path, tuple[int, int]]:
    """(size, mtime) of every file a stage may write: the release folder and the build folder, checkpoints aside."""
    found = {}
    for folder in folders:
        for p in folder.rglob("*"):
            if p.is_file() and "checkpoints" not in p.relative_to(folder).parts and p.name != "build_report.json":
                st = p.stat()
                found[p] = (st.st_size, st.st_mtime_ns)
    return found


def _run_stage(name: str, table: pa.Table | None, b: Build) -> tuple[pa.Table, dict[str, Any], dict[str, str]]:
    """Run one stage, measuring it: (output table, report entry, the build numbers it added or changed)."""
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
    rows_out = out.num_rows
    if name == "ingest":
        rows_in = sum(s["rows_read"] for s in b.stats.get("sources", []))
        dropped = dict(b.stats.get("reject_reasons", {}))
    elif name == "shards" and "rows" in b.stats:
        rows_out = b.stats["rows"]
        flagged = sum(drops_before.values())  # the shards stage adds no drop reason of its own
        dropped = {"flagged by an earlier stage": flagged} if flagged else {}
    else:
        after = _drop_counts(out)
        dropped = {k: n - drops_before.get(k, 0) for k, n in sorted(after.items()) if n > drops_before.get(k, 0)}
    entry = {
        "stage": name,
        "rows_in": rows_in,
        "rows_out": rows_out,
        "dropped": dropped,
        "seconds": round(seconds, 3),
        "peak_rss_mb": 0.0,  # set by the caller: the stage's window includes loading its input and its checkpoint
        "cached": False,
    }
    if name == "distill" and "completion_tokens" in out.column_names:
        entry["completion_tokens"] = int(pa.compute.sum(out.column("completion_tokens")).as_py() or 0)
        entry["cost_usd"] = round(float(pa.compute.sum(out.column("cost_usd")).as_py() or 0.0), 4)
    known = {str(b.out / f["path"]): f["sha256"] for f in b.stats.get("files", [])}  # hashed by write_shards
    changed = [p for p, sig in _files(b.out, b.build_dir).items() if files_before.get(p) != sig]
    outputs = {str(p): known.get(str(p)) or sha256_file(p) for p in changed}
    return out, entry, {"stats": added, "outputs": outputs}


def _release_memory() -> None:
    """Hand memory freed by the last stage back to the OS, so that the next stage's peak starts from what is live."""
    import contextlib
    import ctypes
    import gc

    gc.collect()
    pa.default_memory_pool().release_unused()
    with contextlib.suppress(OSError, AttributeError):  # glibc keeps freed Python strings in its heap until asked
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _stage_index(stages: list[str], name: str | None, option: str, recipe: Recipe) -> int | None:
    if name is None:
        return None
    if name not in stages:
        raise Medr1Error(f"{option} {name}: recipe {recipe.name} has no such stage (stages: {', '.join(stages)})")
    return stages.index(name)


def run(
    recipe: Recipe,
    out: Path | None = None,
    quiet: bool = False,
    *,
    from_stage: str | None = None,
    until_stage: str | None = None,
) -> Build:
    """Run the recipe's stages in order, serving each from its checkpoint while it is valid; write the release to
    `out` and `build_report.json` to the build folder beside it.

    `from_stage`: rerun from this stage on (the stages before it must have valid checkpoints). `until_stage`: stop
    after this stage (the release is complete only when the last stage ran).
    """
    out = Path(out or recipe.output.dir)
    build_dir = out.with_name(out.name + ".build")
    stages = list(recipe.stages)
    first = _stage_index(stages, from_stage, "--from", recipe)
    last = _stage_index(stages, until_stage, "--until", recipe)
    last = len(stages) - 1 if last is None else last
    if first is not None and first > last:
        raise Medr1Error(f"--from {from_stage} comes after --until {until_stage} (stages: {', '.join(stages)})")
    out.mkdir(parents=True, exist_ok=True)
    build_dir.mkdir(parents=True, exist_ok=True)
    report_path = build_dir / "build_report.json"
    try:
        previous = json.loads(report_path.read_text(encoding="utf-8")).get("stages")
    except (OSError, ValueError, AttributeError):
        previous = None
    started = time.perf_counter()
    b = Build(recipe, out, build_dir, quiet)
    b.progress = BuildProgress(stages[: last + 1], quiet=quiet, previous=previous)
    b.stats["build_report"] = b.report
    checkpoints = Checkpoints(build_dir, stages)
    keys, key = [], None
    for name in stages:
        key = stage_key(key, name, stage_settings(name, recipe, out))
        keys.append(key)

    table: pa.Table | None = None
    source: dict[str, Any] | None = None  # the checkpoint whose table is the next stage's input
    running = False
    for i, name in enumerate(stages[: last + 1]):
        meta = None if running or (first is not None and i >= first) else checkpoints.meta(name, keys[i])
        if meta is not None:
            b.stats.update(decode_stats(meta["stats"]))
            entry = {**meta["report"], "cached": True}
            b.report.append(entry)
            b.progress.finish(entry)
            if meta["table"]:
                source, table = meta, None
            continue
        if first is not None and i < first:
            raise Medr1Error(
                f"--from {from_stage}: stage '{name}' before it has no valid checkpoint (never run, or its settings "
                "or input files changed); run the build without --from"
            )
        running = True
        peak = PeakRSS()
        peak.start()
        t0 = time.perf_counter()
        if table is None and source is not None:
            table = checkpoints.table(source)
        loaded = time.perf_counter() - t0
        result, entry, meta = _run_stage(name, table, b)
        t1 = time.perf_counter()
        written = checkpoints.write_table(name, None if result is table else result, table, source)
        entry["checkpoint_seconds"] = round(loaded + time.perf_counter() - t1, 3)
        entry["peak_rss_mb"] = peak.stop()
        entry["start_rss_mb"] = peak.start_mb  # resident when the stage began (before loading its input)
        saved = checkpoints.save(name, keys[i], written, {"report": entry, **meta})
        if saved["table"]:
            source = saved
        table = result
        del result
        _release_memory()
        b.report.append(entry)
        extra = ""
        if "completion_tokens" in entry:
            extra = f"; {entry['completion_tokens']:,} completion tokens, ${entry['cost_usd']:,.2f}"
        b.progress.finish(entry, extra)
    report = {
        "recipe": recipe.name,
        "recipe_sha256": recipe.sha256,
        "library_version": __version__,
        "complete": last == len(stages) - 1,
        "seconds": round(time.perf_counter() - started, 3),
        "peak_rss_mb": max((s["peak_rss_mb"] for s in b.report if not s["cached"]), default=0.0),
        "stages": b.report,
        "summary": summary_rows(b),
    }
    tmp = report_path.with_name(report_path.name + ".tmp")
    tmp.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, report_path)
    return b


def summary_rows(b: Build) -> list[tuple[str, int]]:
    """The build summary as (what, count) rows: read, rejected per reason, traces, kept, dropped per reason."""
    s = b.stats
    rows: list[tuple[str, int]] = []
    if "sources" in s:
        rows.append(("source rows read", sum(x["rows_read"] for x in s["sources"])))
        rows += [(f"  rejected at ingest: {k}", v) for k, v in s.get("reject_reasons", {}).items()]
    if "traces_total" in s:
        before = {k: v for k, v in s["drop_reasons"].items() if k in PRE_TEACHER_DROPS}
        after = {k: v for k, v in s["drop_reasons"].items() if k not in PRE_TEACHER_DROPS}
        rows.append(("questions", s["questions_total"]))
        rows += [(f"  not sent to the teacher: {k}", v) for k, v in before.items()]
        rows.append(("teacher traces", s["traces_total"]))
        rows += [(f"  dropped: {k}", v) for k, v in after.items()]
        rows.append(("traces kept", s["rows"]))
        rows.append(("questions kept", s["questions_kept"]))
        rows.append(("questions with no kept trace", s["questions_unanswered"]))
    return rows
