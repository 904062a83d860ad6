"""Decontamination: flag rows that copy or disguise a benchmark test item, naming the item and the rule that fired.

Method (issue 3). Every benchmark item and every row is canonicalised by `medr1_data.normalize` into a stem (prompt
wrappers and inline option blocks stripped), option texts (letters stripped), the answer text and the context; NFKC,
case, punctuation and number formatting are normalised.

1. **Candidates** come from views that need no minimum length, joined column-wise (polars) against an inverted
   index of the benchmark items (`build_index`, `candidates`):
   - `stem`: exact hash of the canonical stem; `optset`: exact hash of the sorted option set;
   - `option`: each option text, when at most `option_max_df` items use it ("none of the above" retrieves nothing);
   - `ngram`: stem word bigrams used by at most `ngram_max_df` items and stem words used by at most `word_max_df`
     (boilerplate such as "which of the following is the most likely" is shared by hundreds of MedQA items and so
     never retrieves); `optgram`: the same bigrams inside option texts; `context`: bigrams of the context's first
     `context_tokens` words (PubMedQA abstracts).
   A pair (row, item) is a candidate when an exact view hits, `min_option_hits` rare options match verbatim, or at
   least `min_shared_features` rare n-grams are shared and their weight is a large enough share of the item's own
   (stem, options or context); each row keeps its `top_k` best candidates.
2. **Confirmation** (`confirm`) runs cheap pairwise checks on the candidates: IDF-weighted token containment of the
   stems in both directions (weights from the benchmark items, so wrapper and boilerplate words weigh little),
   option texts matched exactly or by rapidfuzz ratio (one to one), option-set coverage and Jaccard, the answer text,
   and context containment. The first rule of `RULES` that holds names the flag; `contam_score` is its similarity.

Every threshold is a field of `DecontamSettings`, documented there; the defaults are the values tuned on the real
test sets (tests/test_decontam.py asserts recall per disguise and the false-positive rate; benchmarks/decontam.py
measures speed and memory against baselines).
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import polars as pl
import pyarrow as pa
from rapidfuzz import fuzz

from medr1_data.normalize import canonical_frame

VIEW_STEM, VIEW_OPTSET, VIEW_OPTION, VIEW_NGRAM, VIEW_WORD, VIEW_OPTGRAM, VIEW_CONTEXT = range(7)
VIEWS = ("stem", "optset", "option", "ngram", "word", "optgram", "context")
SEED = 0x5EED
MIX = 0x9E3779B97F4A7C15  # odd 64-bit constant: bigram hash = h(w1) * MIX ^ h(w2) (wrapping arithmetic)
SALT = [0, 0x0F0F0F0F0F0F0F0F, 0x3C3C3C3C3C3C3C3C, 0, 0x6996699669966996, 0x1248124812481248, 0x5A5A5A5A5A5A5A5A]
NUMERAL = re.compile(r"[ivx]{1,4}|[a-e]")  # roman numerals and single option-like letters in option texts
PAIR = 1 << 32  # (row, item) pair key = row * PAIR + item
EXACT_WEIGHT = 50.0  # retrieval weight of an exact stem or option-set hit (outranks any n-gram evidence)

RULES = {
    "stem_exact": "canonical stem equal to the item's (informative stem; options, if both have them, do not conflict)",
    "context": "the item's context (abstract) is contained in the row's",
    "options": "the item's option set and answer text (exact or fuzzy), with enough option or stem evidence",
    "stem_near": "most of the item's stem weight is in the row and most of the row's is in the item (reworded)",
    "item_in_row": "the item's stem is contained in the row's stem (prompt wrappers, added sentences)",
    "row_in_item": "the row's stem is contained in the item's and covers a good part of it (truncation)",
    "stem_options": "moderate stem overlap and most of the item's options",
}


@dataclass
class DecontamSettings:
    """Every decontamination threshold, documented in one place; the defaults are the tuned values."""

    # --- candidate retrieval (column-wise join against the inverted index)
    ngram_max_df: int = 10  # a bigram (stem, options, context) used by more benchmark items is boilerplate
    word_max_df: int = 3  # a single stem word retrieves only when at most this many items use it
    option_max_df: int = 3  # an option text retrieves only when at most this many items use it
    optset_max_df: int = 50  # exact option sets shared by more items do not retrieve
    stem_max_df: int = 50  # exact stems shared by more items do not retrieve
    context_tokens: int = 128  # context words (from the start) that feed the context view
    min_item_share: float = 0.35  # candidate: shared rare stem n-gram weight / the item's own is at least this
    min_optgram_share: float = 0.5  # candidate: shared option bigram weight / the item's own
    min_context_share: float = 0.3  # candidate: shared context bigram weight / the item's own
    min_option_hits: int = 2  # candidate: at least this many of the item's rare option texts appear verbatim
    min_shared_features: int = 2  # candidate by a share (stem, option or context n-grams): at least this many shared
    top_k: int = 4  # candidates confirmed per row (best retrieval score first)
    batch_rows: int = 20_000  # rows per retrieval batch (bounds memory)
    # --- confirmation (pairwise checks on the candidates)
    unseen_weight: float = 0.7  # token weight of a word no benchmark item uses (synonyms, typos, wrappers)
    min_stem_info: float = 0.9  # IDF mass (token weights in 0-1 summed) a stem needs before stem rules may flag
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
    option_stem_share_common: float = 0.35  # options rule, option set shared by several items: stem share needed
    context_contained: float = 0.8  # context rule: share of the item's context words found in the row's context
    min_context_tokens: int = 30  # context rule: the item's context needs at least this many distinct words

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


def _bigrams(frame: pl.DataFrame, group: str, text: str, view: int, limit: int | None = None) -> pl.DataFrame:
    """Word-bigram hashes of `text` (space-separated tokens) within each `group`, as (_i, feat, view)."""
    tok = pl.col(text).str.split(" ")
    if limit is not None:
        tok = tok.list.head(limit)
    toks = (
        frame.select("_i", group, tok.alias("tok"))
        .explode("tok")
        .filter(pl.col("tok").is_not_null() & (pl.col("tok") != ""))
        .select("_i", group, pl.col("tok").hash(SEED).alias("h"))
    )
    feat = (pl.col("h") * pl.lit(MIX, pl.UInt64)) ^ pl.col("h").shift(-1) ^ pl.lit(SALT[view], pl.UInt64)
    return (
        toks.select("_i", feat.alias("feat"), (pl.col(group) == pl.col(group).shift(-1)).alias("ok"))
        .filter(pl.col("ok"))
        .select("_i", "feat", pl.lit(view, pl.UInt8).alias("view"))
    )


def features(canon: pl.DataFrame, settings: DecontamSettings, *, unique: bool = True) -> pl.DataFrame:
    """Retrieval features (`_i`, `feat` u64, `view` u8) of a canonical frame with a `_i` column (`unique`: once each).

    Words and option texts are always distinct per row; without `unique` a bigram repeated in one text counts twice,
    which only raises a share that is clipped at 1 anyway (queries, and the dedup self-index, skip that cost).
    """
    lit = pl.lit
    optset = pl.col("opts").list.unique().list.sort().list.join("\x1f")
    opts = (
        canon.select("_i", pl.col("opts").list.unique(maintain_order=True).alias("opt"))
        .explode("opt")
        .filter(pl.col("opt").is_not_null() & (pl.col("opt") != ""))
        .with_row_index("_g")
    )
    words = (
        canon.select("_i", pl.col("stem").str.split(" ").list.unique().alias("tok"))
        .explode("tok")
        .filter(pl.col("tok").is_not_null() & (pl.col("tok") != ""))
    )
    parts = [
        canon.filter(pl.col("stem") != "").select(
            "_i", pl.col("stem").hash(SEED).alias("feat"), lit(VIEW_STEM).alias("view")
        ),
        canon.filter(pl.col("opts").list.len() >= 2).select(
            "_i", (optset.hash(SEED) ^ lit(SALT[VIEW_OPTSET], pl.UInt64)).alias("feat"), lit(VIEW_OPTSET).alias("view")
        ),
        opts.select(
            "_i",
            (pl.col("opt").hash(SEED) ^ lit(SALT[VIEW_OPTION], pl.UInt64)).alias("feat"),
            lit(VIEW_OPTION).alias("view"),
        ),
        _bigrams(canon.with_columns(pl.col("_i").alias("_g")), "_g", "stem", VIEW_NGRAM),
        words.select(
            "_i",
            (pl.col("tok").hash(SEED) ^ lit(SALT[VIEW_WORD], pl.UInt64)).alias("feat"),
            lit(VIEW_WORD).alias("view"),
        ),
        _bigrams(opts, "_g", "opt", VIEW_OPTGRAM),
    ]
    ctx = canon.filter(pl.col("ctx").is_not_null() & (pl.col("ctx") != ""))
    if ctx.height:
        parts.append(
            _bigrams(ctx.with_columns(pl.col("_i").alias("_g")), "_g", "ctx", VIEW_CONTEXT, settings.context_tokens)
        )
    out = pl.concat([p.cast({"_i": pl.UInt32, "feat": pl.UInt64, "view": pl.UInt8}) for p in parts])
    return out.unique(["_i", "feat", "view"]) if unique else out


def token_weights(canon: pl.DataFrame) -> pl.DataFrame:
    """IDF weight `w` in 0-1 of every stem or option word `tok` of a canonical frame: ln((N+1)/(df+1)) / ln(N+1)."""
    n = canon.height
    docs = canon.select(
        pl.concat_list(pl.col("stem").str.split(" "), pl.col("opts").list.join(" ").str.split(" "))
        .list.unique()
        .alias("tok")
    )
    df = docs.explode("tok").filter(pl.col("tok").is_not_null() & (pl.col("tok") != "")).group_by("tok").len()
    norm = math.log(n + 1) or 1.0
    return df.select("tok", ((pl.lit(n + 1.0) / (pl.col("len") + 1.0)).log() / norm).alias("w"))


def weight_map(weights: pl.DataFrame) -> dict[str, float]:
    """`token_weights` as a dict (for the pairwise checks)."""
    return dict(zip(weights["tok"].to_list(), weights["w"].to_list(), strict=True))


def canon_table(table: pa.Table | pl.DataFrame) -> pl.DataFrame:
    """`normalize.canonical_frame` of the question columns of a canonical table (extra columns ignored)."""
    df = table if isinstance(table, pl.DataFrame) else pl.from_arrow(table, rechunk=False)
    assert isinstance(df, pl.DataFrame)
    return canonical_frame(
        df.select([c for c in ("question", "options", "answer_label", "context") if c in df.columns])
    )


def index_frame(
    items: pl.DataFrame, settings: DecontamSettings, *, min_df: int = 1, feats: pl.DataFrame | None = None
) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """(items with `_item` and `optset_df`, postings, per-item totals) for a canonical frame of items.

    `min_df=2` keeps only features shared by two items (a self-join for dedup; totals still count every feature);
    `feats` are the items' features when already computed (`_i` = item number).
    """
    items = items.with_row_index("_item")
    optset = pl.col("opts").list.unique().list.sort().list.join("\x1f")
    items = items.with_columns(
        pl.when(pl.col("opts").list.len() >= 2)
        .then(pl.col("stem").n_unique().over(optset))
        .otherwise(0)
        .alias("optset_df")
    )
    if feats is None:
        feats = features(items.rename({"_item": "_i"}), settings)
    feats = feats.rename({"_i": "_item"})
    n = max(items.height, 1)
    caps = [
        settings.stem_max_df,
        settings.optset_max_df,
        settings.option_max_df,
        settings.ngram_max_df,
        settings.word_max_df,
        settings.ngram_max_df,
        settings.ngram_max_df,
    ]
    cap = pl.col("view").replace_strict(dict(enumerate(caps)), return_dtype=pl.Int64)
    exact = pl.col("view").is_in([VIEW_STEM, VIEW_OPTSET])
    counted = feats.lazy().group_by("feat", "view").len("df").filter(pl.col("df") <= cap)
    postings = (
        feats.lazy()
        .join(counted, on=["feat", "view"])
        .with_columns(
            pl.when(exact)
            .then(pl.lit(EXACT_WEIGHT))
            .otherwise((pl.lit(n + 1.0) / (pl.col("df") + 1.0)).log())
            .cast(pl.Float32)
            .alias("w")
        )
        .select("feat", "view", "_item", "w", "df")
        .collect(engine="streaming")
    )
    stemish = pl.col("view").is_in([VIEW_NGRAM, VIEW_WORD])
    totals = postings.group_by("_item").agg(
        pl.col("w").filter(stemish).sum().alias("tot_ngram"),
        pl.col("w").filter(pl.col("view") == VIEW_OPTGRAM).sum().alias("tot_optgram"),
        pl.col("w").filter(pl.col("view") == VIEW_CONTEXT).sum().alias("tot_ctx"),
        (pl.col("view") == VIEW_OPTION).sum().alias("n_opt"),
    )
    postings = postings.filter(pl.col("df") >= min_df).drop("df")
    return items, postings, totals


def build_index(benchmarks: list[tuple[str, pa.Table]], settings: DecontamSettings) -> BenchmarkIndex:
    """Canonicalise every benchmark item and build the inverted index of its retrieval features."""
    start = time.perf_counter()
    frames = []
    counts: dict[str, int] = {}
    for name, table in benchmarks:
        df = pl.from_arrow(table, rechunk=False)
        assert isinstance(df, pl.DataFrame)
        ids = (
            df["source_id"].cast(pl.String)
            if "source_id" in df.columns
            else pl.Series([str(i) for i in range(df.height)])
        )
        frames.append(canon_table(df).with_columns(pl.lit(name).alias("benchmark"), ids.alias("item_id")))
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


def candidates(
    postings: pl.DataFrame,
    totals: pl.DataFrame,
    canon: pl.DataFrame | None,
    settings: DecontamSettings,
    feats: pl.DataFrame | None = None,
) -> pl.DataFrame:
    """Candidate (row `_i`, `_item`) pairs of a canonical frame with `_i` (or of its `feats`): best `top_k` per row."""
    s = settings
    view, w = pl.col("view"), pl.col("w")
    zero = pl.lit(0.0, pl.Float32)
    stemish = view.is_in([VIEW_NGRAM, VIEW_WORD])
    if feats is None:
        assert canon is not None
        feats = features(canon, s, unique=False)
    hits = (
        feats.lazy()
        .join(postings.lazy(), on=["feat", "view"], how="inner")
        .select(
            (pl.col("_i").cast(pl.UInt64) * PAIR + pl.col("_item")).alias("pair"),  # one u64 key: faster group_by
            view.is_in([VIEW_STEM, VIEW_OPTSET]).cast(pl.UInt8).alias("exact"),
            (view == VIEW_STEM).cast(pl.UInt8).alias("x_stem"),
            (view == VIEW_OPTION).cast(pl.UInt16).alias("n_hit_opt"),
            pl.when(stemish).then(w).otherwise(zero).alias("s_ngram"),
            stemish.cast(pl.UInt16).alias("k_ngram"),
            pl.when(view == VIEW_OPTGRAM).then(w).otherwise(zero).alias("s_optgram"),
            (view == VIEW_OPTGRAM).cast(pl.UInt16).alias("k_optgram"),
            pl.when(view == VIEW_CONTEXT).then(w).otherwise(zero).alias("s_ctx"),
            (view == VIEW_CONTEXT).cast(pl.UInt16).alias("k_ctx"),
        )
    )
    pairs = (
        hits.group_by("pair")
        .agg(pl.all().sum())
        .with_columns(
            (pl.col("pair") // PAIR).cast(pl.UInt32).alias("_i"), (pl.col("pair") % PAIR).cast(pl.UInt32).alias("_item")
        )
        .join(totals.lazy(), on="_item", how="left")
    )

    def share(num: str, den: str) -> pl.Expr:
        den_ = pl.col(den).cast(pl.Float64).fill_null(0.0).clip(lower_bound=1e-9)
        return (pl.col(num).cast(pl.Float64) / den_).clip(upper_bound=1.0).fill_null(0.0)

    item_share, opt_share = share("s_ngram", "tot_ngram"), share("n_hit_opt", "n_opt")
    gram_share, ctx_share = share("s_optgram", "tot_optgram"), share("s_ctx", "tot_ctx")
    k = s.min_shared_features
    cand = (
        (pl.col("exact") > 0)
        | (pl.col("n_hit_opt") >= s.min_option_hits)
        | ((pl.col("k_ngram") >= k) & (item_share >= s.min_item_share))
        | ((pl.col("k_optgram") >= k) & (gram_share >= s.min_optgram_share))
        | ((pl.col("k_ctx") >= k) & (ctx_share >= s.min_context_share))
    )
    rank = pl.col("exact").cast(pl.Float64) + pl.col("x_stem") + item_share + opt_share + gram_share + ctx_share
    return (
        pairs.filter(cand)
        .select("_i", "_item", rank.alias("rank"))
        .collect(engine="streaming")
        .sort(["_i", "rank", "_item"], descending=[False, True, False])
        .group_by("_i", maintain_order=True)
        .head(s.top_k)
    )


class Side:
    """One canonical question ready for pairwise checks: stem token set and its IDF mass, options, answer, context."""

    __slots__ = ("answer", "ctx", "info", "opts", "stem", "toks")

    def __init__(self, stem: str, opts: list[str] | None, answer: str | None, ctx: str | None, info: float):
        self.stem = stem or ""
        self.toks = frozenset(self.stem.split())
        self.info = info
        self.opts = [o for o in dict.fromkeys(opts or []) if o]
        self.answer = answer or None
        self.ctx = frozenset(ctx.split()) if ctx else frozenset()


def stem_info(canon: pl.DataFrame, weights: pl.DataFrame, unseen: float) -> pl.Series:
    """IDF mass of each row's distinct stem words (column-wise): the sum of their weights (`unseen` if unknown)."""
    toks = (
        canon.select(pl.int_range(pl.len(), dtype=pl.UInt32).alias("_r"), pl.col("stem").str.split(" ").list.unique())
        .explode("stem")
        .filter(pl.col("stem").is_not_null() & (pl.col("stem") != ""))
        .join(weights, left_on="stem", right_on="tok", how="left")
        .group_by("_r")
        .agg(pl.col("w").fill_null(unseen).sum())
    )
    rows = pl.DataFrame({"_r": pl.arange(0, canon.height, eager=True, dtype=pl.UInt32)})
    return rows.join(toks, on="_r", how="left", maintain_order="left")["w"].fill_null(0.0)


