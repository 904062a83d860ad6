"""Near-duplicate questions inside the dataset: clusters across sources, one question kept per cluster.

Sources repeat questions (MedQA's 4- and 5-option versions, MedMCQA rows copied from the same exam, re-crawled rows
with shuffled options). `dedup` works on questions (one per `id`; trace rows of the same question share it):

1. **Exact groups**: questions with the same canonical stem, option set (as a set: shuffled options and new letters
   do not matter), answer text and context are one group at once (polars group_by).
2. **Near duplicates** among the groups' first questions: the candidate index of `medr1_data.index` built on the
   dataset itself (IDF weights from the dataset), each question querying it; a candidate pair is the same question
   (`same_question`) when the stems agree (equal, or IDF-weighted containment >= `near` both ways; `near_no_options`
   when a question has no options), their option sets match (fuzzy, one to one; Jaccard >= `option_jaccard`) with
   the same answer text, and their contexts, if both have one, contain each other. Questions whose stems carry too
   little information to tell questions apart ("Which of the following is true?") need the same option set.
3. **Clusters** are the connected components of those pairs (label propagation with polars group_by), and every
   question of an exact group follows its group.

Keep rule (`keep_order`), in order: the question with more correct traces (`is_correct`, when the column exists),
then the source listed first in `source_priority` (unlisted sources after, all equal), then more options, then the
longer stem (an untruncated copy), then the smallest `id`. Every row gets `dup_cluster` (the kept question's `id`)
and `dup_keep` (True on every row of the kept question); no row is dropped here (`select` drops by `drop_reason`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

import polars as pl
import pyarrow as pa

from medr1_data import Medr1Error
from medr1_data.config import Bounds
from medr1_data.decontam import DecontamSettings
from medr1_data.index import (
    IndexSettings,
    Side,
    append_columns,
    broadcast,
    candidates,
    canon_table,
    features,
    index_frame,
    option_hits,
    same_option,
    sides,
    token_weights,
    unique_questions,
    weight_map,
)


@dataclass
class DedupSettings:
    """Near-duplicate thresholds and the keep rule, in one place; the defaults are the tuned values."""

    near: float = 0.75  # IDF-weighted stem containment needed both ways when the option sets also match
    near_no_options: float = 0.9  # ... when either question has no options
    option_jaccard: float = 0.6  # option sets: matched options / union (4 of 5 options: 0.8; shuffled: 1.0)
    same_answer: bool = True  # the gold answer texts must match too (when both questions have one)
    context_contained: float = 0.8  # both contexts (abstracts), when present, contain this share of each other
    min_stem_info: float = 0.9  # below this IDF mass a stem alone proves nothing: the option sets must be equal
    unseen_weight: float = 0.7  # token weight for words missing from the weights (not used on the dataset itself)
    top_k: int = 5  # candidates confirmed per question
    min_item_share: float = 0.5  # candidate: shared rare stem bigram weight / the other question's own
    ngram_max_df: int = 20  # stem/option bigrams shared by more questions do not retrieve
    exact_max_df: int = 5_000  # exact stem / option-set hashes shared by more questions do not retrieve
    batch_rows: int = 20_000  # questions per retrieval batch
    source_priority: tuple[str, ...] = field(default_factory=tuple)  # keep rule: earlier sources win ties

    BOUNDS: ClassVar[Bounds] = {
        **{k: (0.0, 1.0) for k in ("near", "near_no_options", "option_jaccard", "context_contained", "min_item_share")},
        "unseen_weight": (0.0, 1.0),
        "min_stem_info": (0.0, None),
        **{k: (1, None) for k in ("top_k", "ngram_max_df", "exact_max_df", "batch_rows")},
    }

    def to_dict(self) -> dict[str, Any]:
        """The settings as a JSON-able dict."""
        return asdict(self)

    def retrieval(self) -> IndexSettings:
        """The candidate-index settings used for the self-join."""
        return IndexSettings(
            ngram_max_df=self.ngram_max_df,
            stem_max_df=self.exact_max_df,
            optset_max_df=self.exact_max_df,
            top_k=self.top_k + 1,  # each question also finds itself
            min_item_share=self.min_item_share,
            batch_rows=self.batch_rows,
        )


OUT_FIELDS = [pa.field("dup_cluster", pa.string(), nullable=False), pa.field("dup_keep", pa.bool_(), nullable=False)]
OPTION_BARS = DecontamSettings()  # option texts are the same option by decontamination's rapidfuzz bars


def same_question(a: Side, b: Side, w: dict[str, float], s: DedupSettings) -> bool:
    """Whether two canonical questions are the same question (see the module docstring)."""
    both_opts = len(a.opts) >= 2 and len(b.opts) >= 2
    if a.stem != b.stem:
        if min(a.info, b.info) < s.min_stem_info:
            if not (both_opts and set(a.opts) == set(b.opts)):
                return False
        else:
            shared = sum(w.get(t, s.unseen_weight) for t in a.toks & b.toks)
            if min(shared / a.info, shared / b.info) < (s.near if both_opts else s.near_no_options):
                return False
    elif not (a.stem or both_opts):
        return False
    if a.ctx and b.ctx:
        shared_ctx = len(a.ctx & b.ctx)
        if min(shared_ctx / len(a.ctx), shared_ctx / len(b.ctx)) < s.context_contained:
            return False
    if both_opts:
        hits = option_hits(a.opts, b.opts, OPTION_BARS)
        if hits / (len(a.opts) + len(b.opts) - hits) < s.option_jaccard:
            return False
        if s.same_answer and a.answer and b.answer and not same_option(a.answer, b.answer, OPTION_BARS):
            return False
    return True


def components(n: int, edges: pl.DataFrame) -> pl.DataFrame:
    """Connected components of nodes 0..n-1 given (`a`, `b`) edges: `node`, `label` (the smallest node of its part)."""
    labels = pl.DataFrame({"node": pl.arange(0, n, eager=True, dtype=pl.UInt32)}).with_columns(
        pl.col("node").alias("label")
    )
    if not edges.height:
        return labels
    both = pl.concat([edges.select("a", "b"), edges.select(pl.col("b").alias("a"), pl.col("a").alias("b"))])
    while True:
        spread = (
            both.join(labels.rename({"node": "b", "label": "lb"}), on="b")
            .group_by("a")
            .agg(pl.col("lb").min())
            .rename({"a": "node"})
        )
        new = labels.join(spread, on="node", how="left").select(
            "node", pl.min_horizontal("label", pl.col("lb").fill_null(pl.col("label"))).alias("label")
        )
        # Pointer jumping: a node takes its label's label, so long chains collapse in a few rounds.
        new = new.join(new.rename({"node": "label", "label": "l2"}), on="label", how="left").select(
            "node", pl.min_horizontal("label", "l2").alias("label")
        )
        if new["label"].equals(labels["label"]):
            return new
        labels = new


def _near_pairs(reps: pl.DataFrame, s: DedupSettings) -> pl.DataFrame:
    """Confirmed (a, b) near-duplicate pairs among the exact groups' representatives (`_i` = 0..n-1)."""
    rs = s.retrieval()
    feats = features(reps, rs, unique=False)
    items, postings, totals = index_frame(reps.drop("_i"), rs, min_df=2, feats=feats)
    weight_frame = token_weights(items)
    weights = weight_map(weight_frame)
    side: dict[int, Side] = {}
    found: list[tuple[int, int]] = []
    for start in range(0, reps.height, s.batch_rows):
        batch = feats.filter(pl.col("_i").is_between(start, start + s.batch_rows - 1))
        cands = candidates(postings, totals, None, rs, feats=batch)
        cands = (
            cands.filter(pl.col("_i") != pl.col("_item"))  # not itself, and each pair once
            .select(pl.min_horizontal("_i", "_item").alias("a"), pl.max_horizontal("_i", "_item").alias("b"))
            .unique()
        )
        need = [k for k in set(cands["a"].to_list()) | set(cands["b"].to_list()) if k not in side]
        side.update(zip(need, sides(items[need], weight_frame, s.unseen_weight), strict=True))
        for i, j in zip(cands["a"].to_list(), cands["b"].to_list(), strict=True):
            if same_question(side[i], side[j], weights, s):
                found.append((i, j))
    return pl.DataFrame(found, schema={"a": pl.UInt32, "b": pl.UInt32}, orient="row").unique()


