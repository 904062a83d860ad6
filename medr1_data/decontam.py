"""Decontamination: flag rows that copy or disguise a benchmark test item, naming the item and the rule that fired.

Method (issue 3). Every benchmark item and every row is canonicalised by `medr1_data.normalize` into a stem (prompt
wrappers and inline option blocks stripped), option texts (letters stripped), the answer text and the context; NFKC,
case, punctuation and number formatting are normalised.

1. **Candidates** come from the inverted index of the benchmark items (`build_index`; views, posting lists and
   `candidates` in `medr1_data.index`): exact stem and option-set hashes, rare option texts, rare stem words and
   bigrams, option and context bigrams; each row keeps its `top_k` best candidates.
2. **Confirmation** (`confirm`) runs cheap pairwise checks on the candidates: IDF-weighted token containment of the
   stems in both directions (weights from the benchmark items, so wrapper and boilerplate words weigh little),
   option texts matched exactly or by rapidfuzz ratio (one to one), option-set coverage and Jaccard, the answer text,
   and context containment. The first rule of `RULES` that holds names the flag; `contam_score` is its similarity.
   A distinctive stem (`stem_distinctive`: enough words and IDF mass) flags whatever the options; an option set
   shared by more than `optset_max_df` items (yes/no/maybe) is no option evidence either way. A row that asks a
   question of its own (its stem shares little with the item's and carries `option_own_info` of its own) is flagged
   on the options alone only when they are more distinctive than a generic set (`min_option_evidence_alone`):
   different questions share the four lobes, teeth, muscles or stages as options.

`contam_item_id` is the item's natural id (`item_ids`): MedQA's 0-based line in the official file, MMLU's
`<subject>/<row>`, MedMCQA's `id`, PubMedQA's PMID. Items with the same canonical text tie; the lowest id wins, and
weights are quantized so that sums are exact whatever the thread count: outputs are byte-identical run to run.

Every threshold is a field of `DecontamSettings` (the retrieval ones inherited from `IndexSettings`), documented
there. The defaults were tuned on a tuning part of the disguise kinds and real hard negatives and are measured on a
held-out part (tests/disguise.py, tests/test_decontam.py; `python benchmarks/decontam.py` prints both tables with
its baselines).
"""

from __future__ import annotations

import pickle
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import polars as pl
import pyarrow as pa

from medr1_data.config import Bounds
from medr1_data.index import (
    IndexSettings,
    Side,
    append_columns,
    broadcast,
    candidates,
    canon_table,
    index_frame,
    option_hits,
    quantize,
    same_option,
    sides,
    token_weights,
    unique_questions,
    weight_map,
)

RULES = {
    "stem_exact": "canonical stem equal to the item's (informative stem; options, if both have them, do not conflict)",
    "stem_distinctive": "canonical stem equal to the item's distinctive stem (enough words and IDF mass), any options",
    "context": "the item's context (abstract) is contained in the row's",
    "options": "the item's option set and answer text (exact or fuzzy), with enough option or stem evidence (more "
    "option evidence when the row asks a question of its own)",
    "stem_near": "most of the item's stem weight is in the row and most of the row's is in the item (reworded)",
    "item_in_row": "the item's stem is contained in the row's stem (prompt wrappers, added sentences)",
    "row_in_item": "the row's stem is contained in the item's and covers a good part of it (truncation)",
    "stem_options": "moderate stem overlap and most of the item's options",
}


