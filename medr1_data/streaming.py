"""A verb's table a batch at a time: read a Parquet file in batches, check and process each, write as it goes.

Memory holds a few batches, not the file: the next batch is read, and the last one written, in threads while a
batch is processed (pyarrow releases the GIL to decode and compress). The output is written with the build's
checkpoint settings (`parts.writer_options`: lz4, no statistics on text): a verb's output is an intermediate table
read back by the next verb, as a checkpoint is, not a release shard to publish (those add zstd, a page index and
content-defined chunking). It goes to a temporary name and is renamed into place when complete.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from medr1_data import Medr1Error
from medr1_data.contracts import Contract, check_input
from medr1_data.parts import writer_options

STREAM_ROWS = 16_384  # rows a verb holds at a time (real R1 traces: about 130 MB of Arrow data)


def open_parquet(path: Path) -> pq.ParquetFile:
    """A Parquet file opened for reading a batch at a time, or a one-line Medr1Error."""
    try:
        return pq.ParquetFile(path)
    except FileNotFoundError:
        raise Medr1Error(f"{path}: no such file") from None
    except Exception as e:  # pyarrow raises ArrowInvalid / OSError for non-Parquet input
        raise Medr1Error(f"{path}: cannot read as Parquet: {' '.join(str(e).split())}") from None


def row_group_batches(reader: pq.ParquetFile, rows: int) -> Iterator[pa.Table]:
    """The file's rows as tables of `rows` rows (the last one shorter), read with one reader per row group.

    One `iter_batches` over the whole file keeps about 100 MB per row group it has read (2.2M rows of traces: over
    4 GB) until it ends; a reader per row group frees its memory at the group's end. Batches that straddle row
    groups are joined without copying.
    """
    pending: list[pa.RecordBatch] = []
    held = 0
    for group in range(reader.num_row_groups):
        for batch in reader.iter_batches(batch_size=rows, row_groups=[group]):
            while batch.num_rows:
                take = min(rows - held, batch.num_rows)
                pending.append(batch.slice(0, take))
                held, batch = held + take, batch.slice(take)
                if held == rows:
                    yield pa.Table.from_batches(pending)
                    pending, held = [], 0
    if pending:
        yield pa.Table.from_batches(pending)


def _next_batch(batches: Iterator[pa.Table], path: Path) -> pa.Table | None:
    try:
        return next(batches, None)
    except Exception as e:  # ArrowInvalid / OSError for a damaged page or row group
        raise Medr1Error(f"{path}: cannot read as Parquet: {' '.join(str(e).split())[:300]}") from None


def read_ahead(reader: pq.ParquetFile, path: Path, rows: int, pool: ThreadPoolExecutor) -> Iterator[pa.Table]:
    """The file's batches of `rows` rows, each read in `pool` while the one before is used; one empty table for
    an empty file (so that its output still has every column)."""
    batches = row_group_batches(reader, rows)
    ahead = pool.submit(_next_batch, batches, path)
    empty = True
    while (batch := ahead.result()) is not None:
        ahead = pool.submit(_next_batch, batches, path)
        empty = False
        yield batch
    if empty:
        yield reader.schema_arrow.empty_table()


def stream_table(
    src: Path, out: Path, contract: Contract, process: Callable[[pa.Table], pa.Table], rows: int | None = None
) -> Iterator[pa.Table]:
    """`process` over each batch of `src` (checked against `contract` at the door), written to `out` in order;
    yields each processed batch, for the verb's counts. `rows` defaults to STREAM_ROWS."""
    rows = STREAM_ROWS if rows is None else rows
    if rows < 1:
        raise Medr1Error(f"--batch-rows must be at least 1, not {rows}")
    reader = open_parquet(src)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    writer: pq.ParquetWriter | None = None
    try:
        with ThreadPoolExecutor(max_workers=2) as pool:
            written: Any = None
            for batch in read_ahead(reader, Path(src), rows, pool):
                table = process(check_input(batch, contract, str(src)))
                if writer is None:
                    writer = pq.ParquetWriter(tmp, table.schema, **writer_options(table.schema))
                if written is not None:
                    written.result()  # one batch in flight: memory holds at most three
                written = pool.submit(writer.write_table, table.cast(writer.schema))
                yield table
            if written is not None:
                written.result()
        if writer is not None:
            writer.close()
        tmp.replace(out)
    finally:
        if writer is not None:
            writer.close()
        tmp.unlink(missing_ok=True)
