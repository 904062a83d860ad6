"""YAML recipes: read into dataclasses, then run as an ordered list of stages that each map a table to a table."""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from medr1_data import Medr1Error, __version__
from medr1_data import sources as source_registry
from medr1_data.benchmarks import DEFAULT_BENCHMARKS
from medr1_data.distill import TeacherSettings, distill
from medr1_data.prompts import get_template
from medr1_data.schema import REJECT_SCHEMA, TRACE_FIELDS, normalize
from medr1_data.score import ScoreSettings, score
from medr1_data.select import SelectSettings, drop_counts, select, unanswered_questions
from medr1_data.shards import ShardSettings, write_manifest, write_shards
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
        blob = json.dumps(self.raw, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()

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

    def log(self, message: str) -> None:
        """A progress line on stderr (silent with --quiet)."""
        if not self.quiet:
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
    if "drop_reason" not in table.column_names:
        return distill(table, teacher, quiet=b.quiet)
    active = table.filter(pa.compute.is_null(table.column("drop_reason")))
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


def stage_shards(table: pa.Table, b: Build) -> pa.Table:
    """Write kept rows as release shards plus manifest; dropped rows and unanswered questions to the build folder."""
    df = pl.from_arrow(table)
    internal = ["drop_reason", "error", "dup_keep", "contam_benchmark", "contam_item_id", "contam_score", "contam_rule"]
    kept = df.filter(pl.col("drop_reason").is_null()).drop([c for c in internal if c in df.columns])
    dropped = df.filter(pl.col("drop_reason").is_not_null())
    pq.write_table(normalize(dropped.to_arrow()), b.build_dir / "dropped.parquet")
    unanswered = unanswered_questions(table)
    pq.write_table(normalize(unanswered), b.build_dir / "unanswered.parquet")
    kept_table = normalize(kept.to_arrow())
    files = write_shards(kept_table, b.out, b.recipe.output)
    write_manifest(b.out, files, kept_table.schema, b.recipe.raw, b.recipe.sha256)
    b.stats.update(
        rows=kept_table.num_rows,
        bytes=sum(f["bytes"] for f in files),
        arrow_bytes=kept_table.nbytes,
        files=files,
        traces_total=df.filter(pl.col("drop_reason").is_null() | pl.col("reasoning").is_not_null()).height,
        questions_not_sent=df.filter(pl.col("drop_reason").is_in(PRE_TEACHER_DROPS)).height,
        questions_total=df["id"].n_unique(),
        questions_kept=kept["id"].n_unique(),
        questions_unanswered=unanswered.num_rows,
        drop_reasons=drop_counts(table),
        kept_by_source={
            f"{src}/{split}": n
            for src, split, n in kept.group_by("source", "source_split").agg(pl.col("id").n_unique()).iter_rows()
        },
        schema=kept_table.schema,
    )
    return table


def stage_card(table: pa.Table, b: Build) -> pa.Table:
    """Render the dataset card from the build's numbers."""
    from medr1_data.card import render_card
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
    render_card(
        b.out,
        s["schema"],
        {
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
            "system_prompt": get_template(r.teacher.template).system,
            "selection": selection,
            "min_quality": keep.min_quality,
            "columns": schema_doc(s["schema"]),
            "changelog": r.card.changelog or [f"v{r.version}: first release."],
        },
    )
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


def run(recipe: Recipe, out: Path | None = None, quiet: bool = False) -> Build:
    """Run the recipe's stages in order; write the release to `out` and the build report beside it."""
    out = Path(out or recipe.output.dir)
    build_dir = out.with_name(out.name + ".build")
    out.mkdir(parents=True, exist_ok=True)
    build_dir.mkdir(parents=True, exist_ok=True)
    b = Build(recipe, out, build_dir, quiet)
    table: pa.Table | None = None
    for name in recipe.stages:
        rows_in = None if table is None else table.num_rows
        start = time.perf_counter()
        table = STAGES[name](table, b)
        seconds = time.perf_counter() - start
        b.report.append({"stage": name, "rows_in": rows_in, "rows_out": table.num_rows, "seconds": round(seconds, 3)})
        b.log(f"{name}: {table.num_rows} rows in {seconds:.2f}s")
    report = {
        "recipe": recipe.name,
        "recipe_sha256": recipe.sha256,
        "library_version": __version__,
        "stages": b.report,
        "summary": summary_rows(b),
    }
    (build_dir / "build_report.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
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