@dataclass
class DecontamSettings(IndexSettings):
    """Every decontamination threshold: candidate retrieval (`IndexSettings`), then confirmation; tuned defaults."""

    # --- confirmation (pairwise checks on the candidates)
    unseen_weight: float = 0.7  # token weight of a word no benchmark item uses (synonyms, typos, wrappers)
    min_stem_info: float = 0.9  # IDF mass (token weights in 0-1 summed) a stem needs before stem rules may flag
    # stem_distinctive: a stem that identifies its item whatever the options. The most generic stems that real test
    # items share with other items ("which of the following statements is false", "which of the following is true")
    # have an IDF mass of 0.7-1.4; 27% of MedMCQA stems have fewer than 8 words ("gnas 1 gene mutation is associated
    # with": 7 words, mass 2.8) and are left to the rules that also read the options.
    distinctive_words: int = 8  # stem_distinctive: the item's canonical stem has at least this many words
    distinctive_info: float = 2.5  # stem_distinctive: ... and at least this IDF mass
    near: float = 0.8  # stem_near: share of the item's stem weight found in the row
    near_row: float = 0.6  # stem_near: share of the row's stem weight found in the item
    contained: float = 0.9  # item_in_row / row_in_item: containment of the smaller side
    wrapped_row_share: float = 0.5  # item_in_row without option support: share of the row's weight that is the item
    truncated_cover: float = 0.5  # row_in_item: the row must also cover this share of the item's stem weight
    stem_with_options: float = 0.5  # stem_options: share of the item's stem weight found in the row
    stem_with_options_row: float = 0.4  # stem_options: share of the row's stem weight found in the item
    option_ratio_short: float = 90.0  # rapidfuzz ratio for two option texts to be the same (short texts)
    option_ratio_long: float = 78.0  # ... for texts of at least `option_short_chars` characters
    option_short_chars: int = 16  # option texts shorter than this need `option_ratio_short`
    option_cover: float = 0.75  # option support: share of the item's options found in the row, with the same answer
    option_cover_weak: float = 0.5  # weaker option support (stem_options rule, with the same answer)
    option_conflict: float = 0.25  # options conflict (block the stem rules) when at most this share is found
    min_option_evidence: float = 3.0  # options rule: IDF mass of the item's option words + stem mass shared
    option_row_share: float = 0.25  # options rule: when less of the row's stem weight (words items use) is in the
    # item, the row asks its own question and its shared stem mass does not count towards `min_option_evidence`
    option_stem_share_common: float = 0.35  # options rule, option set shared by several items: stem share needed
    # options rule, a row asking its own question: one whose stem shares less than `option_row_share` with the item
    # and whose own words (those items use, not in the item's stem) weigh at least `option_own_info` is flagged on
    # the options alone only when their words weigh `min_option_evidence_alone`. Set on the tuning part: the
    # templates of the `options_only` disguises weigh at most 2.5 of their own; a different benchmark item with the
    # same options and answer, 3.1-16.8 (the generic sets: teeth, rotator cuff muscles, types of cry), whose option
    # words weigh at most 4.04; option sets that three or more different benchmark stems share weigh at most 4.22.
    option_own_info: float = 3.0
    min_option_evidence_alone: float = 4.5
    context_contained: float = 0.8  # context rule: share of the item's context words found in the row's context
    min_context_tokens: int = 30  # context rule: the item's context needs at least this many distinct words

    SHARES: ClassVar[tuple[str, ...]] = (
        "unseen_weight", "near", "near_row",
        "contained", "wrapped_row_share", "truncated_cover", "stem_with_options", "stem_with_options_row",
        "option_cover", "option_cover_weak", "option_conflict", "option_row_share", "option_stem_share_common",
        "context_contained",
    )  # fmt: skip
    COUNTS: ClassVar[tuple[str, ...]] = ("distinctive_words", "option_short_chars", "min_context_tokens")
    MASSES: ClassVar[tuple[str, ...]] = (
        "min_stem_info", "distinctive_info", "min_option_evidence", "option_own_info", "min_option_evidence_alone",
    )  # fmt: skip
    BOUNDS: ClassVar[Bounds] = {
        **IndexSettings.BOUNDS,
        **dict.fromkeys(SHARES, (0.0, 1.0)),
        **dict.fromkeys(COUNTS, (1, None)),
        **dict.fromkeys(MASSES, (0.0, None)),
        **dict.fromkeys(("option_ratio_short", "option_ratio_long"), (0.0, 100.0)),
    }

    def to_dict(self) -> dict[str, Any]:
        """The settings as a JSON-able dict (for reports)."""
        return asdict(self)


