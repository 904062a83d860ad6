"""A table kept on disk as ordered parts: a stage writes its output a part at a time, the next reads it so.

A table is a list of Parquet files whose rows, in file order, are the table's rows. A stage that adds or replaces
columns of its input writes only those columns, a part for each part of its input with the same rows, and names its
input as its base: part i is then the base's part i with the stage's columns over it, so verify, score and select
write kilobytes, not the traces' text again. Each file's size and sha256 are recorded when it is written; a reader
checks them (`damaged`) before it trusts the table. Memory holds one part, never the whole table, unless a caller
asks for it (`read`, for small columns or question tables).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from medr1_data.schema import normalize
from medr1_data.shards import sha256_file

# Parts are read back by this machine only: lz4 writes ~1.6x and reads ~1.7x faster than zstd level 1 (files 1.5x
# larger), and min/max statistics of the traces' text would only be computed to be ignored.
COMPRESSION = {"compression": "lz4"}
PART_ROW_GROUP = 16_384  # rows per row group of a part file: `Parts.rows` reads only the groups it needs


def writer_options(schema: pa.Schema) -> dict[str, Any]:
    """Parquet writer settings of a part or a verb's output: lz4, statistics on the columns that are not text."""
    text = (pa.types.is_string, pa.types.is_large_string, pa.types.is_string_view, pa.types.is_binary)
    stats = [f.name for f in schema if not any(is_text(f.type) for is_text in text) and not pa.types.is_nested(f.type)]
    return {**COMPRESSION, "write_statistics": stats}


