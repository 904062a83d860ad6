"""Release files: zstd Parquet shards in the Hub layout (one source per shard), a manifest, checked reading.

Rows are sorted by `id` then `sample_idx`. Since an id starts with its source's name, that order groups the rows by
source, and every shard holds the rows of one source only: the `default` config reads `data/{split}-*`, and the config
of a source (`medqa`, `medmcqa`, ...) lists exactly that source's shards. No row is stored twice.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
import string
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from medr1_data import Medr1Error, __version__
from medr1_data.config import Bounds
from medr1_data.prompts import ANSWER_FORMAT, THINK_INLINE_FORMAT, Template
from medr1_data.schema import CHAT_FIELDS, COLUMN_DOCS, normalize

MANIFEST = "manifest.json"
MANIFEST_FORMAT = 2
DEFAULT_CONFIG = "default"
# The same content-defined chunking as `datasets` (config.DEFAULT_CDC_OPTIONS): pages are cut where the content says,
# so an unchanged run of rows gives identical pages in the next version and Xet storage uploads it only once.
CDC_OPTIONS = {"min_chunk_size": 256 * 1024, "max_chunk_size": 1024 * 1024, "norm_level": 0}
SIZE_BATCH_ROWS = 8192  # rows per batch taken from a table in memory
Derive = Callable[[pa.Table], pa.Table]  # a shard's rows -> the columns added to it


@dataclass
class ShardSettings:
    """The recipe's `output` section."""

    dir: str = "medr1-reasoning"
    split: str = "train"
    shard_bytes: int = 500 * 1000 * 1000  # datasets' MAX_SHARD_SIZE ("500MB" of Arrow data) for push_to_hub
    row_group_bytes: int = 100 * 1000 * 1000  # datasets' MAX_ROW_GROUP_SIZE ("100MB" of Arrow data)
    compression_level: int = 3
    content_defined_chunking: bool = True

    BOUNDS: ClassVar[Bounds] = {"shard_bytes": (1, None), "row_group_bytes": (1, None)}
    BOUNDS |= {"compression_level": (1, 22)}  # zstd's levels


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def sort_order(table: pa.Table, rows: pa.Array | None = None) -> pa.Array:
    """Positions of the rows of `table` (all, or those at `rows`) in release order: by `id`, then `sample_idx`.

    Only the key columns are sorted; the order is that of a stable `Table.sort_by` on the same rows.
    """
    keys = ["id"] + (["sample_idx"] if "sample_idx" in table.column_names else [])
    key_table = table.select(keys)
    if rows is not None:
        key_table = key_table.take(rows)
    order = pc.sort_indices(key_table, sort_keys=[(k, "ascending") for k in keys])
    return order if rows is None else pc.take(rows, order)


def take_rows(table: pa.Table, rows: pa.Array | np.ndarray) -> pa.Table:
    """The rows at positions `rows`, in that order, as one chunk per column.

    Unlike `Table.take`, no column is concatenated whole (a string column over 2 GiB would overflow its offsets, and
    the copy costs the column's size): each input chunk gives the rows it holds, then only the pieces are joined.
    Joined with `pa.concat_arrays`, every column has a validity bitmap exactly when it has nulls, so the result (its
    `nbytes` and the Parquet bytes written from it) does not depend on how the input was chunked.
    """
    rows = np.asarray(rows, dtype=np.int64)
    batches = table.to_batches()  # zero-copy, cut where any column's chunks end
    starts = np.cumsum([0] + [batch.num_rows for batch in batches])
    chunk = np.searchsorted(starts, rows, side="right") - 1
    perm = np.argsort(chunk, kind="stable")  # rows grouped by chunk, in the wanted order within each chunk
    grouped = chunk[perm]
    local = rows[perm] - starts[grouped]
    cuts = [0, *(np.flatnonzero(np.diff(grouped)) + 1).tolist(), len(rows)]
    segments = [(int(grouped[a]), pa.array(local[a:b])) for a, b in itertools.pairwise(cuts) if b > a]
    inverse = None if np.all(perm == np.arange(len(rows))) else pa.array(np.argsort(perm))
    columns = []
    for i, field in enumerate(table.schema):
        pieces = [batches[c].column(i).take(local_rows) for c, local_rows in segments]
        column = pa.concat_arrays(pieces) if pieces else pa.array([], type=field.type)
        del pieces
        if inverse is not None:  # `take` may add an all-valid bitmap; concatenating again drops it
            column = pa.concat_arrays([column.take(inverse)])
        columns.append(column)
    return pa.Table.from_arrays(columns, schema=table.schema)