@dataclass
class BenchmarkIndex:
    """Canonical benchmark items, their token weights and the inverted index of their retrieval features."""

    settings: DecontamSettings
    items: pl.DataFrame  # _item, stem, ctx, opts, answer, benchmark, item_id, optset_df
    postings: pl.DataFrame  # feat, view, _item, w
    totals: pl.DataFrame  # _item, tot_ngram, tot_optgram, tot_ctx, n_opt
    weight_frame: pl.DataFrame  # tok, w: IDF weight in 0-1 of every benchmark word
    weights: dict[str, float]  # the same as a dict
    counts: dict[str, int] = field(default_factory=dict)  # items per benchmark
    seconds: float = 0.0

    @property
    def n_items(self) -> int:
        """Number of indexed items."""
        return self.items.height


def build_index(benchmarks: list[tuple[str, pa.Table]], settings: DecontamSettings) -> BenchmarkIndex:
    """Canonicalise every benchmark item and build the inverted index of its retrieval features."""
    start = time.perf_counter()
    frames = []
    counts: dict[str, int] = {}
    for name, table in benchmarks:
        df = pl.from_arrow(table, rechunk=False)
        assert isinstance(df, pl.DataFrame)
        ids = item_ids(df)
        # Items in the order of their ids (natural order: "9" before "10"), so that the lowest `_item` of tied items
        # (identical canonical text) is the lowest id: the one every run reports.
        keys = [_natural(i) for i in ids.to_list()]
        order = sorted(range(df.height), key=keys.__getitem__)
        canon = canon_table(df).with_columns(pl.lit(name).alias("benchmark"), ids.alias("item_id"))
        frames.append(canon[order] if order else canon)
        counts[name] = counts.get(name, 0) + df.height
    schema = {"stem": pl.String, "ctx": pl.String, "opts": pl.List(pl.String), "answer": pl.String}
    canon = (
        pl.concat(frames) if frames else pl.DataFrame(schema={**schema, "benchmark": pl.String, "item_id": pl.String})
    )
    items, postings, totals = index_frame(canon, settings)
    weights = token_weights(items)
    return BenchmarkIndex(
        settings, items, postings, totals, weights, weight_map(weights), counts, time.perf_counter() - start
    )


def save_index(index: BenchmarkIndex, path: Path) -> Path:
    """Write the index for worker processes to load (`load_index`), once each."""
    path.write_bytes(pickle.dumps(index, protocol=pickle.HIGHEST_PROTOCOL))
    return path


def _read_index(path: Path) -> BenchmarkIndex:
    return pickle.loads(path.read_bytes())


def load_index(ref: BenchmarkIndex | Path) -> BenchmarkIndex:
    """The index itself, or the one `save_index` wrote to `ref` (read once per process and file version)."""
    from medr1_data.workers import load_once

    return ref if isinstance(ref, BenchmarkIndex) else load_once(ref, _read_index)


def item_ids(df: pl.DataFrame) -> pl.Series:
    """Each benchmark item's natural id: `meta.item_id` where the source sets one, else `source_id`, else the row."""
    ids = pl.int_range(pl.len()).cast(pl.String)
    if "source_id" in df.columns:
        ids = pl.col("source_id").cast(pl.String).fill_null(ids)
    if "meta" in df.columns:
        ids = pl.col("meta").str.json_path_match("$.item_id").fill_null(ids)
    return df.select(ids.alias("item_id"))["item_id"]


def _natural(item_id: str) -> tuple:
    """Sort key of an id with its digit runs as numbers ("anatomy/9" before "anatomy/10")."""
    return tuple(int(p) if k % 2 else p for k, p in enumerate(re.split(r"(\d+)", item_id)))