@dataclass
class Parts:
    """A table as part files under `folder`: `files` (name, rows, bytes, sha256), its `columns` in order, the
    `own` columns its files hold, and the `base` table that holds the others."""

    folder: Path
    files: list[dict[str, Any]]
    columns: list[str]
    own: list[str]
    base: Parts | None = None

    @property
    def num_rows(self) -> int:
        """Rows of the whole table."""
        return sum(f["rows"] for f in self.files)

    def __len__(self) -> int:
        return len(self.files)

    def part(self, i: int, columns: list[str] | None = None, groups: list[int] | None = None) -> pa.Table:
        """Part `i` (all columns, or those of `columns` that the table has, in the table's order; `groups`: only
        those row groups, which fall on the same rows in a part and in its base's part)."""
        wanted = set(self.columns if columns is None else columns)
        names = [c for c in self.columns if c in wanted]
        mine = [c for c in names if c in self.own]
        path = self.folder / self.files[i]["name"]
        if groups is None:
            own = pq.read_table(path, columns=mine)
        else:
            own = pq.ParquetFile(path).read_row_groups(groups, mine)
        rest = [c for c in names if c not in self.own]
        if not rest:
            return own.select(names)
        assert self.base is not None, f"{self.files[i]['name']}: columns {rest} have no base"
        base = self.base.part(i, rest, groups)
        fields = [own.schema.field(c) if c in self.own else base.schema.field(c) for c in names]
        arrays = [own.column(c) if c in self.own else base.column(c) for c in names]
        return pa.Table.from_arrays(arrays, schema=pa.schema(fields))

    def rows(self, lo: int, hi: int, columns: list[str] | None = None) -> pa.Table:
        """Rows `lo` to `hi` of the whole table, reading only the row groups that hold them."""
        pieces, start, n = [], 0, PART_ROW_GROUP
        for i, f in enumerate(self.files):
            a, b = max(lo - start, 0), min(hi - start, f["rows"])
            if a < b:
                groups = list(range(a // n, (b - 1) // n + 1))
                pieces.append(self.part(i, columns, groups).slice(a - groups[0] * n, b - a))
            start += f["rows"]
        return pa.concat_tables(pieces) if pieces else self.part(0, columns).slice(0, 0)

    def tables(self, columns: list[str] | None = None) -> Iterator[pa.Table]:
        """Every part in order."""
        for i in range(len(self)):
            yield self.part(i, columns)

    def read(self, columns: list[str] | None = None) -> pa.Table:
        """The whole table (or some of its columns) in memory: for question tables and small columns only."""
        tables = list(self.tables(columns))
        return pa.concat_tables(tables) if tables else pa.table({})

    def has(self, column: str) -> bool:
        """Whether the table has `column`."""
        return column in self.columns

    def entry(self) -> dict[str, Any]:
        """The JSON record of this table (file names relative to `folder`)."""
        return {
            "files": self.files,
            "columns": self.columns,
            "own": self.own,
            "base": self.base.entry() if self.base is not None else None,
        }

    @classmethod
    def from_entry(cls, folder: Path, entry: dict[str, Any]) -> Parts:
        """The table an `entry` record names."""
        base = cls.from_entry(folder, entry["base"]) if entry.get("base") else None
        return cls(Path(folder), entry["files"], entry["columns"], entry["own"], base)

    def damaged(self, digest: Any) -> str | None:
        """The first file of this table (or of its bases) whose size or `digest(path)` changed, or None."""
        for f in self.files:
            path = self.folder / f["name"]
            if not path.is_file() or path.stat().st_size != f["bytes"] or digest(path) != f["sha256"]:
                return str(path)
        return self.base.damaged(digest) if self.base is not None else None


@dataclass
class PartsWriter:
    """Writes one table's parts as `<name>/part-NNNNN.parquet` under `folder`; `close` gives the `Parts`.

    With a `base`, each part written holds the columns of `own` (new or replaced ones) and must have the rows of
    the base's part of the same number; `write_aligned` cuts a whole table along the base's parts.
    """

    folder: Path
    name: str
    base: Parts | None = None
    own: list[str] | None = None
    files: list[dict[str, Any]] = field(default_factory=list)
    columns: list[str] | None = None

    def __post_init__(self) -> None:
        target = self.folder / self.name
        target.mkdir(parents=True, exist_ok=True)
        for old in target.glob("part-*.parquet*"):
            old.unlink()

    def layout(self, names: list[str]) -> list[str]:
        """The columns a part stores, given the column names of a stage's output (fixed by the first part)."""
        if self.columns is None:
            self.columns, self.own = layout(self.base, self.own, names)
        assert self.own is not None
        return self.own

    def path(self, i: int) -> Path:
        """The file of part `i`."""
        return self.folder / self.name / f"part-{i:05d}.parquet"

    def write(self, table: pa.Table) -> None:
        """Write the next part (a stage's whole output for those rows: only the `own` columns are stored)."""
        self.add(write_part(table.select(self.layout(table.column_names)), self.path(len(self.files))))

    def add(self, entry: dict[str, Any]) -> None:
        """Record the next part, written by `write_part` (here or in a worker process) to `path(i)`."""
        i = len(self.files)
        if self.base is not None:
            expected = self.base.files[i]["rows"]
            assert entry["rows"] == expected, f"part {i}: {entry['rows']} rows, its base part has {expected}"
        self.files.append({**entry, "name": f"{self.name}/{Path(entry['name']).name}"})

    def write_aligned(self, table: pa.Table) -> None:
        """Write a whole table as parts cut where the base's parts are cut (one part without a base)."""
        if self.base is None:
            self.write(table)
            return
        offset = 0
        for f in self.base.files:
            self.write(table.slice(offset, f["rows"]))
            offset += f["rows"]

    def close(self, schema_of_empty: pa.Table | None = None) -> Parts:
        """The table written (an empty table with no parts keeps the columns of `schema_of_empty`)."""
        if self.columns is None:
            self.write(schema_of_empty if schema_of_empty is not None else pa.table({}))
        assert self.columns is not None and self.own is not None
        return Parts(self.folder, self.files, self.columns, self.own, self.base)


def layout(base: Parts | None, own: list[str] | None, names: list[str]) -> tuple[list[str], list[str]]:
    """(the table's columns, the columns its parts store) of a stage's output with columns `names` over `base`:
    the `own` columns (new or replaced) and every column the base lacks."""
    if base is None:
        return list(names), list(names)
    new = [c for c in names if c not in base.columns]
    return [*base.columns, *new], list(dict.fromkeys([*(own or []), *new]))


def write_part(stored: pa.Table, path: Path) -> dict[str, Any]:
    """Write one part file atomically (to a temporary name, then renamed): its record (name, rows, bytes, sha256)."""
    tmp = path.with_name(path.name + ".tmp")
    pq.write_table(stored, tmp, row_group_size=PART_ROW_GROUP, **writer_options(stored.schema))
    os.replace(tmp, path)
    return {"name": path.name, "rows": stored.num_rows, "bytes": path.stat().st_size, "sha256": sha256_file(path)}


class RowGroupWriter:
    """A Parquet file written from tables that arrive in order, in row groups of exactly `group_rows` rows (so the
    file does not depend on how the rows arrived)."""

    def __init__(self, path: Path, group_rows: int = 16_384) -> None:
        self.path, self.group_rows = path, group_rows
        self.writer: pq.ParquetWriter | None = None
        self.buffer: list[pa.Table] = []
        self.rows = 0

    def write(self, table: pa.Table) -> None:
        """Add rows; full row groups are written."""
        table = normalize(table)
        if self.writer is None:
            self.writer = pq.ParquetWriter(self.path, table.schema)
        self.buffer.append(table.cast(self.writer.schema))
        self.rows += table.num_rows
        while self.rows >= self.group_rows:
            self._flush(self.group_rows)

    def _flush(self, n: int) -> None:
        whole = pa.concat_tables(self.buffer)
        assert self.writer is not None
        self.writer.write_table(whole.slice(0, n).combine_chunks(), row_group_size=max(1, n))
        rest = whole.slice(n)
        self.buffer, self.rows = ([rest] if rest.num_rows else []), rest.num_rows

    def close(self) -> None:
        """Write the last row group and close the file."""
        if self.rows:
            self._flush(self.rows)
        if self.writer is not None:
            self.writer.close()
