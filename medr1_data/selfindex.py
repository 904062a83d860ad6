"""A dataset's candidate index over itself (dedup's self-join) in bounded memory, whatever the number of questions.

The features of `medr1_data.index.features` (u64 hashes, one row per occurrence) are the bulk: about 65 per question,
1.9 GB at 2.2M questions. They are computed a batch of questions at a time and spilled (`Spill`) into hash
partitions of the feature, Arrow IPC files in a temporary folder (in memory when there is one partition). Each
partition then holds every occurrence of its features, so its document frequencies (`df`), retrieval weights and the
items' weight totals are exact there; only the postings shared by two items (`min_df=2`) stay in memory, as a few
integer arrays grouped by feature (`SelfIndex`). Candidate pairs are then generated for a range of items at a time:
every posting of an item in the range meets every posting of its feature's group (the same hits as joining the
range's features against the whole index, without scanning it), and the hits are aggregated and ranked by
`index.pair_hits` and `index.best_candidates`, the code decontamination uses. Batches and partitions change memory
and time, never results.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa

from medr1_data.index import IndexSettings, best_candidates, item_totals, pair_hits, posting_weight, view_cap
from medr1_data.workers import thread_map

FEATURE_ROWS = 6_000_000  # feature rows per spill partition (about 80 MB; counted at several times that)
HIT_ROWS = 4_000_000  # feature hits per candidate batch


class Spill:
    """Feature rows (`feat`, `view`, `_i`) in `parts` hash partitions of `feat`: IPC files, or memory when one."""

    def __init__(self, parts: int) -> None:
        self.parts = max(1, parts)
        self._tmp = tempfile.TemporaryDirectory(prefix="medr1-dedup-") if self.parts > 1 else None
        self._memory: list[pl.DataFrame] = []
        self._buffered = 0
        self._written = 0

    @classmethod
    def sized(cls, rows: int) -> Spill:
        """A spill with about FEATURE_ROWS feature rows per partition for `rows` expected rows."""
        return cls(-(-rows // FEATURE_ROWS))

    def add(self, feats: pl.DataFrame) -> None:
        """Append a batch's features to their partitions (written out once FEATURE_ROWS are buffered)."""
        self._memory.append(feats)
        self._buffered += feats.height
        if self._tmp is not None and self._buffered >= FEATURE_ROWS:
            self._flush()

    def _flush(self) -> None:
        assert self._tmp is not None
        if not self._memory:
            return
        part = (pl.col("feat") % self.parts).cast(pl.UInt32).alias("_p")
        frame = pl.concat(self._memory).with_columns(part)
        self._memory, self._buffered = [], 0
        for key, piece in frame.partition_by("_p", as_dict=True, include_key=False).items():
            piece.write_ipc(Path(self._tmp.name) / f"{key[0]:05d}-{self._written:06d}.arrow")
        self._written += 1

    def take(self, part: int) -> pl.DataFrame:
        """Every feature row of one partition (its files are removed)."""
        if self._tmp is None:
            out, self._memory = pl.concat(self._memory) if self._memory else pl.DataFrame(), []
            return out
        self._flush()
        files = sorted(Path(self._tmp.name).glob(f"{part:05d}-*.arrow"))
        frames = [_read(f) for f in files]
        for f in files:
            f.unlink()
        return pl.concat(frames) if frames else pl.DataFrame()

    def close(self) -> None:
        """Remove the temporary folder."""
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None


def _read(path: Path) -> pl.DataFrame:
    """An IPC file read into memory (not memory-mapped: the file is removed next)."""
    with pa.OSFile(str(path)) as f:
        out = pl.from_arrow(pa.ipc.open_file(f).read_all())
    assert isinstance(out, pl.DataFrame)
    return out


@dataclass
class SelfIndex:
    """Postings shared by two items or more, grouped by feature, and every item's totals (`index.item_totals`)."""

    n: int  # items
    item: np.ndarray  # u32, the item of each posting; group g is item[start[g] : start[g] + length[g]]
    group: np.ndarray  # u32, the group of each posting
    start: np.ndarray  # i64 per group
    length: np.ndarray  # i64 per group
    view: np.ndarray  # u8 per group
    w: np.ndarray  # f32 per group (the feature's retrieval weight)
    totals: pl.DataFrame  # _item, tot_ngram, tot_optgram, tot_ctx, n_opt (every item)

    def batches(self, max_items: int, max_hits: int = HIT_ROWS) -> Iterator[tuple[int, int]]:
        """Item ranges [lo, hi) of at most `max_items` items and about `max_hits` hits each."""
        per_item = np.bincount(self.item, weights=self.length[self.group], minlength=self.n)
        cum = np.cumsum(per_item)
        lo = 0
        while lo < self.n:
            base = cum[lo - 1] if lo else 0.0
            hi = int(np.searchsorted(cum, base + max_hits, side="right"))
            hi = min(max(hi, lo + 1), lo + max_items, self.n)
            yield lo, hi
            lo = hi

    def candidates(self, lo: int, hi: int, settings: IndexSettings, by_item: tuple[np.ndarray, ...]) -> pl.DataFrame:
        """`index.candidates` of items lo..hi-1 against the whole index (`by_item`: postings sorted by item, items)."""
        order, sorted_items = by_item
        bounds = np.searchsorted(sorted_items, [lo, hi])
        rows = order[bounds[0] : bounds[1]]
        g = self.group[rows]
        n = self.length[g]
        total = int(n.sum())
        ends = np.cumsum(n)
        pos = np.repeat(self.start[g] - (ends - n), n) + np.arange(total, dtype=np.int64)
        gg = np.repeat(g, n)
        hits = pl.DataFrame(
            {
                "_i": np.repeat(self.item[rows], n),
                "_item": self.item[pos],
                "view": self.view[gg],
                "w": self.w[gg],
            }
        )
        return best_candidates(pair_hits(hits.lazy()), self.totals, settings)