def confirm(row: Side, item: Side, item_optset_df: int, w: dict[str, float], s: DecontamSettings) -> tuple[str, float]:
    """The first rule of RULES that holds for (row, item) and its similarity in 0-1, or ("", best similarity)."""
    unseen = quantize(s.unseen_weight)  # quantized weights: sums exact in any order (set order varies per process)
    shared = sum(w.get(t, unseen) for t in row.toks & item.toks)
    c_row = shared / row.info if row.info else 0.0  # share of the row's stem weight found in the item
    c_item = shared / item.info if item.info else 0.0  # share of the item's stem weight found in the row
    # An option set shared by many items (yes/no/maybe: all 500 PubMedQA items) is no evidence either way.
    both_opts = len(row.opts) >= 2 and len(item.opts) >= 2 and item_optset_df <= s.optset_max_df
    hits = 0
    if both_opts:
        hits = len(set(row.opts).intersection(item.opts))
        # Fuzzy option matching only where it can matter: some options differ, and some agree or the stems do.
        if hits < len(item.opts) and (hits or c_item >= s.stem_with_options):
            hits = option_hits(row.opts, item.opts, s)
    cover = hits / len(item.opts) if both_opts else 0.0
    jacc = hits / (len(row.opts) + len(item.opts) - hits) if both_opts else 0.0
    answer = item.answer is None or bool(row.answer and same_option(row.answer, item.answer, s))
    support = both_opts and answer and cover >= s.option_cover
    conflict = both_opts and cover <= s.option_conflict
    informative = item.info >= s.min_stem_info
    if row.stem and row.stem == item.stem and informative:
        if not conflict:
            return "stem_exact", 1.0
        if item.info >= s.distinctive_info and item.stem.count(" ") + 1 >= s.distinctive_words:
            return "stem_distinctive", 1.0
    if item.ctx and len(item.ctx) >= s.min_context_tokens:
        c_ctx = len(row.ctx & item.ctx) / len(item.ctx)
        if c_ctx >= s.context_contained:
            return "context", c_ctx
    if support and jacc >= s.option_cover:
        if item_optset_df <= 1:
            opt_info = sum(w.get(t, unseen) for t in {t for o in item.opts for t in o.split()})
            # A row whose stem is mostly its own words asks another question: the shared stem words then add no
            # evidence, and when its own words weigh enough, only a distinctive option set does (a different
            # question can enumerate the same lobes). Words no item uses (templates, wrappers) are not counted.
            known = sum(w[t] for t in row.toks if t in w)
            if shared >= s.option_row_share * known:
                evidence, bar = opt_info + shared, s.min_option_evidence
            else:
                own = known - shared >= s.option_own_info
                evidence, bar = opt_info, s.min_option_evidence_alone if own else s.min_option_evidence
            if evidence >= bar:
                return "options", jacc
        elif c_item >= s.option_stem_share_common:
            return "options", jacc
    if not conflict:
        if informative and c_item >= s.near and c_row >= s.near_row:
            return "stem_near", min(c_item, (c_item + c_row) / 2)
        if informative and c_item >= s.contained and (support or c_row >= s.wrapped_row_share):
            return "item_in_row", c_item
        if row.info >= s.min_stem_info and c_row >= s.contained and c_item >= s.truncated_cover:
            return "row_in_item", c_item
    stem_ok = c_item >= s.stem_with_options and c_row >= s.stem_with_options_row
    if stem_ok and both_opts and (cover >= s.option_cover or (answer and cover >= s.option_cover_weak)):
        return "stem_options", (c_item + cover) / 2
    return "", max(min(c_row, c_item), cover if answer else 0.0)


MATCH_SCHEMA = {"_i": pl.UInt32, "_item": pl.UInt32, "rule": pl.String, "score": pl.Float64}


