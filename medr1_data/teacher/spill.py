"""The response cache read once and sorted out by partition: each record goes to the partitions whose questions
need it, so that a partition's traces are assembled from its own records and memory holds one partition.

A build cuts its questions (sorted by id) into partitions of about `batch_rows` traces. `plan_keys` gives the
request key of every (question, sample) with its partition; `Spill.scan` reads the cache a block at a time and
appends each record a partition needs to that partition's spill file (Arrow IPC, lz4) in file order, so that the
last record of a key still wins; `Spill.read` gives a partition's records back.
"""

from __future__ import annotations

import itertools
import shutil
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa

from medr1_data.teacher.cache import CACHE_COLUMNS, ResponseCache
from medr1_data.teacher.plan import Plan, plan_requests
from medr1_data.teacher.settings import TeacherSettings
from medr1_data.workers import Pool, from_ipc, to_ipc

IPC_OPTIONS = pa.ipc.IpcWriteOptions(compression="lz4")
KEY_SCHEMA = {"part": pl.UInt32, "row": pl.UInt32, "sample": pl.Int32, "key": pl.String}


def _part_keys(job: tuple[int, pa.Buffer | pa.Table, TeacherSettings]) -> pl.DataFrame:
    """(part, row, sample, key) of one partition's requests (its questions as a table or as IPC bytes)."""
    p, questions, teacher = job
    plan = plan_requests(from_ipc(questions) if isinstance(questions, pa.Buffer) else questions, teacher)
    rows, samples, keys = zip(*plan.requests, strict=True) if plan.requests else ((), (), ())
    frame = {"part": [p] * len(keys), "row": list(rows), "sample": list(samples), "key": list(keys)}
    return pl.DataFrame(frame, schema=KEY_SCHEMA)


def plan_keys(questions: pa.Table, cuts: list[int], teacher: TeacherSettings, pool: Pool | None = None) -> pl.DataFrame:
    """(part, row within the part, sample index, request key) of every planned request, partition by partition
    (in `pool`'s workers when it has several)."""
    pool = pool or Pool()
    needed = questions.select([c for c in ("id", "question", "options", "context") if c in questions.column_names])
    slices = (needed.slice(cuts[p], cuts[p + 1] - cuts[p]) for p in range(len(cuts) - 1))
    jobs = ((p, to_ipc(t) if pool.workers > 1 else t, teacher) for p, t in enumerate(slices))
    frames = list(pool.map(_part_keys, jobs, len(cuts) - 1))
    return pl.concat(frames) if frames else pl.DataFrame(schema=KEY_SCHEMA)


def part_plan(keys: pl.DataFrame, p: int) -> Plan:
    """The `Plan` of partition `p` (requests only: no messages are kept)."""
    mine = keys.filter(pl.col("part") == p)
    requests = list(zip(mine["row"].to_list(), mine["sample"].to_list(), mine["key"].to_list(), strict=True))
    return Plan(requests, [])


def read_spill(path: Path) -> pa.Table:
    """The records spilled for a partition, in cache-file order; the file is removed."""
    if not path.exists():
        return CACHE_COLUMNS.empty_table()
    with pa.OSFile(str(path)) as f:
        table = pa.ipc.open_stream(f).read_all()
    path.unlink()
    return table


class Spill:
    """Per-partition spill files of the cache records the planned keys need."""

    def __init__(self, folder: Path, keys: pl.DataFrame) -> None:
        self.folder = Path(folder)
        shutil.rmtree(self.folder, ignore_errors=True)
        self.folder.mkdir(parents=True)
        self.need = keys.select("key", "part").unique(maintain_order=True)
        self.found: list[pl.Series] = []
        self.writers: dict[int, Any] = {}

    def path(self, p: int) -> Path:
        """The spill file of partition `p` (`read_spill` reads it)."""
        return self.folder / f"part-{p:05d}.arrow"

    def scan(self, cache: ResponseCache, start: int = 0) -> int:
        """Spill the records of the cache from offset `start` on; returns the offset where the scan ended."""
        end, blocks = cache.scan(start)
        for block in blocks:
            hits = (
                pl.from_arrow(block.select(["key"]))
                .with_row_index("j")
                .join(self.need, on="key", how="inner")
                .sort("part", "j")
            )
            if not hits.height:
                continue
            self.found.append(hits["key"])
            parts = hits["part"].to_numpy()
            rows = hits["j"].to_numpy()
            cuts = [0, *((parts[1:] != parts[:-1]).nonzero()[0] + 1).tolist(), len(parts)]
            for a, b in itertools.pairwise(cuts):
                p = int(parts[a])
                if p not in self.writers:
                    self.writers[p] = pa.ipc.new_stream(self.path(p), CACHE_COLUMNS, options=IPC_OPTIONS)
                chunk = block.take(pa.array(rows[a:b])).cast(CACHE_COLUMNS).combine_chunks()
                for batch in chunk.to_batches():
                    self.writers[p].write_batch(batch)
        return end

    def missing(self) -> pl.Series:
        """The planned keys no scanned record answers (each once, in plan order)."""
        found = pl.concat(self.found).unique() if self.found else pl.Series("key", [], pl.String)
        keys = self.need.select("key").unique(maintain_order=True)
        return keys.filter(~pl.col("key").is_in(found.implode()))["key"]

    def close(self) -> None:
        """Finish every spill file (after the last scan)."""
        for writer in self.writers.values():
            writer.close()
        self.writers.clear()

    def remove(self) -> None:
        """Remove the spill folder."""
        self.close()
        shutil.rmtree(self.folder, ignore_errors=True)