def dedup(table: pa.Table, settings: DedupSettings | None = None) -> pa.Table:
    """Add `dup_cluster` (the kept question's `id`) and `dup_keep` to every row; never drops rows."""
    s = settings or DedupSettings()
    if "id" not in table.column_names:
        raise Medr1Error("dedup: the table has no `id` column")
    uniq, ids = unique_questions(table)
    canon = canon_table(uniq).with_columns(uniq["id"].cast(pl.String).alias("id")).with_row_index("_q")
    exact_key = pl.concat_str(
        [
            pl.col("stem"),
            pl.col("opts").list.unique().list.sort().list.join("\x1f"),
            pl.col("answer").fill_null(""),
            pl.col("ctx").fill_null(""),
        ],
        separator="\x1e",
    )
    canon = canon.with_columns(pl.col("_q").min().over(exact_key).alias("_group"))
    reps = canon.filter(pl.col("_q") == pl.col("_group")).with_row_index("_i")
    pairs = _near_pairs(reps.select("_i", "stem", "opts", "answer", "ctx"), s)
    labels = components(reps.height, pairs)
    group_label = reps.select("_group", "_i").join(labels, left_on="_i", right_on="node").select("_group", "label")
    canon = canon.join(group_label, on="_group", how="left", maintain_order="left")
    keep = _keep_order(table, canon, s)
    kept = keep.sort(["label", "_rank"]).group_by("label", maintain_order=True).agg(pl.col("id").first().alias("kept"))
    per_q = (
        canon.select("_q", "id", "label")
        .join(kept, on="label", how="left", maintain_order="left")
        .select(pl.col("kept").alias("dup_cluster"), (pl.col("kept") == pl.col("id")).alias("dup_keep"))
    )
    return append_columns(table, broadcast(table, per_q, ids), OUT_FIELDS)