def sides(canon: pl.DataFrame, weights: pl.DataFrame, unseen: float) -> list[Side]:
    """One `Side` per row of a canonical frame (`weights`: the `tok`, `w` frame of `token_weights`)."""
    cols = [canon[c].to_list() for c in ("stem", "opts", "answer", "ctx")]
    info = stem_info(canon, weights, unseen).to_list()
    return [Side(*vals) for vals in zip(*cols, info, strict=True)]


def same_option(a: str, b: str, s: DecontamSettings) -> bool:
    """Whether two canonical option texts are the same option: equal, or rapidfuzz ratio above a length-scaled bar."""
    if a == b:
        return True
    if not a or not b:
        return False
    bar = s.option_ratio_short if min(len(a), len(b)) < s.option_short_chars else s.option_ratio_long
    if not fuzz.ratio(a, b, score_cutoff=bar):
        return False
    na, nb = _numerals(a), _numerals(b)  # "type ii reaction" is not "type iv reaction", nor "10 mg" "40 mg"
    return not na or not nb or na <= nb or nb <= na


def _numerals(text: str) -> frozenset[str]:
    return frozenset(t for t in text.split() if t.isdigit() or NUMERAL.fullmatch(t))


def option_hits(row: list[str], item: list[str], s: DecontamSettings) -> int:
    """How many of the item's options have their own same option among the row's (exact first, then fuzzy)."""
    rest = [o for o in row if o not in item]
    hits = 0
    for o in item:
        if o in row:
            hits += 1
            continue
        for r in rest:
            if same_option(o, r, s):
                hits += 1
                rest.remove(r)
                break
    return hits


