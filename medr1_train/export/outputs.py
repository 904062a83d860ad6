"""Where an export writes: a staging folder inside DIR whose outputs are moved into place only once every variant is
written, checked and has its card; variants of separate calls accumulate in `gguf/` and `export_report.json`."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

from medr1_data import Medr1Error
from medr1_data.shards import sha256_file
from medr1_train.export.checks import Check, Variant, read_json
from medr1_train.export.gguf import gguf_file_name

REPORT = "export_report.json"
STAGING_PREFIX = ".export-"


def folder_of(kind: str) -> str:
    """The output folder of a kind (or of `merged`): all GGUF files share `gguf/`."""
    return "gguf" if kind.startswith("gguf-") else kind


def target(out: Path, kind: str, name: str) -> Path:
    """Where a kind's output lies in DIR: its own folder, or its file in `gguf/`."""
    return out / "gguf" / gguf_file_name(name, kind) if kind.startswith("gguf-") else out / kind


def check_targets(out: Path, kinds: list[str], name: str, overwrite: bool) -> None:
    """A one-line error when an output of one of `kinds` is already in DIR and `--overwrite` was not given."""
    for kind in kinds:
        path = target(out, kind, name)
        if not overwrite and (path.is_file() or (path.is_dir() and any(path.iterdir()))):
            raise Medr1Error(f"{path} already exists; pass --overwrite to replace it (other variants in {out} stay)")


def adapter_sha256(adapter: Path) -> str:
    """SHA-256 of the adapter's weights file: which adapter the variants in DIR were made from."""
    weights = adapter / "adapter_model.safetensors"
    return sha256_file(weights if weights.is_file() else adapter / "adapter_model.bin")


def previous_report(out: Path, adapter_sha: str, base: str) -> dict[str, Any] | None:
    """DIR's `export_report.json` from earlier calls, which must be of the same adapter and base; None if none."""
    path = out / REPORT
    if not path.is_file():
        return None
    report = read_json(path, "the export report")
    if report.get("adapter_sha256") != adapter_sha or report.get("base") != base:
        raise Medr1Error(
            f"{out} holds variants of another adapter or base (base {report.get('base')}, adapter sha256 "
            f"{str(report.get('adapter_sha256'))[:12]}); export to another --out"
        )
    return report


def variant_from_dict(d: dict[str, Any]) -> Variant:
    """A Variant as `export_report.json` records it."""
    check = Check(**d["check"]) if d.get("check") else None
    return Variant(d["kind"], d["path"], d["bytes"], check, list(d.get("files", [])))


def kept_variants(previous: dict[str, Any] | None, replaced: set[str]) -> list[Variant]:
    """The earlier calls' variants that are still on disk and not replaced by this call."""
    old = (previous or {}).get("variants", [])
    return [variant_from_dict(v) for v in old if v["kind"] not in replaced and Path(v["path"]).exists()]


@contextlib.contextmanager
def staging(out: Path) -> Iterator[Path]:
    """A fresh folder inside DIR for this call's outputs, removed whatever happens (DIR too, if it was made here and
    is left empty): a failed export leaves DIR as it was."""
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=out))
    try:
        yield stage
    finally:
        shutil.rmtree(stage, ignore_errors=True)
        if created and out.is_dir() and not any(out.iterdir()):
            out.rmdir()


def commit(stage: Path, out: Path, variants: list[Variant], name: str) -> None:
    """Move this call's staged variants (each folder with its card) into DIR, replacing only the same kinds."""
    for v in variants:
        final = target(out, v.kind, name)
        if final.is_dir():
            shutil.rmtree(final)
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(v.path, final)
        v.path = str(final)
    if (stage / "gguf" / "README.md").is_file():
        os.replace(stage / "gguf" / "README.md", out / "gguf" / "README.md")


def write_report(out: Path, report: dict[str, Any], variants: list[Variant], previous: dict[str, Any] | None) -> None:
    """`export_report.json`: this call's numbers, every variant now in DIR with its files, and every call's command."""
    for v in variants:
        folder = out / folder_of(v.kind)
        v.files = sorted(p.relative_to(out).as_posix() for p in folder.rglob("*") if p.is_file())
    commands = [*(previous or {}).get("commands", []), report.pop("command")]
    full = {**report, "variants": [asdict(v) for v in variants], "commands": commands}
    tmp = out / f"{REPORT}.tmp"
    tmp.write_text(json.dumps(full, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, out / REPORT)