def build_self_index(spill: Spill, item_of: np.ndarray | None, n: int, settings: IndexSettings) -> SelfIndex:
    """The `SelfIndex` of spilled features (`_i` = question) over `n` items; `item_of`: question -> item or -1.

    Partitions are indexed in threads (polars), taken from the spill and added up in order."""
    tot = np.zeros((3, n), dtype=np.float64)
    n_opt = np.zeros(n, dtype=np.uint32)
    items, lengths, views, weights = [], [], [], []
    spilled = (spill.take(part) for part in range(spill.parts))
    for t, groups in thread_map(lambda f: _index_partition(f, item_of, n, settings), spilled):
        if t is None:
            continue
        at = t["_item"].to_numpy()
        for k, col in enumerate(("tot_ngram", "tot_optgram", "tot_ctx")):
            tot[k, at] += t[col].to_numpy()
        n_opt[at] += t["n_opt"].to_numpy().astype(np.uint32)
        if groups is not None:
            for kept, got in zip((items, lengths, views, weights), groups, strict=True):
                kept.append(got)
    return _assemble(n, items, lengths, views, weights, tot, n_opt)


def _index_partition(
    f: pl.DataFrame, item_of: np.ndarray | None, n: int, settings: IndexSettings
) -> tuple[pl.DataFrame | None, tuple[np.ndarray, ...] | None]:
    """One partition's item totals and its shared postings (items, group lengths, views, weights), if any."""
    if not f.height:
        return None, None
    if item_of is not None:
        f = f.with_columns(pl.Series("_i", item_of[f["_i"].to_numpy()])).filter(pl.col("_i") >= 0)
    f = f.with_columns(pl.col("_i").cast(pl.UInt32).alias("_item")).drop("_i")
    counted = f.lazy().group_by("feat", "view").len("df").filter(pl.col("df") <= view_cap(settings))
    post = f.lazy().join(counted, on=["feat", "view"]).with_columns(posting_weight(n)).collect()
    del f
    t = item_totals(post.lazy()).collect()
    keep = post.filter(pl.col("df") >= 2).sort("feat", "view", "_item")
    del post
    if not keep.height:
        return t, None
    first = keep.select(
        ((pl.col("feat") != pl.col("feat").shift(1)) | (pl.col("view") != pl.col("view").shift(1)))
        .fill_null(True)
        .alias("first")
    )["first"].to_numpy()
    starts = np.flatnonzero(first)
    lengths = np.diff(np.append(starts, keep.height))
    return t, (keep["_item"].to_numpy(), lengths, keep["view"].to_numpy()[starts], keep["w"].to_numpy()[starts])


def _assemble(
    n: int,
    items: list[np.ndarray],
    lengths: list[np.ndarray],
    views: list[np.ndarray],
    weights: list[np.ndarray],
    tot: np.ndarray,
    n_opt: np.ndarray,
) -> SelfIndex:
    """One `SelfIndex` from the partitions' arrays."""
    item = np.concatenate(items).astype(np.uint32) if items else np.zeros(0, np.uint32)
    length = np.concatenate(lengths).astype(np.int64) if lengths else np.zeros(0, np.int64)
    start = np.cumsum(length) - length
    group = np.repeat(np.arange(len(length), dtype=np.uint32), length)
    totals = pl.DataFrame(
        {
            "_item": np.arange(n, dtype=np.uint32),
            "tot_ngram": tot[0],
            "tot_optgram": tot[1],
            "tot_ctx": tot[2],
            "n_opt": n_opt,
        }
    )
    view = np.concatenate(views).astype(np.uint8) if views else np.zeros(0, np.uint8)
    w = np.concatenate(weights).astype(np.float32) if weights else np.zeros(0, np.float32)
    return SelfIndex(n, item, group, start, length, view, w, totals)


def self_candidates(index: SelfIndex, settings: IndexSettings, max_items: int) -> pl.DataFrame:
    """Distinct candidate pairs (`a` < `b`) of items that retrieve each other (either way), in bounded batches."""
    order = np.argsort(index.item, kind="stable")
    by_item = (order, index.item[order])
    found = []
    for lo, hi in index.batches(max_items):
        cands = index.candidates(lo, hi, settings, by_item)
        found.append(
            cands.filter(pl.col("_i") != pl.col("_item"))
            .select(pl.min_horizontal("_i", "_item").alias("a"), pl.max_horizontal("_i", "_item").alias("b"))
            .unique()
        )
    if not found:
        return pl.DataFrame(schema={"a": pl.UInt32, "b": pl.UInt32})
    return pl.concat(found).unique().sort("a", "b")