def _format_column(fmt: str, **columns: pa.Array) -> pa.Array:
    """`fmt` filled in row by row, each `{field}` from the column of that name (a null field gives a null row)."""
    pieces: list[Any] = []
    for literal, field, _, _ in string.Formatter().parse(fmt):
        pieces += [literal] + ([columns[field]] if field else [])
    return pc.binary_join_element_wise(*pieces, "")


def _last_turn_only(values: pa.Array) -> pa.Array:
    """A string array of 3n turns whose turn 3i+2 is `values[i]` and the others null, sharing `values`' bytes."""
    n = len(values)
    if not n:
        return pa.array([], pa.string())
    ends = np.frombuffer(values.buffers()[1], dtype=np.int32)[values.offset : values.offset + n + 1]
    offsets = np.append(np.repeat(ends[:-1], 3), ends[-1])
    valid = np.zeros(3 * n, dtype=bool)
    valid[2::3] = values.is_valid().to_numpy(zero_copy_only=False)
    bitmap = pa.py_buffer(np.packbits(valid, bitorder="little"))
    return pa.StringArray.from_buffers(3 * n, pa.py_buffer(offsets), values.buffers()[2], bitmap)


def chat_columns(table: pa.Table, template: Template) -> pa.Table:
    """`messages` and `messages_think_inline` of each row: system, user (as `template` renders it), assistant.

    The assistant's content is `<answer>X</answer>`; the thinking (trimmed) is its `reasoning_content` in `messages`
    and comes inline before the answer in `messages_think_inline`. Only the user turns are built in Python; the
    thinking is copied out of Arrow once, for the inline turn (`messages` shares the trimmed thinking's bytes).
    """
    n = table.num_rows
    questions, options = table.column("question").to_pylist(), table.column("options").to_pylist()
    contexts = table.column("context").to_pylist() if "context" in table.column_names else [None] * n
    user = pa.array([template.user_turn(*row) for row in zip(questions, options, contexts, strict=True)], pa.string())
    system = pa.array([template.system] * n, pa.string())
    answer = _format_column(ANSWER_FORMAT, label=table.column("answer_label").combine_chunks().cast(pa.string()))
    reasoning = pc.utf8_trim_whitespace(table.column("reasoning").combine_chunks().cast(pa.string()))
    inline = _format_column(THINK_INLINE_FORMAT, reasoning=pc.fill_null(reasoning, ""), content=answer)
    # Turn t of row i sits at position 3i + t of the flat list of turns.
    turns = pa.array((np.arange(n)[:, None] + np.array([0, n, 2 * n])).ravel())
    offsets = pa.array(np.arange(0, 3 * n + 1, 3, dtype=np.int32))
    roles = pa.array(["system", "user", "assistant"] * n, pa.string())

    def conversations(field: pa.Field, *contents: pa.Array) -> pa.ListArray:
        """One list of 3 turns per row; each of `contents` is a struct field's 3n turn values, row by row."""
        values = [roles, *contents]
        return pa.ListArray.from_arrays(offsets, pa.StructArray.from_arrays(values, fields=list(field.type.value_type)))

    def by_row(*per_turn: pa.Array) -> pa.Array:
        return pa.chunked_array(per_turn, pa.string()).take(turns).combine_chunks()

    fields = {f.name: f for f in CHAT_FIELDS}
    messages = conversations(fields["messages"], by_row(system, user, answer), _last_turn_only(reasoning))
    think_inline = conversations(fields["messages_think_inline"], by_row(system, user, inline))
    return pa.table({"messages": messages, "messages_think_inline": think_inline})


def with_columns(table: pa.Table, derive: Derive | None) -> pa.Table:
    """`table` with the columns `derive` builds from it appended (unchanged without `derive`)."""
    if derive is None:
        return table
    added = derive(table)
    table = table.drop_columns([name for name in added.column_names if name in table.column_names])
    for name in added.column_names:
        table = table.append_column(name, added.column(name))
    return table


