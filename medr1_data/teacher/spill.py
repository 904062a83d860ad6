"""The response cache read once and sorted out by partition: each record goes to the partitions whose questions
need it, so that a partition's traces are assembled from its own records and memory holds one partition.

A build cuts its questions (sorted by id) into partitions of about `batch_rows` traces. `plan_keys` gives the
request key of every (question, sample) with its partition; `Spill.scan` reads the cache in pieces of lines (one a
worker), a block at a time, looks the block's keys up in the planned keys (`KeyIndex`, sorted by hash, built once a
worker) and appends each record a partition needs to that partition's spill file of the piece (Arrow IPC, lz4);
`read_spill` gives a partition's records back in file order, so that the last record of a key still wins.
"""

from __future__ import annotations

import itertools
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa

from medr1_data.teacher.cache import CACHE_COLUMNS, ResponseCache, complete_end, line_starts, scan_blocks
from medr1_data.teacher.plan import Plan, plan_requests
from medr1_data.teacher.settings import TeacherSettings
from medr1_data.workers import Pool, load_once

IPC_OPTIONS = pa.ipc.IpcWriteOptions(compression="lz4")
KEY_SCHEMA = {"part": pl.UInt32, "row": pl.UInt32, "sample": pl.Int32, "key": pl.String}
KEY_HASH_SEED = 0x6D656472  # KeyIndex's hash of a request key (the same in every process of one polars version)


PLAN_COLUMNS = ["id", "question", "options", "context"]  # what a request's messages and key are made of


def part_questions(questions: pa.Table | list[Any], cuts: list[int], p: int) -> Any:
    """What a job of partition `p` carries of its questions: a slice of the table, or the partition's loader when
    the questions are one loader a partition (`.read(columns)`: the build reads them where they are used, in the
    worker, so that no process holds every question)."""
    return questions.slice(cuts[p], cuts[p + 1] - cuts[p]) if isinstance(questions, pa.Table) else questions[p]


def load_questions(questions: Any, columns: list[str] | None = None) -> pa.Table:
    """The table `part_questions` stands for (only `columns`, those of them it has, when given)."""
    if not isinstance(questions, pa.Table):
        return questions.read(columns)
    return questions if columns is None else questions.select([c for c in columns if c in questions.column_names])


def _part_keys(job: tuple[int, Any, TeacherSettings]) -> pl.DataFrame:
    """(part, row, sample, key) of one partition's requests."""
    p, questions, teacher = job
    plan = plan_requests(load_questions(questions, PLAN_COLUMNS), teacher)
    rows, samples, keys = zip(*plan.requests, strict=True) if plan.requests else ((), (), ())
    frame = {"part": [p] * len(keys), "row": list(rows), "sample": list(samples), "key": list(keys)}
    return pl.DataFrame(frame, schema=KEY_SCHEMA)


def plan_keys(
    questions: pa.Table | list[Any], cuts: list[int], teacher: TeacherSettings, pool: Pool | None = None
) -> pl.DataFrame:
    """(part, row within the part, sample index, request key) of every planned request, partition by partition
    (in `pool`'s workers when it has several)."""
    pool = pool or Pool()
    if isinstance(questions, pa.Table):
        questions = questions.select([c for c in PLAN_COLUMNS if c in questions.column_names])
    jobs = ((p, part_questions(questions, cuts, p), teacher) for p in range(len(cuts) - 1))
    frames = list(pool.map(_part_keys, jobs, len(cuts) - 1))
    return pl.concat(frames) if frames else pl.DataFrame(schema=KEY_SCHEMA)


def part_plan(keys: pl.DataFrame, p: int) -> Plan:
    """The `Plan` of partition `p` (requests only: no messages are kept)."""
    mine = keys.filter(pl.col("part") == p)
    requests = list(zip(mine["row"].to_list(), mine["sample"].to_list(), mine["key"].to_list(), strict=True))
    return Plan(requests, [])


def read_spill(paths: list[Path]) -> pa.Table:
    """The records spilled for a partition, in cache-file order (its files in the order they were scanned); the
    files are removed."""
    tables = [CACHE_COLUMNS.empty_table()]
    for path in paths:
        with pa.OSFile(str(path)) as f:
            tables.append(pa.ipc.open_stream(f).read_all())
        path.unlink()
    return pa.concat_tables(tables)


