"""Any dataset as a stream of record batches: local Parquet, JSON lines or JSON files, or a Hub dataset.

Parquet is read a row group at a time and JSON lines with pyarrow's streaming JSON reader, so memory holds a
batch, not the file; a `.json` file holding one JSON array is read whole (that format cannot be streamed); a Hub
dataset is streamed with `datasets` (`streaming=True`), and its id and revision are recorded. `open_dataset` reads
the SPEC that `medr1-data audit` and a dataset teacher take.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.json as pa_json
import pyarrow.parquet as pq

from medr1_data import Medr1Error
from medr1_data.layouts import Layout, parse_layout
from medr1_data.streaming import row_group_batches

SUFFIXES = (".parquet", ".jsonl", ".json")


@dataclass
class Input:
    """Where a dataset comes from (a folder, a file or a Hub id and revision) and its batches."""

    ref: str
    revision: str | None
    files: list[str]

    def describe(self) -> str:
        """`ORG/NAME@REV` for the Hub, else the path."""
        return f"{self.ref}@{self.revision}" if self.revision else self.ref


def _files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    if path.is_dir():
        found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in SUFFIXES)
        if found:
            return found
        raise Medr1Error(f"{path}: no {', '.join(SUFFIXES)} files in this folder")
    raise Medr1Error(f"{path}: no such file or folder")


def _json_batches(path: Path, rows: int) -> Iterator[pa.RecordBatch]:
    with path.open("rb") as f:
        head = f.read(1 << 16).lstrip()
    if head.startswith(b"["):
        try:
            records = orjson.loads(path.read_bytes())
        except orjson.JSONDecodeError as e:
            raise Medr1Error(f"{path}: not valid JSON: {e}") from None
        for start in range(0, len(records), rows):
            yield from pa.Table.from_pylist(records[start : start + rows]).to_batches()
        return
    try:
        reader = pa_json.open_json(path, read_options=pa_json.ReadOptions(block_size=16 << 20))
        yield from reader
    except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
        raise Medr1Error(f"{path}: cannot read as JSON lines: {' '.join(str(e).split())[:300]}") from None


def local_batches(path: Path, rows: int) -> tuple[Input, Iterator[pa.RecordBatch]]:
    """The files under `path` (Parquet, JSON lines, JSON) as batches of about `rows` rows."""
    files = _files(Path(path))

    def gen() -> Iterator[pa.RecordBatch]:
        for file in files:
            if file.suffix == ".parquet":
                try:  # one row group at a time, no read-ahead: memory holds a batch
                    yield from row_group_batches(pq.ParquetFile(file), rows)
                except (pa.ArrowInvalid, OSError) as e:
                    raise Medr1Error(f"{file}: cannot read as Parquet: {' '.join(str(e).split())[:300]}") from None
            else:
                yield from _json_batches(file, rows)

    return Input(str(path), None, [str(f) for f in files]), gen()


def hub_batches(
    repo: str, split: str, rows: int, revision: str | None = None
) -> tuple[Input, Iterator[pa.RecordBatch]]:
    """A Hub dataset's split streamed as batches (nothing is downloaded whole)."""
    import datasets
    from huggingface_hub import HfApi

    try:
        sha = HfApi().dataset_info(repo, revision=revision).sha
        stream = datasets.load_dataset(repo, split=split, streaming=True, revision=sha)
    except Exception as e:  # the Hub raises many kinds (offline, gated, not found): one line names it
        raise Medr1Error(f"{repo}: cannot stream split '{split}' from the Hub: {type(e).__name__}: {e}") from None

    def gen() -> Iterator[pa.RecordBatch]:
        for batch in stream.iter(batch_size=rows):
            yield from pa.Table.from_pydict(batch).to_batches()

    return Input(repo, sha, []), gen()


def open_dataset(spec: str, split: str, rows: int) -> tuple[Layout | None, Input, Iterator[pa.RecordBatch]]:
    """(layout or None to detect, input, batches) for `LAYOUT=PATH`, a local PATH or a Hub id `ORG/NAME[@REV]`."""
    layout_text, sep, where = spec.rpartition("=")
    layout = parse_layout(layout_text) if sep else None
    target = where if sep else spec
    if Path(target).exists() or sep:
        source, batches = local_batches(Path(target), rows)
    else:
        repo, _, rev = target.partition("@")
        source, batches = hub_batches(repo, split, rows, rev or None)
    return layout, source, batches