def _keep_order(table: pa.Table, canon: pl.DataFrame, s: DedupSettings) -> pl.DataFrame:
    """Per question: `label`, `id` and `_rank` (smaller is kept first) following the documented keep rule."""
    cols = ["id"] + [c for c in ("source", "is_correct") if c in table.column_names]
    rows = pl.from_arrow(table.select(cols))
    assert isinstance(rows, pl.DataFrame)
    correct = (
        rows.group_by("id").agg(pl.col("is_correct").fill_null(False).sum().alias("n_correct"))
        if "is_correct" in rows.columns
        else rows.select("id").unique().with_columns(pl.lit(0).alias("n_correct"))
    )
    source = rows.group_by("id").agg(pl.col("source").first()) if "source" in rows.columns else None
    order = {name: k for k, name in enumerate(s.source_priority)}
    out = canon.select(
        "id", "label", pl.col("opts").list.len().alias("n_opts"), pl.col("stem").str.len_chars().alias("n_chars")
    )
    out = out.join(correct.with_columns(pl.col("id").cast(pl.String)), on="id", how="left")
    if source is not None:
        prio = pl.col("source").cast(pl.String).replace_strict(order, default=len(order), return_dtype=pl.Int64)
        out = out.join(source.with_columns(pl.col("id").cast(pl.String)), on="id", how="left").with_columns(
            prio.alias("_prio")
        )
    else:
        out = out.with_columns(pl.lit(0).alias("_prio"))
    ranked = out.sort(
        ["label", "n_correct", "_prio", "n_opts", "n_chars", "id"],
        descending=[False, True, False, True, True, False],
        nulls_last=True,
    )
    return ranked.with_columns(pl.int_range(pl.len()).alias("_rank")).select("label", "id", "_rank")
