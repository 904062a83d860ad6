"""The candidate index shared by decontamination and dedup: posting lists of retrieval features, candidate pairs.

Questions are canonicalised by `medr1_data.normalize` (`canon_table`) into a stem, option texts, the answer text and
the context. Candidates come from views that need no minimum length, joined column-wise (polars) against an inverted
index of the indexed items (`index_frame`, `candidates`):

- `stem`: exact hash of the canonical stem; `optset`: exact hash of the sorted option set;
- `option`: each option text, when at most `option_max_df` items use it ("none of the above" retrieves nothing);
- `ngram`: stem word bigrams used by at most `ngram_max_df` items and stem words used by at most `word_max_df`
  (boilerplate such as "which of the following is the most likely" is shared by hundreds of MedQA items and so
  never retrieves); `optgram`: the same bigrams inside option texts; `context`: bigrams of the context's first
  `context_tokens` words (PubMedQA abstracts).

A pair (row, item) is a candidate when an exact view hits, `min_option_hits` rare options match verbatim, or at least
`min_shared_features` rare n-grams are shared and their weight is a large enough share of the item's own (stem,
options or context); each row keeps its `top_k` best candidates. The pairwise checks that confirm candidates build on
`Side` (token set and IDF mass from `token_weights`) and `same_option`/`option_hits`; `unique_questions`,
`broadcast` and `append_columns` take a table to one row per question and the results back to its rows.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import ClassVar, Protocol

import polars as pl
import pyarrow as pa
from rapidfuzz import fuzz

from medr1_data.config import Bounds
from medr1_data.normalize import canonical_frame

VIEW_STEM, VIEW_OPTSET, VIEW_OPTION, VIEW_NGRAM, VIEW_WORD, VIEW_OPTGRAM, VIEW_CONTEXT = range(7)
SEED = 0x5EED
MIX = 0x9E3779B97F4A7C15  # odd 64-bit constant: bigram hash = h(w1) * MIX ^ h(w2) (wrapping arithmetic)
SALT = [0, 0x0F0F0F0F0F0F0F0F, 0x3C3C3C3C3C3C3C3C, 0, 0x6996699669966996, 0x1248124812481248, 0x5A5A5A5A5A5A5A5A]
NUMERAL = re.compile(r"[ivx]{1,4}|[a-e]")  # roman numerals and single option-like letters in option texts
PAIR = 1 << 32  # (row, item) pair key = row * PAIR + item
EXACT_WEIGHT = 50.0  # retrieval weight of an exact stem or option-set hit (outranks any n-gram evidence)
OPTSET = pl.col("opts").list.unique().list.sort().list.join("\x1f")  # an option set, in any order: one key
# Weights are rounded to multiples of a power of two so that every sum of them is exact in float64, whatever order
# threads or set iteration add them in: tied items stay tied and outputs are identical from run to run.
QUANTUM_BITS = 20  # token weights (0-1)
POSTING_BITS = 16  # retrieval weights (0-50, stored as float32)


@dataclass
class IndexSettings:
    """Candidate retrieval thresholds (column-wise join against the inverted index); the defaults are tuned."""

    ngram_max_df: int = 10  # a bigram (stem, options, context) used by more benchmark items is boilerplate
    word_max_df: int = 3  # a single stem word retrieves only when at most this many items use it
    option_max_df: int = 3  # an option text retrieves only when at most this many items use it
    optset_max_df: int = 50  # exact option sets shared by more items do not retrieve, nor count as option evidence
    stem_max_df: int = 50  # exact stems shared by more items do not retrieve
    context_tokens: int = 128  # context words (from the start) that feed the context view
    min_item_share: float = 0.35  # candidate: shared rare stem n-gram weight / the item's own is at least this
    min_optgram_share: float = 0.5  # candidate: shared option bigram weight / the item's own
    min_context_share: float = 0.3  # candidate: shared context bigram weight / the item's own
    min_option_hits: int = 2  # candidate: at least this many of the item's rare option texts appear verbatim
    min_shared_features: int = 2  # candidate by a share (stem, option or context n-grams): at least this many shared
    top_k: int = 4  # candidates confirmed per row (best retrieval score first)
    batch_rows: int = 20_000  # rows per retrieval batch (bounds memory)

    BOUNDS: ClassVar[Bounds] = {
        **dict.fromkeys(("min_item_share", "min_optgram_share", "min_context_share"), (0.0, 1.0)),
        **dict.fromkeys(
            ("ngram_max_df", "word_max_df", "option_max_df", "optset_max_df", "stem_max_df", "context_tokens",
             "min_option_hits", "min_shared_features", "top_k", "batch_rows"),
            (1, None),
        ),
    }  # fmt: skip


class OptionBars(Protocol):
    """The thresholds `same_option` reads (fields of `DecontamSettings`)."""

    option_ratio_short: float
    option_ratio_long: float
    option_short_chars: int


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


def features(canon: pl.DataFrame, settings: IndexSettings, *, unique: bool = True) -> pl.DataFrame:
    """Retrieval features (`_i`, `feat` u64, `view` u8) of a canonical frame with a `_i` column (`unique`: once each).

    Words and option texts are always distinct per row; without `unique` a bigram repeated in one text counts twice,
    which only raises a share that is clipped at 1 anyway (queries, and the dedup self-index, skip that cost).
    """
    lit = pl.lit
    optset = OPTSET
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
    return weights_from_counts(token_counts(canon), canon.height)


def token_counts(canon: pl.DataFrame) -> pl.DataFrame:
    """Document frequency `len` of every stem or option word `tok` of a canonical frame (counts of parts add up)."""
    docs = canon.select(
        pl.concat_list(pl.col("stem").str.split(" "), pl.col("opts").list.join(" ").str.split(" "))
        .list.unique()
        .alias("tok")
    )
    return docs.explode("tok").filter(pl.col("tok").is_not_null() & (pl.col("tok") != "")).group_by("tok").len()


def weights_from_counts(df: pl.DataFrame, n: int) -> pl.DataFrame:
    """`token_weights` from the `token_counts` (`tok`, `len`) of `n` questions."""
    norm = math.log(n + 1) or 1.0
    return df.select("tok", _quantized((pl.lit(n + 1.0) / (pl.col("len") + 1.0)).log() / norm).alias("w"))


def quantize(x: float) -> float:
    """`x` rounded to a multiple of 2^-QUANTUM_BITS (weights whose sums are exact in any order)."""
    return round(x * (1 << QUANTUM_BITS)) / (1 << QUANTUM_BITS)


def _quantized(e: pl.Expr, bits: int = QUANTUM_BITS) -> pl.Expr:
    return (e * (1 << bits)).round() / (1 << bits)


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
    items: pl.DataFrame, settings: IndexSettings, *, min_df: int = 1, feats: pl.DataFrame | None = None
) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """(items with `_item` and `optset_df`, postings, per-item totals) for a canonical frame of items.

    `min_df=2` keeps only features shared by two items (a self-join for dedup; totals still count every feature);
    `feats` are the items' features when already computed (`_i` = item number).
    """
    items = items.with_row_index("_item")
    optset = OPTSET
    items = items.with_columns(
        pl.when(pl.col("opts").list.len() >= 2)
        .then(pl.col("stem").n_unique().over(optset))
        .otherwise(0)
        .alias("optset_df")
    )
    if feats is None:
        feats = features(items.rename({"_item": "_i"}), settings)
    postings = _postings(feats.rename({"_i": "_item"}), settings, max(items.height, 1))
    totals = item_totals(postings.lazy()).collect()
    postings = postings.filter(pl.col("df") >= min_df).drop("df")
    return items, postings, totals


def _postings(feats: pl.DataFrame, settings: IndexSettings, n: int) -> pl.DataFrame:
    """Posting lists (`feat`, `view`, `_item`, weight `w`, `df`) of the features under their view's df cap."""
    counted = feats.lazy().group_by("feat", "view").len("df").filter(pl.col("df") <= view_cap(settings))
    return (
        feats.lazy()
        .join(counted, on=["feat", "view"])
        .with_columns(posting_weight(n))
        .select("feat", "view", "_item", "w", "df")
        .collect(engine="streaming")
    )