def row_bytes(array: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """About the Arrow bytes of each row of a column (values and offsets, not validity bits), from the row alone:
    what the shard and row-group cuts add up, so that they fall on the same rows however the rows arrive."""
    if isinstance(array, pa.ChunkedArray):
        parts = [row_bytes(c) for c in array.chunks]
        return np.concatenate(parts) if parts else np.zeros(0)
    t = array.type
    if pa.types.is_struct(t):
        total = np.zeros(len(array))
        for i in range(t.num_fields):
            total += row_bytes(array.field(i))
        return total
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        child = row_bytes(array.flatten())
        parents = pc.list_parent_indices(array).to_numpy()
        return np.bincount(parents, weights=child, minlength=len(array)) + 4.0
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_binary(t) or pa.types.is_large_binary(t):
        return pc.fill_null(pc.binary_length(array), 0).to_numpy(zero_copy_only=False).astype(np.float64) + 4.0
    if pa.types.is_boolean(t):
        return np.full(len(array), 0.125)
    width = t.bit_width / 8 if hasattr(t, "bit_width") and t.bit_width else 8.0
    return np.full(len(array), width)


def parquet_options(settings: ShardSettings) -> dict[str, Any]:
    """Writer options of a release file: zstd, statistics, a page index, content-defined chunking."""
    return {
        "compression": "zstd",
        "compression_level": settings.compression_level,
        "write_statistics": True,
        "write_page_index": True,
        "use_content_defined_chunking": CDC_OPTIONS if settings.content_defined_chunking else False,
    }


class ShardWriter:
    """`data/{split}-{i:05d}-of-{n:05d}.parquet` written from rows in release order, a batch at a time.

    A shard holds one source; a new one starts where the source changes or where the next row would take it past
    `shard_bytes` of Arrow data, and a row group ends where the next row would take it past `row_group_bytes` (the
    `datasets` sizes). The cuts are made row by row from each row's own size (`row_bytes`), so the files depend on
    the rows alone, not on how they were batched. `derive` adds columns built from each batch (the chat columns),
    counted in the sizes. Row groups are encoded in a worker thread per shard (pyarrow releases the GIL) while the
    next batch is prepared; up to two shards' worth of row groups wait (`inflight_groups`), so that two shards
    encode at once (1.5x faster on 2 cores than a window of 4 groups, for the same peak memory at 170K rows) and
    memory holds at most that many row groups.
    """

    def __init__(self, out: Path, settings: ShardSettings, derive: Derive | None = None) -> None:
        self.out, self.settings, self.derive = Path(out), settings, derive
        self.data = self.out / "data"
        self.data.mkdir(parents=True, exist_ok=True)
        for old in [*self.data.glob(f"{settings.split}-*-of-*.parquet"), *self.data.glob("*.parquet.tmp")]:
            old.unlink()
        self.schema: pa.Schema | None = None
        self.shards: list[dict[str, Any]] = []  # path (temporary), config, rows, arrow_bytes
        self.finished: set[str | None] = set()  # sources whose rows have all been written
        self.group: list[pa.Table] = []
        self.group_bytes = 0.0
        self.shard_bytes = 0.0
        self.writer: pq.ParquetWriter | None = None
        self.lane: ThreadPoolExecutor | None = None  # the open shard's worker: its row groups, in order
        self.inflight: deque[Future] = deque()
        self.inflight_groups = 2 * max(1, math.ceil(settings.shard_bytes / settings.row_group_bytes))

    def _submit(self, job: Callable[[], Any]) -> None:
        """Run `job` in the open shard's worker, after that shard's earlier jobs; the shard before it may still be
        encoding in its own worker. At most `inflight_groups` row groups wait, so memory stays bounded."""
        while len(self.inflight) >= self.inflight_groups:
            self.inflight.popleft().result()
        assert self.lane is not None
        self.inflight.append(self.lane.submit(job))

    def _flush_group(self) -> None:
        if not self.group:
            return
        table = pa.concat_tables(self.group).combine_chunks()
        self.group, self.group_bytes = [], 0.0
        shard, writer = self.shards[-1], self.writer
        shard["rows"] += table.num_rows
        assert writer is not None
        self._submit(lambda: writer.write_table(table, row_group_size=max(1, table.num_rows)))

    def _end_shard(self) -> None:
        self._flush_group()
        if self.writer is not None:
            self._submit(self.writer.close)
            self.writer = None
        if self.lane is not None:
            self.lane.shutdown(wait=False)  # its queued jobs still run; `close` waits for them
            self.lane = None

    def _start_shard(self, source: str | None) -> None:
        self._end_shard()
        if self.shards and self.shards[-1]["config"] != source:
            self.finished.add(self.shards[-1]["config"])
        if source in self.finished:
            raise Medr1Error("release rows are not grouped by source: an id does not start with its source's name")
        assert self.schema is not None
        path = self.data / f"{self.settings.split}-{len(self.shards):05d}.parquet.tmp"
        self.shards.append({"tmp": path, "config": source, "rows": 0, "arrow_bytes": 0})
        self.writer = pq.ParquetWriter(path, self.schema, **parquet_options(self.settings))
        self.lane = ThreadPoolExecutor(max_workers=1)
        self.shard_bytes = 0.0

    def write(self, batch: pa.Table) -> None:
        """Append rows that follow the rows written so far in release order."""
        table = normalize(with_columns(batch, self.derive))
        if self.schema is None:
            self.schema = table.schema
        table = table.cast(self.schema)
        sizes = np.zeros(table.num_rows)
        for column in table.columns:
            sizes += row_bytes(column)
        sources = table.column("source").to_pylist() if "source" in table.column_names else [None] * len(sizes)
        s = self.settings
        start = 0
        for i, size in enumerate(sizes):
            current = self.shards[-1]["config"] if self.shards else object()
            new_shard = sources[i] != current or (self.shard_bytes and self.shard_bytes + size > s.shard_bytes)
            new_group = self.group_bytes and self.group_bytes + size > s.row_group_bytes
            if new_shard or new_group:
                if i > start:
                    self.group.append(table.slice(start, i - start))
                start = i
                self._start_shard(sources[i]) if new_shard else self._flush_group()
            self.shard_bytes += size
            self.group_bytes += size
            self.shards[-1]["arrow_bytes"] += size
        if table.num_rows > start:
            self.group.append(table.slice(start))

    def close(self) -> list[dict[str, Any]]:
        """Finish the last shard, name every shard `-of-n` and return one manifest entry per file."""
        if not self.shards:  # no row at all: one empty file keeps the schema
            self._start_shard(None)
        self._end_shard()
        while self.inflight:
            self.inflight.popleft().result()
        n = len(self.shards)
        files = []
        for i, shard in enumerate(self.shards):
            path = self.data / f"{self.settings.split}-{i:05d}-of-{n:05d}.parquet"
            os.replace(shard["tmp"], path)
            files.append(
                {
                    "path": path.relative_to(self.out).as_posix(),
                    "split": self.settings.split,
                    "config": shard["config"],
                    "rows": shard["rows"],
                    "arrow_bytes": round(shard["arrow_bytes"]),  # the rows' sizes the cuts added up
                    "bytes": path.stat().st_size,
                    "sha256": sha256_file(path),
                }
            )
        return files


def write_shards(
    table: pa.Table, out: Path, settings: ShardSettings, rows: pa.Array | None = None, derive: Derive | None = None
) -> list[dict[str, Any]]:
    """Write a table's rows (all, or those at positions `rows`) as release shards in release order (`ShardWriter`);
    return one manifest entry per file. Only the key columns are sorted; rows are taken a batch at a time."""
    order = sort_order(table, rows)
    writer = ShardWriter(out, settings, derive)
    if not len(order):
        writer.write(table.slice(0, 0))
    for start in range(0, len(order), SIZE_BATCH_ROWS):
        writer.write(take_rows(table, order.slice(start, SIZE_BATCH_ROWS)))
    return writer.close()


def schema_doc(schema: pa.Schema) -> list[dict[str, str]]:
    """Each column with its Arrow type and one sentence on what it holds."""
    return [{"name": f.name, "type": str(f.type), "description": COLUMN_DOCS.get(f.name, "")} for f in schema]


def config_summary(files: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per config (`default` first, then each source): its files and, per split, rows and bytes."""
    configs: dict[str, dict[str, Any]] = {}
    for name in [DEFAULT_CONFIG, *sorted({f["config"] for f in files if f.get("config")})]:
        mine = [f for f in files if name == DEFAULT_CONFIG or f.get("config") == name]
        splits: dict[str, dict[str, int]] = {}
        for f in mine:
            s = splits.setdefault(f["split"], {"rows": 0, "bytes": 0, "arrow_bytes": 0})
            s["rows"] += f["rows"]
            s["bytes"] += f["bytes"]
            s["arrow_bytes"] += f.get("arrow_bytes", 0)
        configs[name] = {"files": [f["path"] for f in mine], "splits": splits}
    return configs


def write_manifest(
    out: Path,
    files: list[dict[str, Any]],
    schema: pa.Schema,
    recipe: dict[str, Any],
    recipe_sha256: str,
    version: str | None = None,
) -> dict[str, Any]:
    """Write `manifest.json`: files with rows, bytes and sha256; configs; the schema; the recipe and its hash."""
    manifest = {
        "format": MANIFEST_FORMAT,
        "version": version if version is not None else str(recipe.get("version", "")),
        "library": {"name": "medr1", "version": __version__},
        "recipe_sha256": recipe_sha256,
        "recipe": recipe,
        "files": files,
        "splits": {s: sum(f["rows"] for f in files if f["split"] == s) for s in sorted({f["split"] for f in files})},
        "configs": config_summary(files),
        "schema": schema_doc(schema),
    }
    (Path(out) / MANIFEST).write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return manifest


def read_manifest(folder: Path) -> dict[str, Any]:
    """The release folder's `manifest.json`."""
    path = Path(folder) / MANIFEST
    if not path.exists():
        raise Medr1Error(f"{path}: no manifest; is {folder} a MedR1 release folder?")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise Medr1Error(f"{path}: not valid JSON: {e}") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), list):
        raise Medr1Error(f"{path}: no 'files' list; is {folder} a MedR1 release folder?")
    return manifest