def confirm(row: Side, item: Side, item_optset_df: int, w: dict[str, float], s: DecontamSettings) -> tuple[str, float]:
    """The first rule of RULES that holds for (row, item) and its similarity in 0-1, or ("", best similarity)."""
    shared = sum(w.get(t, s.unseen_weight) for t in row.toks & item.toks)
    c_row = shared / row.info if row.info else 0.0  # share of the row's stem weight found in the item
    c_item = shared / item.info if item.info else 0.0  # share of the item's stem weight found in the row
    both_opts = len(row.opts) >= 2 and len(item.opts) >= 2
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
    if row.stem and row.stem == item.stem and informative and not conflict:
        return "stem_exact", 1.0
    if item.ctx and len(item.ctx) >= s.min_context_tokens:
        c_ctx = len(row.ctx & item.ctx) / len(item.ctx)
        if c_ctx >= s.context_contained:
            return "context", c_ctx
    if support and jacc >= s.option_cover:
        if item_optset_df <= 1:
            opt_info = sum(w.get(t, s.unseen_weight) for t in {t for o in item.opts for t in o.split()})
            if opt_info + shared >= s.min_option_evidence:
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
                best = got.get(i)
                if best is None or (score, -order[rule]) > (best[2], -order[best[1]]):
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


def unique_questions(table: pa.Table) -> tuple[pl.DataFrame, pl.DataFrame | None]:
    """The question columns with one row per question `id` (traces repeat it), and the id of each kept row or None."""
    cols = [c for c in ("id", "question", "options", "answer_label", "context") if c in table.column_names]
    df = pl.from_arrow(table.select(cols), rechunk=False)
    assert isinstance(df, pl.DataFrame)
    if "id" in df.columns and df["id"].n_unique() < df.height:
        first = df.with_row_index("_row").group_by("id", maintain_order=True).agg(pl.col("_row").first())
        return df[first["_row"].to_list()], first.select("id")
    return df, None


def broadcast(table: pa.Table, per_question: pl.DataFrame, ids: pl.DataFrame | None) -> pl.DataFrame:
    """Per-question results back to every row of `table` (in row order), through the question `id` when deduplicated."""
    if ids is None:
        return per_question
    keyed = per_question.with_columns(ids["id"].alias("_id"))
    rows = pl.from_arrow(table.select(["id"]))
    assert isinstance(rows, pl.DataFrame)
    return rows.rename({"id": "_id"}).join(keyed, on="_id", how="left", maintain_order="left").drop("_id")


def append_columns(table: pa.Table, values: pl.DataFrame, fields: list[pa.Field]) -> pa.Table:
    """`table` with `fields` (taken from `values`) appended, replacing columns of the same name."""
    out = table
    for f in fields:
        if f.name in out.column_names:
            out = out.drop_columns([f.name])
        out = out.append_column(f, values[f.name].to_arrow().cast(f.type))
    return out


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