def view_cap(settings: IndexSettings) -> pl.Expr:
    """The df cap of each row's `view`: features used by more items do not retrieve."""
    s = settings
    caps = [s.stem_max_df, s.optset_max_df, s.option_max_df, s.ngram_max_df, s.word_max_df, s.ngram_max_df]
    caps.append(s.ngram_max_df)
    return pl.col("view").replace_strict(dict(enumerate(caps)), return_dtype=pl.Int64)


def posting_weight(n: int) -> pl.Expr:
    """Retrieval weight `w` of a feature used `df` times among `n` items (exact views: EXACT_WEIGHT), float32."""
    exact = pl.col("view").is_in([VIEW_STEM, VIEW_OPTSET])
    idf = _quantized((pl.lit(n + 1.0) / (pl.col("df") + 1.0)).log(), POSTING_BITS)
    # a multiple of 2^-16 below 2^8 is exact in float32
    return pl.when(exact).then(pl.lit(EXACT_WEIGHT)).otherwise(idf).cast(pl.Float32).alias("w")


def item_totals(postings: pl.LazyFrame) -> pl.LazyFrame:
    """Per `_item` of postings (`view`, `w`): its stem, option-bigram and context weight, and its option count."""
    stemish = pl.col("view").is_in([VIEW_NGRAM, VIEW_WORD])
    w = pl.col("w").cast(pl.Float64)
    return postings.group_by("_item").agg(
        w.filter(stemish).sum().alias("tot_ngram"),
        w.filter(pl.col("view") == VIEW_OPTGRAM).sum().alias("tot_optgram"),
        w.filter(pl.col("view") == VIEW_CONTEXT).sum().alias("tot_ctx"),
        (pl.col("view") == VIEW_OPTION).sum().alias("n_opt"),
    )


