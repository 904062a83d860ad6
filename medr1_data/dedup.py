"""Near-duplicate questions inside the dataset: clusters across sources, one question kept per cluster.

Sources repeat questions (MedQA's 4- and 5-option versions, MedMCQA rows copied from the same exam, re-crawled rows
with shuffled options). `dedup` works on questions (one per `id`; trace rows of the same question share it):

1. **Exact groups**: questions with the same canonical stem, option set (as a set: shuffled options and new letters
   do not matter), answer text and context are one group at once (polars group_by).
2. **Near duplicates** among the groups' first questions: the candidate index of `medr1_data.index` built on the
   dataset itself (IDF weights from the dataset; `medr1_data.selfindex`), each question querying it; a candidate
   pair is the same question (`same_question`) when the stems agree (equal, or IDF-weighted containment >= `near`
   both ways; `near_no_options` when a question has no options), their option sets match (fuzzy, one to one;
   Jaccard >= `option_jaccard`) with the same answer text, and their contexts, if both have one, contain each
   other. Questions whose stems carry too little information to tell questions apart ("Which of the following is
   true?") need the same option set.
3. **Clusters** are the connected components of those pairs (label propagation with polars group_by), and every
   question of an exact group follows its group.

Keep rule (`keep_order`), in order: the question with more correct traces (`is_correct`, when the column exists),
then the source listed first in `source_priority` (unlisted sources after, all equal), then more options, then the
longer stem (an untruncated copy), then the smallest `id`. Every row gets `dup_cluster` (the kept question's `id`)
and `dup_keep` (True on every row of the kept question); no row is dropped here (`select` drops by `drop_reason`).

Memory is bounded (issue 19): questions are canonicalised `batch_rows` at a time and only integers are kept per
question (exact-key hash, option count, stem length); the retrieval features are spilled in hash partitions
(`selfindex.Spill`), candidates are generated per item range, and canonical text is recomputed only for the
questions that need it (members of a hash group, candidate pairs). Batches are canonicalised, and spill partitions
indexed, in threads (`workers.thread_map`: polars runs most of a batch's kernels on one core). 2.2M questions:
2.2 GB peak with the input table (`python benchmarks/dedup.py`). Batches and partitions never change the result.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

import numpy as np
import polars as pl
import pyarrow as pa

from medr1_data import Medr1Error
from medr1_data.config import Bounds
from medr1_data.decontam import DecontamSettings
from medr1_data.index import (
    SEED,
    IndexSettings,
    Side,
    append_columns,
    canon_table,
    features,
    option_hits,
    same_option,
    sides,
    token_counts,
    weight_map,
    weights_from_counts,
)
from medr1_data.progress import release_memory
from medr1_data.selfindex import Spill, build_self_index, self_candidates
from medr1_data.shards import take_rows
from medr1_data.workers import thread_map


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
    batch_rows: int = 20_000  # questions per batch (canonicalisation, candidates, checks): bounds memory only
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


FEATURES_PER_QUESTION = 80  # retrieval feature rows of a question, a generous mean (spill partitions from it)
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


EXACT_KEY = pl.concat_str(
    [
        pl.col("stem"),
        pl.col("opts").list.unique().list.sort().list.join("\x1f"),
        pl.col("answer").fill_null(""),
        pl.col("ctx").fill_null(""),
    ],
    separator="\x1e",
)  # one exact group: the same stem, option set (any order), answer text and context


@dataclass
class Questions:
    """A table's questions (one per `id`, in order of first appearance): each one's first row, each row's question."""

    table: pa.Table
    n: int
    first_row: np.ndarray | None  # per question; None when every row is its own question
    of_row: np.ndarray | None  # per row

    @classmethod
    def of(cls, table: pa.Table) -> Questions:
        """The questions of a table with an `id` column."""
        ids = pl.from_arrow(table.select(["id"]), rechunk=False)
        assert isinstance(ids, pl.DataFrame)
        if ids["id"].n_unique() == ids.height:
            return cls(table, ids.height, None, None)
        first = ids.with_row_index("_row").select(pl.col("_row").min().over("id"))["_row"]
        of_row = (first.rank("dense") - 1).cast(pl.UInt32).to_numpy()
        first_row = first.unique().sort().to_numpy()
        return cls(table, len(first_row), first_row, of_row)

    def rows(self, qs: np.ndarray) -> np.ndarray:
        """The first row of each of the questions `qs`."""
        return qs if self.first_row is None else self.first_row[qs]

    def canon(self, qs: np.ndarray) -> pl.DataFrame:
        """`canon_table` of the questions `qs` (in that order)."""
        cols = [c for c in ("question", "options", "answer_label", "context") if c in self.table.column_names]
        # `Table.take` from a table of many chunks costs about the whole table, once a batch
        return canon_table(take_rows(self.table.select(cols), self.rows(qs)))