def _check_file(folder: Path, entry: dict[str, Any]) -> Path:
    file = Path(folder) / entry["path"]
    if not file.exists():
        raise Medr1Error(f"{file}: listed in the manifest but missing")
    if file.stat().st_size != entry["bytes"] or sha256_file(file) != entry["sha256"]:
        raise Medr1Error(f"{file}: checksum does not match the manifest (file changed or corrupt)")
    return file


def check_release(folder: Path, manifest: dict[str, Any] | None = None) -> dict[str, Any]:
    """Check every file of the manifest (size, sha256) and that `data/` holds no file the manifest does not list."""
    folder = Path(folder)
    manifest = manifest or read_manifest(folder)
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        list(pool.map(lambda e: _check_file(folder, e), manifest["files"]))
    listed = {e["path"] for e in manifest["files"]}
    extra = sorted(p.relative_to(folder).as_posix() for p in (folder / "data").rglob("*") if p.is_file())
    extra = [p for p in extra if p not in listed]
    if extra:
        raise Medr1Error(f"{folder / extra[0]}: in data/ but not in the manifest ({len(extra)} such file(s))")
    return manifest


def release_files(folder: Path, split: str = "train", config: str = DEFAULT_CONFIG) -> list[Path]:
    """The files of one config's split of a release folder, each checked (size, sha256) against the manifest."""
    folder = Path(folder)
    manifest = read_manifest(folder)
    entries = [
        e
        for e in manifest["files"]
        if e["split"] == split and (config == DEFAULT_CONFIG or e.get("config", DEFAULT_CONFIG) == config)
    ]
    if not entries:
        configs = ", ".join(manifest.get("configs", {DEFAULT_CONFIG: None}))
        raise Medr1Error(f"{folder}: the manifest lists no files for config '{config}' split '{split}' ({configs})")
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        return list(pool.map(lambda e: _check_file(folder, e), entries))


def read_release(folder: Path, split: str = "train", config: str = DEFAULT_CONFIG) -> pa.Table:
    """Read one config's split of a release folder after checking each file's size and sha256 against the manifest."""
    files = release_files(folder, split, config)
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        return pa.concat_tables(list(pool.map(pq.read_table, files)))
