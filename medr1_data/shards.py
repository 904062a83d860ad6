"""Release files: zstd Parquet shards in the Hub layout, a manifest with checksums, and checked reading."""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from medr1_data import Medr1Error, __version__
from medr1_data.schema import COLUMN_DOCS, normalize

MANIFEST = "manifest.json"


@dataclass
class ShardSettings:
    """The recipe's `output` section."""

    dir: str = "medr1-reasoning"
    split: str = "train"
    shard_bytes: int = 500 * 1024 * 1024  # datasets' own default for push_to_hub (500MB of Arrow data)
    row_group_rows: int = 1000
    compression_level: int = 9


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def sort_rows(table: pa.Table) -> pa.Table:
    """The deterministic release order: by `id`, then `sample_idx`."""
    keys = [("id", "ascending")] + ([("sample_idx", "ascending")] if "sample_idx" in table.column_names else [])
    return table.sort_by(keys)


def write_shards(table: pa.Table, out: Path, settings: ShardSettings) -> list[dict[str, Any]]:
    """Write `data/{split}-{i:05d}-of-{n:05d}.parquet` sized by Arrow bytes; return one manifest entry per file."""
    table = normalize(sort_rows(table))
    data = Path(out) / "data"
    data.mkdir(parents=True, exist_ok=True)
    for old in data.glob(f"{settings.split}-*-of-*.parquet"):
        old.unlink()
    n = max(1, math.ceil(table.nbytes / settings.shard_bytes))
    per = math.ceil(table.num_rows / n) if table.num_rows else 0
    entries = []
    for i in range(n):
        part = table.slice(i * per, per)
        path = data / f"{settings.split}-{i:05d}-of-{n:05d}.parquet"
        pq.write_table(
            part,
            path,
            compression="zstd",
            compression_level=settings.compression_level,
            row_group_size=settings.row_group_rows,
            write_statistics=True,
        )
        entries.append(
            {
                "path": path.relative_to(out).as_posix(),
                "split": settings.split,
                "rows": part.num_rows,
                "bytes": path.stat().st_size,
                "sha256": sha256_file(path),
            }
        )
    return entries


def schema_doc(schema: pa.Schema) -> list[dict[str, str]]:
    """Each column with its Arrow type and one sentence on what it holds."""
    return [{"name": f.name, "type": str(f.type), "description": COLUMN_DOCS.get(f.name, "")} for f in schema]


def write_manifest(
    out: Path, files: list[dict[str, Any]], schema: pa.Schema, recipe: dict[str, Any], recipe_sha256: str
) -> dict[str, Any]:
    """Write `manifest.json`: files with rows, bytes and sha256; the schema; the recipe and its hash; the version."""
    manifest = {
        "format": 1,
        "library": {"name": "medr1", "version": __version__},
        "recipe_sha256": recipe_sha256,
        "recipe": recipe,
        "files": files,
        "splits": {s: sum(f["rows"] for f in files if f["split"] == s) for s in sorted({f["split"] for f in files})},
        "schema": schema_doc(schema),
    }
    (Path(out) / MANIFEST).write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return manifest


def read_release(folder: Path, split: str = "train") -> pa.Table:
    """Read a release folder's split after checking every file against the manifest's size and sha256."""
    path = Path(folder) / MANIFEST
    if not path.exists():
        raise Medr1Error(f"{path}: no manifest; is {folder} a MedR1 release folder?")
    manifest = json.loads(path.read_text(encoding="utf-8"))
    tables = []
    for entry in manifest["files"]:
        if entry["split"] != split:
            continue
        file = Path(folder) / entry["path"]
        if not file.exists():
            raise Medr1Error(f"{file}: listed in the manifest but missing")
        if file.stat().st_size != entry["bytes"] or sha256_file(file) != entry["sha256"]:
            raise Medr1Error(f"{file}: checksum does not match the manifest (file changed or corrupt)")
        tables.append(pq.read_table(file))
    if not tables:
        raise Medr1Error(f"{folder}: the manifest lists no files for split '{split}'")
    return pa.concat_tables(tables)