class _Counts:
    """Token document frequencies (`tok`, `len`) summed over batches. Batches wait until they hold as many rows as
    the total before they are merged into it: each merge costs about the vocabulary, and summing batch by batch
    would cost it once a batch (2.2M questions: 110 batches, a vocabulary of millions)."""

    def __init__(self) -> None:
        self.total = pl.DataFrame(schema={"tok": pl.String, "len": pl.Int64})
        self.pending: list[pl.DataFrame] = []
        self.rows = 0

    def add(self, part: pl.DataFrame, sign: int = 1) -> None:
        """Add (`sign` 1) or take away (-1) one batch's `token_counts`."""
        self.pending.append(part.select("tok", (pl.col("len").cast(pl.Int64) * sign).alias("len")))
        self.rows += part.height
        if self.rows >= self.total.height:
            self._merge()

    def _merge(self) -> None:
        if self.pending:
            self.total = pl.concat([self.total, *self.pending]).group_by("tok").agg(pl.col("len").sum())
            self.pending, self.rows = [], 0

    def frame(self) -> pl.DataFrame:
        """The sums so far, tokens whose count fell to 0 left out."""
        self._merge()
        return self.total.filter(pl.col("len") > 0)


def _scan(q: Questions, s: DedupSettings, spill: Spill) -> tuple[np.ndarray, np.ndarray, np.ndarray, _Counts]:
    """Pass over every question a batch at a time: (exact-key hash, option count, stem length, token counts).

    The batch's retrieval features go to `spill` (`_i` = question number); the canonical text is dropped. Batches
    are canonicalised in threads (polars) and taken in order.
    """
    rs = s.retrieval()

    def scan_batch(lo: int) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
        canon = q.canon(np.arange(lo, min(q.n, lo + s.batch_rows))).with_row_index("_i", offset=lo)
        cols = canon.select(
            EXACT_KEY.hash(SEED).alias("h"), pl.col("opts").list.len().alias("o"), pl.col("stem").str.len_chars()
        )
        return cols, features(canon, rs, unique=False), token_counts(canon)

    keys, n_opts, n_chars = [], [], []
    counts = _Counts()
    for cols, feats, tokens in thread_map(scan_batch, range(0, q.n, s.batch_rows)):
        keys.append(cols["h"].to_numpy())
        n_opts.append(cols["o"].to_numpy())
        n_chars.append(cols["stem"].to_numpy())
        spill.add(feats)
        counts.add(tokens)
        del cols, feats, tokens
    return np.concatenate(keys), np.concatenate(n_opts), np.concatenate(n_chars), counts


def _exact_groups(q: Questions, hashes: np.ndarray, counts: _Counts, s: DedupSettings) -> tuple:
    """(each question's exact group: its smallest question, token counts of the groups' first questions only).

    Groups come from the key hashes, then are checked on the key text itself (in bounded batches of whole hash
    groups), so a hash collision never merges two questions; the other members' tokens leave the counts.
    """
    h = pl.DataFrame({"h": hashes}).with_row_index("_q")
    g = h.select(pl.col("_q").min().over("h").alias("g"), pl.len().over("h").alias("k"))
    group = g["g"].to_numpy().copy()
    multi = h.filter(g["k"] > 1).sort("h", "_q")
    hs, qv = multi["h"].to_numpy(), multi["_q"].to_numpy()
    bounds = np.append(np.flatnonzero(hs[1:] != hs[:-1]) + 1, len(hs))
    lo = 0
    while lo < len(hs):
        hi = int(bounds[np.searchsorted(bounds, lo + s.batch_rows)]) if lo + s.batch_rows < len(hs) else len(hs)
        part, canon = qv[lo:hi], q.canon(qv[lo:hi])
        key = canon.select(pl.Series("_q", part), EXACT_KEY.alias("key"))
        first = key.select(pl.col("_q").min().over("key"))["_q"].to_numpy()
        group[part] = first
        counts.add(token_counts(canon.filter(pl.Series(first != part))), -1)
        lo = hi
    return group, counts.frame()


def _confirm(q: Questions, rep_q: np.ndarray, pairs: pl.DataFrame, weight_frame: pl.DataFrame, s: DedupSettings):
    """The candidate pairs (`a`, `b`: item numbers) that `same_question` confirms, checked a batch at a time."""
    weights = weight_map(weight_frame)
    found: list[tuple[int, int]] = []
    for lo in range(0, pairs.height, s.batch_rows):
        part = pairs.slice(lo, s.batch_rows)
        a, b = part["a"].to_numpy(), part["b"].to_numpy()
        need = np.unique(np.concatenate([a, b]))
        side = dict(zip(need.tolist(), sides(q.canon(rep_q[need]), weight_frame, s.unseen_weight), strict=True))
        pairs_ab = zip(a.tolist(), b.tolist(), strict=True)
        found += [(i, j) for i, j in pairs_ab if same_question(side[i], side[j], weights, s)]
    return pl.DataFrame(found, schema={"a": pl.UInt32, "b": pl.UInt32}, orient="row").unique()


