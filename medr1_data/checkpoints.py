"""Stage checkpoints of a build: each stage's output table (Parquet parts) and what it added to the build's numbers.

A checkpoint is keyed by SHA-256 over the previous stage's key, the recipe settings the stage reads, fingerprints of
the files it reads, and the library (its version and a hash of its code), so a key names one input and one way of
processing it. A checkpoint is trusted only while every file it names still has the sha256 recorded when it was
written: a damaged file of the same size is found too, and the stage runs again.

A stage's table is written part by part (`medr1_data/parts.py`), each part to a temporary name renamed into place,
and the JSON record last, also atomically: a build killed
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

from medr1_data import __version__, canonical_sha256
from medr1_data.parts import Parts, PartsWriter
from medr1_data.shards import sha256_file

FOLDER = "checkpoints"


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


def _atomic(path: Path, write: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    os.replace(tmp, path)


class Checkpoints:
    """The checkpoint folder of one build: `NN-stage/part-*.parquet` (the output table) and `NN-stage.json`."""

    def __init__(self, build_dir: Path, stages: list[str]) -> None:
        self.folder = Path(build_dir) / FOLDER
        self.index = {name: i for i, name in enumerate(stages)}
        self.damaged: dict[str, str] = {}  # stage -> the file whose content no longer matches its record
        self._digests: dict[tuple[str, int, int], str] = {}  # a table file is hashed once, however many build on it

    def _digest(self, path: Path) -> str:
        """sha256 of a file, computed once per (path, size, mtime)."""
        st = path.stat()
        sig = (str(path), st.st_size, st.st_mtime_ns)
        if sig not in self._digests:
            self._digests[sig] = sha256_file(path)
        return self._digests[sig]

    def _matches(self, path: Path, digest: str | None) -> bool:
        """Whether `path` is a file whose sha256 is `digest`."""
        return digest is not None and path.is_file() and self._digest(path) == digest

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
        table = Parts.from_entry(self.folder, meta["parts"]) if meta.get("parts") else None
        bad = (table.damaged(self._digest) if table is not None else None) or next(
            (name for name, digest in meta.get("outputs", {}).items() if not self._matches(Path(name), digest)), None
        )
        if bad is not None:
            self.damaged[stage] = bad
            return None
        return meta

    def writer(self, stage: str, base: Parts | None = None, own: list[str] | None = None) -> PartsWriter:
        """A writer of `stage`'s output table (with a `base`: only the `own` columns are stored)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        return PartsWriter(self.folder, self._base(stage).name, base, own)

    def parts(self, meta: dict[str, Any]) -> Parts:
        """The output table a checkpoint record names."""
        return Parts.from_entry(self.folder, meta["parts"])

    def save(self, stage: str, key: str, table: Parts | None, meta: dict[str, Any]) -> dict[str, Any]:
        """Commit a stage: its record (`table`: the output it wrote, or None), written last and atomically."""
        self.folder.mkdir(parents=True, exist_ok=True)
        parts = table.entry() if table is not None else None
        meta = {**meta, "parts": parts, "key": key, "library_version": __version__}
        text = json.dumps(meta, indent=1, sort_keys=True, ensure_ascii=False) + "\n"
        _atomic(self._base(stage).with_suffix(".json"), lambda tmp: tmp.write_text(text, encoding="utf-8"))
        return meta