def candidates(
    postings: pl.DataFrame,
    totals: pl.DataFrame,
    canon: pl.DataFrame | None,
    settings: IndexSettings,
    feats: pl.DataFrame | None = None,
) -> pl.DataFrame:
    """Candidate (row `_i`, `_item`) pairs of a canonical frame with `_i` (or of its `feats`): best `top_k` per row."""
    if feats is None:
        assert canon is not None
        feats = features(canon, settings, unique=False)
    hits = feats.lazy().join(postings.lazy(), on=["feat", "view"], how="inner").select("_i", "_item", "view", "w")
    return best_candidates(pair_hits(hits), totals, settings)


def best_candidates(pairs: pl.LazyFrame, totals: pl.DataFrame, settings: IndexSettings) -> pl.DataFrame:
    """The `pair_hits` that are candidates by the settings' rules, the best `top_k` per row (`_i`, `_item`, `rank`)."""
    s = settings
    pairs = pairs.join(totals.lazy(), on="_item", how="left")
    item_share, opt_share = _share("s_ngram", "tot_ngram"), _share("n_hit_opt", "n_opt")
    gram_share, ctx_share = _share("s_optgram", "tot_optgram"), _share("s_ctx", "tot_ctx")
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


def pair_hits(hits: pl.LazyFrame) -> pl.LazyFrame:
    """Per (`_i`, `_item`) pair of feature hits (`view`, `w`): exact hits, option hits, weight sums and counts."""
    view, w = pl.col("view"), pl.col("w").cast(pl.Float64)
    zero = pl.lit(0.0, pl.Float64)
    stemish = view.is_in([VIEW_NGRAM, VIEW_WORD])
    per_hit = hits.select(
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
    return (
        per_hit.group_by("pair")
        .agg(pl.all().sum())
        .with_columns(
            (pl.col("pair") // PAIR).cast(pl.UInt32).alias("_i"), (pl.col("pair") % PAIR).cast(pl.UInt32).alias("_item")
        )
    )


def _share(num: str, den: str) -> pl.Expr:
    """`num` / `den` clipped to 0-1 (0 where either is missing)."""
    den_ = pl.col(den).cast(pl.Float64).fill_null(0.0).clip(lower_bound=1e-9)
    return (pl.col(num).cast(pl.Float64) / den_).clip(upper_bound=1.0).fill_null(0.0)


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
        .agg(pl.col("w").fill_null(quantize(unseen)).sum())
    )
    rows = pl.DataFrame({"_r": pl.arange(0, canon.height, eager=True, dtype=pl.UInt32)})
    return rows.join(toks, on="_r", how="left", maintain_order="left")["w"].fill_null(0.0)


def sides(canon: pl.DataFrame, weights: pl.DataFrame, unseen: float) -> list[Side]:
    """One `Side` per row of a canonical frame (`weights`: the `tok`, `w` frame of `token_weights`)."""
    cols = [canon[c].to_list() for c in ("stem", "opts", "answer", "ctx")]
    info = stem_info(canon, weights, unseen).to_list()
    return [Side(*vals) for vals in zip(*cols, info, strict=True)]


def same_option(a: str, b: str, s: OptionBars) -> bool:
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


def option_hits(row: list[str], item: list[str], s: OptionBars) -> int:
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