def dedup(table: pa.Table, settings: DedupSettings | None = None) -> pa.Table:
    """Add `dup_cluster` (the kept question's `id`) and `dup_keep` to every row; never drops rows."""
    s = settings or DedupSettings()
    if "id" not in table.column_names:
        raise Medr1Error("dedup: the table has no `id` column")
    q = Questions.of(table)
    if not q.n:
        empty = pl.DataFrame(schema={"dup_cluster": pl.String, "dup_keep": pl.Boolean})
        return append_columns(table, empty, OUT_FIELDS)
    spill = Spill.sized(q.n * FEATURES_PER_QUESTION)
    try:
        hashes, n_opts, n_chars, counts = _scan(q, s, spill)
        group, counts = _exact_groups(q, hashes, counts, s)
        del hashes
        is_rep = group == np.arange(q.n)
        rep_q = np.flatnonzero(is_rep)
        item_of = np.where(is_rep, np.cumsum(is_rep) - 1, -1)
        index = build_self_index(spill, item_of, len(rep_q), s.retrieval())
    finally:
        spill.close()
    release_memory()
    weight_frame = weights_from_counts(counts, len(rep_q))
    pairs = _confirm(q, rep_q, self_candidates(index, s.retrieval(), s.batch_rows), weight_frame, s)
    del index
    labels = components(len(rep_q), pairs)
    label_rep = np.empty(len(rep_q), dtype=np.int64)
    label_rep[labels["node"].to_numpy()] = labels["label"].to_numpy()
    label = label_rep[item_of[group]]
    kept = _kept(q, label, n_opts, n_chars, s)
    row_kept = kept if q.of_row is None else kept[q.of_row]
    row_q = np.arange(q.n) if q.of_row is None else q.of_row
    ids = table.column("id") if q.first_row is None else table.column("id").take(pa.array(q.first_row))
    values = pl.DataFrame(
        {
            "dup_cluster": pl.from_arrow(ids.take(pa.array(row_kept))).cast(pl.String),
            "dup_keep": row_kept == row_q,
        }
    )
    return append_columns(table, values, OUT_FIELDS)


def _kept(q: Questions, label: np.ndarray, n_opts: np.ndarray, n_chars: np.ndarray, s: DedupSettings) -> np.ndarray:
    """The question each question's cluster keeps, by the documented keep rule (ranked only in clusters of two+)."""
    kept = np.arange(q.n)
    multi = np.flatnonzero(np.bincount(label, minlength=q.n)[label] > 1)
    if not len(multi):
        return kept
    rows = q.rows(multi)
    out = pl.DataFrame({"_q": multi, "label": label[multi], "n_opts": n_opts[multi], "n_chars": n_chars[multi]})
    out = out.with_columns(_column(q.table, "id", rows).cast(pl.String))
    if "is_correct" in q.table.column_names:
        at = multi if q.of_row is None else np.flatnonzero(np.isin(q.of_row, multi))
        correct = pl.DataFrame({"_q": at if q.of_row is None else q.of_row[at]}).with_columns(
            _column(q.table, "is_correct", at)
        )
        n_correct = correct.group_by("_q").agg(pl.col("is_correct").fill_null(False).sum().alias("n_correct"))
        out = out.join(n_correct, on="_q", how="left")
    else:
        out = out.with_columns(pl.lit(0).alias("n_correct"))
    if "source" in q.table.column_names:
        order = {name: k for k, name in enumerate(s.source_priority)}
        prio = pl.col("source").cast(pl.String).replace_strict(order, default=len(order), return_dtype=pl.Int64)
        out = out.with_columns(_column(q.table, "source", rows)).with_columns(prio.alias("_prio"))
    else:
        out = out.with_columns(pl.lit(0).alias("_prio"))
    ranked = out.sort(
        ["label", "n_correct", "_prio", "n_opts", "n_chars", "id"],
        descending=[False, True, False, True, True, False],
        nulls_last=True,
    )
    first = ranked.group_by("label", maintain_order=True).agg(pl.col("_q").first())
    best = np.zeros(q.n, dtype=np.int64)
    best[first["label"].to_numpy()] = first["_q"].to_numpy()
    kept[multi] = best[label[multi]]
    return kept


def _column(table: pa.Table, name: str, rows: np.ndarray) -> pl.Series:
    """One column of the table at `rows`, as a polars Series of that name."""
    out = pl.from_arrow(table.column(name).take(pa.array(rows)))
    assert isinstance(out, pl.Series)
    return out.alias(name)