@dataclass(frozen=True)
class KeyIndex:
    """The (key, part) pairs a scan looks its records up in, sorted by a 64-bit hash of the key: a block's records
    are matched in time proportional to the block (a join reads every needed key once a block: 2.2M keys, 780
    blocks of 16 MB)."""

    hashes: np.ndarray  # u64, ascending
    keys: pl.Series  # the keys, in the order of `hashes`
    parts: np.ndarray  # u32, the partition of each

    @classmethod
    def load(cls, path: Path) -> KeyIndex:
        """The index of a (key, part) IPC file."""
        need = pl.read_ipc(path)
        hashes = need["key"].hash(KEY_HASH_SEED)
        order = hashes.arg_sort()
        return cls(hashes.gather(order).to_numpy(), need["key"].gather(order), need["part"].gather(order).to_numpy())

    def hits(self, keys: pl.Series) -> pl.DataFrame:
        """(`j`: position in `keys`, `part`) of every needed (key, part) that `keys` hold, sorted by part then j."""
        h = keys.hash(KEY_HASH_SEED).to_numpy()
        lo, hi = np.searchsorted(self.hashes, h, "left"), np.searchsorted(self.hashes, h, "right")
        n = hi - lo  # candidates of each record: the needed keys with its hash (a key in several parts: several)
        j = np.repeat(np.arange(len(h), dtype=np.int64), n)
        pos = np.repeat(lo - (np.cumsum(n) - n), n) + np.arange(int(n.sum()), dtype=np.int64)
        same = (keys.gather(j) == self.keys.gather(pos)).fill_null(False).to_numpy()  # the text decides
        out = pl.DataFrame({"j": j[same].astype(np.uint32), "part": self.parts[pos[same]]})
        return out.sort("part", "j")


def spill_piece(job: tuple[Path, int, int, Path, Path]) -> tuple[pl.Series, list[int]]:
    """Spill the records of the cache lines from `start` to `end` (`job`: cache file, start, end, the (key, part)
    file, the files' prefix): each partition's records to `prefix-part-PPPPP.arrow`, in file order. Returns the
    keys found and the partitions written."""
    cache, start, end, need_path, prefix = job
    index, writers, found = load_once(need_path, KeyIndex.load), {}, []
    try:
        for block in scan_blocks(cache, start, end):
            keys = pl.from_arrow(block.column("key"))
            assert isinstance(keys, pl.Series)
            hits = index.hits(keys)
            if not hits.height:
                continue
            found.append(keys.gather(hits["j"]))
            parts, rows = hits["part"].to_numpy(), hits["j"].to_numpy()
            cuts = [0, *((parts[1:] != parts[:-1]).nonzero()[0] + 1).tolist(), len(parts)]
            for a, b in itertools.pairwise(cuts):
                p = int(parts[a])
                if p not in writers:
                    path = prefix.with_name(f"{prefix.name}-part-{p:05d}.arrow")
                    writers[p] = pa.ipc.new_stream(path, CACHE_COLUMNS, options=IPC_OPTIONS)
                for batch in block.take(pa.array(rows[a:b])).cast(CACHE_COLUMNS).combine_chunks().to_batches():
                    writers[p].write_batch(batch)
    finally:
        for writer in writers.values():
            writer.close()
    return (pl.concat(found) if found else pl.Series("key", [], pl.String)), sorted(writers)


class Spill:
    """Per-partition spill files of the cache records the planned keys need.

    The cache is read in pieces of whole lines, one a worker (`pool`); piece k writes its records of partition p to
    its own file, and a partition's files are read back in piece order, so the records stay in file order."""

    def __init__(self, folder: Path, keys: pl.DataFrame, pool: Pool | None = None) -> None:
        self.folder = Path(folder)
        shutil.rmtree(self.folder, ignore_errors=True)
        self.folder.mkdir(parents=True)
        self.need = keys.select("key", "part").unique(maintain_order=True)
        self.need_path = self.folder / "need.arrow"
        self.need.write_ipc(self.need_path)
        self.pool = pool or Pool()
        self.found: list[pl.Series] = []
        self.files: dict[int, list[Path]] = {}  # partition -> its spill files, in cache-file order
        self.pieces = 0

    def paths(self, p: int) -> list[Path]:
        """The spill files of partition `p`, in cache-file order (`read_spill` reads them)."""
        return list(self.files.get(p, []))

    def scan(self, cache: ResponseCache, start: int = 0) -> int:
        """Spill the records of the cache from offset `start` on; returns the offset where the scan ended."""
        end = complete_end(cache.path)
        pieces = 1 if self.pool.workers == 1 else 2 * self.pool.workers
        cuts = line_starts(cache.path, start, end, pieces) if end > start else [start]
        prefixes = [self.folder / f"piece-{self.pieces + k:05d}" for k in range(len(cuts) - 1)]
        self.pieces += len(prefixes)
        jobs = [
            (cache.path, a, b, self.need_path, pre)
            for (a, b), pre in zip(itertools.pairwise(cuts), prefixes, strict=True)
        ]
        for prefix, (found, parts) in zip(prefixes, self.pool.map(spill_piece, jobs, len(jobs)), strict=True):
            self.found.append(found)
            for p in parts:
                self.files.setdefault(p, []).append(prefix.with_name(f"{prefix.name}-part-{p:05d}.arrow"))
        return end

    def missing(self) -> pl.Series:
        """The planned keys no scanned record answers (each once, in plan order)."""
        found = pl.concat(self.found).unique() if self.found else pl.Series("key", [], pl.String)
        keys = self.need.select("key").unique(maintain_order=True)
        return keys.filter(~pl.col("key").is_in(found.implode()))["key"]

    def remove(self) -> None:
        """Remove the spill folder."""
        shutil.rmtree(self.folder, ignore_errors=True)