def match(index: BenchmarkIndex, canon: pl.DataFrame) -> pl.DataFrame:
    """Confirmed matches of a canonical frame with `_i`: one row per flagged `_i` with its best `_item`, rule, score."""
    s = index.settings
    order = {r: k for k, r in enumerate(RULES)}
    item_sides: dict[int, Side] = {}
    optset_df = index.items["optset_df"].to_list()
    got: dict[int, tuple[int, str, float]] = {}
    for start in range(0, canon.height, s.batch_rows):
        batch = canon.slice(start, s.batch_rows)
        cands = candidates(index.postings, index.totals, batch, s)
        if not cands.height:
            continue
        missing = [i for i in cands["_item"].unique().to_list() if i not in item_sides]
        if missing:
            item_sides.update(
                zip(missing, sides(index.items[missing], index.weight_frame, s.unseen_weight), strict=True)
            )
        rows = batch.join(cands.select("_i").unique(), on="_i", how="semi")
        row_sides = dict(zip(rows["_i"].to_list(), sides(rows, index.weight_frame, s.unseen_weight), strict=True))
        for i, item in zip(cands["_i"].to_list(), cands["_item"].to_list(), strict=True):
            rule, score = confirm(row_sides[i], item_sides[item], optset_df[item], index.weights, s)
            if rule:
                best = got.get(i)  # best score, then the earlier rule, then the lowest item (tied items: lowest id)
                if best is None or (score, -order[rule], -item) > (best[2], -order[best[1]], -best[0]):
                    got[i] = (item, rule, score)
    return pl.DataFrame(
        {
            "_i": list(got),
            "_item": [g[0] for g in got.values()],
            "rule": [g[1] for g in got.values()],
            "score": [g[2] for g in got.values()],
        },
        schema=MATCH_SCHEMA,
    )


OUT_FIELDS = [
    pa.field("contaminated", pa.bool_(), nullable=False),
    pa.field("contam_benchmark", pa.string()),
    pa.field("contam_item_id", pa.string()),
    pa.field("contam_score", pa.float64()),
    pa.field("contam_rule", pa.string()),
]


def decontaminate(
    table: pa.Table,
    benchmarks: list[tuple[str, pa.Table]] | BenchmarkIndex,
    settings: DecontamSettings | None = None,
) -> tuple[pa.Table, dict]:
    """Add `contaminated`, `contam_benchmark`, `contam_item_id`, `contam_score`, `contam_rule`; return a report too.

    `benchmarks` is a list of (name, canonical table) pairs, or an index already built by `build_index` (reused
    across calls; `settings` is then ignored). Rows keep their order and extra columns.
    """
    start = time.perf_counter()
    if isinstance(benchmarks, BenchmarkIndex):
        index = benchmarks
    else:
        index = build_index(benchmarks, settings or DecontamSettings())
    settings = index.settings
    uniq, ids = unique_questions(table)
    canon = canon_table(uniq).with_row_index("_i")
    matches = match(index, canon).join(index.items.select("_item", "benchmark", "item_id"), on="_item", how="left")
    per_q = (
        canon.select("_i")
        .join(matches, on="_i", how="left", maintain_order="left")
        .select(
            pl.col("benchmark").is_not_null().alias("contaminated"),
            pl.col("benchmark").alias("contam_benchmark"),
            pl.col("item_id").alias("contam_item_id"),
            pl.col("score").round(4).alias("contam_score"),
            pl.col("rule").alias("contam_rule"),
        )
    )
    res = broadcast(table, per_q, ids)
    out = append_columns(table, res, OUT_FIELDS)
    return out, report(index, res, canon.height, time.perf_counter() - start, settings)


def report(
    index: BenchmarkIndex, res: pl.DataFrame, questions: int, elapsed: float, settings: DecontamSettings
) -> dict:
    """The JSON-able decontamination report: per benchmark items indexed and rows flagged (per rule), parameters."""
    per: dict[str, dict[str, Any]] = {
        name: {"items_indexed": n, "rows_flagged": 0, "by_rule": {}} for name, n in index.counts.items()
    }
    flagged = res.filter(pl.col("contaminated")).group_by("contam_benchmark", "contam_rule").len()
    for bench, rule, n in flagged.sort(["contam_benchmark", "contam_rule"]).iter_rows():
        per[bench]["rows_flagged"] += n
        per[bench]["by_rule"][rule] = n
    by_rule = {r: sum(p["by_rule"].get(r, 0) for p in per.values()) for r in RULES}
    return {
        "rows": res.height,
        "questions_checked": questions,
        "rows_flagged": int(res["contaminated"].sum()),
        "by_rule": {r: n for r, n in by_rule.items() if n},
        "benchmarks": per,
        "items_indexed": index.n_items,
        "rules": RULES,
        "parameters": settings.to_dict(),
        "index_seconds": round(index.seconds, 3),
        "elapsed_seconds": round(elapsed, 3),
    }
