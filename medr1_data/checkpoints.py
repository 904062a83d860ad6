"""Stage checkpoints of a build: each stage's output table (Parquet) and what it added to the build's numbers (JSON).

A checkpoint is keyed by SHA-256 over the previous stage's key, the recipe settings the stage reads, fingerprints of
the files it reads, and the library (its version and a hash of its code), so a key names one input and one way of
processing it. A checkpoint is trusted only while every file it names still has the sha256 recorded when it was
written: a damaged file of the same size is found too, and the stage runs again.

Both files are written to a temporary name and renamed into place, the JSON last: a build killed
mid-stage leaves no checkpoint for that stage (only, at worst, a stray `.tmp` file) and the next run starts again
at it.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from medr1_data import __version__, canonical_sha256
from medr1_data.shards import sha256_file

FOLDER = "checkpoints"
# Checkpoints are read back by this machine only: zstd level 1 writes ~3x faster than the release shards' level.
COMPRESSION = {"compression": "zstd", "compression_level": 1}


@functools.cache
def code_sha256() -> str:
    """SHA-256 over the library's own files (modules, recipes, card templates): an edited checkout is a new library,
    even where its version number did not change."""
    root = Path(__file__).resolve().parent
    files = [*root.rglob("*"), *(root.parent / "dataset_cards").glob("*")]  # the card templates of a checkout
    h = hashlib.sha256()
    for p in sorted(files):
        if p.is_file() and p.suffix in {".py", ".yaml", ".md", ".j2"} and "__pycache__" not in p.parts:
            h.update(p.name.encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()


def stage_key(previous: str | None, stage: str, settings: Any) -> str:
    """The key of a stage's checkpoint: its input's key, its settings and the library (version and code), hashed."""
    payload = {
        "previous": previous,
        "stage": stage,
        "settings": settings,
        "library_version": __version__,
        "library_code": code_sha256(),
    }
    return canonical_sha256(payload)


def fingerprint(path: Path) -> list[list[Any]]:
    """(path, size, mtime_ns) of a file, or of every file under a folder: a changed source invalidates its stage."""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file())
    elif path.exists():
        files = [path]
    else:
        return [[str(path), None, None]]
    out = []
    for p in files:
        st = p.stat()
        out.append([str(p.resolve()), st.st_size, st.st_mtime_ns])
    return out


def _encode(value: Any) -> Any:
    if isinstance(value, pa.Schema):
        return {"__arrow_schema__": base64.b64encode(value.serialize().to_pybytes()).decode("ascii")}
    if isinstance(value, dict):
        return {k: _encode(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_encode(v) for v in value]
    return value


def _decode(value: Any) -> Any:
    if isinstance(value, dict):
        if set(value) == {"__arrow_schema__"}:
            return pa.ipc.read_schema(pa.py_buffer(base64.b64decode(value["__arrow_schema__"])))
        return {k: _decode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode(v) for v in value]
    return value


def encode_stats(stats: dict[str, Any]) -> dict[str, str]:
    """Each build number as JSON (Arrow schemas included; key order kept, the card relies on it)."""
    return {k: json.dumps(_encode(v), ensure_ascii=False, default=str) for k, v in stats.items()}


def decode_stats(stored: dict[str, str]) -> dict[str, Any]:
    """The inverse of `encode_stats`."""
    return {k: _decode(json.loads(v)) for k, v in stored.items()}


def _same(a: pa.ChunkedArray, b: pa.ChunkedArray) -> bool:
    """Whether two columns are the same memory (a stage passed the column on untouched)."""
    if a.type != b.type or a.num_chunks != b.num_chunks:
        return False
    for x, y in zip(a.chunks, b.chunks, strict=True):
        if x.offset != y.offset or len(x) != len(y):
            return False
        bx, by = x.buffers(), y.buffers()
        if len(bx) != len(by):
            return False
        for p, q in zip(bx, by, strict=True):
            if (p is None) != (q is None) or (p is not None and (p.address != q.address or p.size != q.size)):
                return False
    return True


def _atomic(path: Path, write: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    os.replace(tmp, path)


class Checkpoints:
    """The checkpoint folder of one build: `NN-stage.parquet` (the output table) and `NN-stage.json` (the rest)."""

    def __init__(self, build_dir: Path, stages: list[str]) -> None:
        self.folder = Path(build_dir) / FOLDER
        self.index = {name: i for i, name in enumerate(stages)}
        self.damaged: dict[str, str] = {}  # stage -> the file whose content no longer matches its record
        self._digests: dict[tuple[str, int, int], str] = {}  # a table file is hashed once, however many build on it

    def _matches(self, path: Path, digest: str | None) -> bool:
        """Whether `path` is a file whose sha256 is `digest`."""
        if digest is None or not path.is_file():
            return False
        st = path.stat()
        sig = (str(path), st.st_size, st.st_mtime_ns)
        if sig not in self._digests:
            self._digests[sig] = sha256_file(path)
        return self._digests[sig] == digest

    def _base(self, stage: str) -> Path:
        return self.folder / f"{self.index[stage]:02d}-{re.sub(r'[^a-z0-9_]', '_', stage)}"

    def meta(self, stage: str, key: str) -> dict[str, Any] | None:
        """The stored record of `stage` if its key is `key` and every file it names is intact, else None.

        A record whose key matches but whose table file or release output no longer has its recorded sha256
        is listed in `self.damaged` (the runner says so, then reruns the stage).
        """
        path = self._base(stage).with_suffix(".json")
        try:
            meta = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if meta.get("key") != key:
            return None
        bad = self._damaged_table(meta) or next(
            (name for name, digest in meta.get("outputs", {}).items() if not self._matches(Path(name), digest)), None
        )
        if bad is not None:
            self.damaged[stage] = bad
            return None
        return meta

    def _damaged_table(self, entry: dict[str, Any]) -> str | None:
        """The first table file of a record (or of the records it builds on) whose content changed, or None."""
        while entry and entry.get("table"):
            file = self.folder / entry["table"]
            if not self._matches(file, entry.get("sha256")) or file.stat().st_size != entry["bytes"]:
                return str(file)
            entry = entry.get("base")
        return None

    def write_table(
        self,
        stage: str,
        table: pa.Table | None,
        source: pa.Table | None = None,
        source_entry: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Write a stage's output table (None: the stage passed its input on unchanged); returns its file entry.

        A stage that added or replaced columns of its input (`source`, stored as `source_entry`) and kept the rest
        as they were (the same Arrow buffers) stores only the new columns plus a reference to the input's file:
        verify, score and select then write kilobytes, not the traces' text again.
        """
        if table is None:
            return {"table": None}
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self._base(stage).with_suffix(".parquet")
        entry: dict[str, Any] = {"table": path.name}
        if source is not None and source_entry and source_entry.get("table") and source.num_rows == table.num_rows:
            same = [n for n in table.column_names if n in source.column_names and _same(source[n], table[n])]
            if same:
                keep = ("table", "bytes", "sha256", "columns", "base")
                base = {k: source_entry[k] for k in keep if k in source_entry}
                entry.update(base=base, columns=table.column_names)
                table = table.drop_columns(same)
        _atomic(path, lambda tmp: pq.write_table(table, tmp, **COMPRESSION))
        entry["bytes"] = path.stat().st_size
        entry["sha256"] = sha256_file(path)
        return entry

    def save(self, stage: str, key: str, written: dict[str, Any], meta: dict[str, Any]) -> dict[str, Any]:
        """Commit a stage: its record (`written`: from `write_table`), written last and atomically."""
        self.folder.mkdir(parents=True, exist_ok=True)
        meta = {**meta, **written, "key": key, "library_version": __version__}
        text = json.dumps(meta, indent=1, sort_keys=True, ensure_ascii=False) + "\n"
        _atomic(self._base(stage).with_suffix(".json"), lambda tmp: tmp.write_text(text, encoding="utf-8"))
        return meta

    def table(self, entry: dict[str, Any]) -> pa.Table:
        """The output table a checkpoint record names (its own columns over those of the file it builds on)."""
        own = pq.read_table(self.folder / entry["table"])
        if not entry.get("base"):
            return own
        base = self.table(entry["base"])
        columns = [own[n] if n in own.column_names else base[n] for n in entry["columns"]]
        fields = [own.schema.field(n) if n in own.column_names else base.schema.field(n) for n in entry["columns"]]
        return pa.Table.from_arrays(columns, schema=pa.schema(fields))
