"""Compare two releases (folders or Hub revisions `ORG/NAME@vX.Y.Z`): rows added, removed and changed by key."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import polars as pl

from medr1_data import Medr1Error
from medr1_data.shards import MANIFEST, read_manifest, read_release

HUB_REF = re.compile(r"^(?P<repo>[\w.-]+/[\w.-]+)@(?P<revision>[\w./-]+)$")
EXAMPLES = 5


def resolve_release(ref: str, cache_dir: Path | None = None) -> Path:
    """A local release folder for `ref`: the folder itself, or a Hub revision `ORG/NAME@REV` downloaded."""
    path = Path(ref)
    if path.is_dir():
        return path
    match = HUB_REF.match(ref)
    if not match:
        raise Medr1Error(f"{ref}: no such release folder, and not a Hub revision like medr1/reasoning@v1.0.0")
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    from medr1_data.hub import hub_endpoint

    try:
        folder = snapshot_download(
            match["repo"],
            repo_type="dataset",
            revision=match["revision"],
            allow_patterns=[MANIFEST, "README.md", "data/*"],
            cache_dir=cache_dir,
            endpoint=hub_endpoint(),
        )
    except OfflineModeIsEnabled:
        raise Medr1Error(f"{ref}: HF_HUB_OFFLINE is set; unset it to read a Hub revision") from None
    except HfHubHTTPError as e:
        raise Medr1Error(f"{ref}: cannot download from the Hub: {str(e).splitlines()[0]}") from None
    return Path(folder)


def _read_all(folder: Path, manifest: dict[str, Any]) -> pl.DataFrame:
    splits = sorted({f["split"] for f in manifest["files"]})
    frames = []
    for split in splits:
        df = pl.from_arrow(read_release(folder, split))
        frames.append(df.with_columns(pl.lit(split).alias("__split")))
    return pl.concat(frames, how="diagonal_relaxed") if frames else pl.DataFrame()


def diff_releases(old_ref: str, new_ref: str, cache_dir: Path | None = None) -> dict[str, Any]:
    """Rows added, removed and changed by (`id`, `sample_idx`), per source, and per changed column."""
    old_dir, new_dir = resolve_release(old_ref, cache_dir), resolve_release(new_ref, cache_dir)
    old_manifest, new_manifest = read_manifest(old_dir), read_manifest(new_dir)
    old, new = _read_all(old_dir, old_manifest), _read_all(new_dir, new_manifest)
    key = ["__split", "id"] + (["sample_idx"] if "sample_idx" in old.columns and "sample_idx" in new.columns else [])
    for name, df in (("OLD", old), ("NEW", new)):
        if df.height and df.select(key).is_duplicated().any():
            raise Medr1Error(f"{name} release has duplicate {'/'.join(key[1:])} rows; cannot diff by key")
    added = new.join(old.select(key), on=key, how="anti")
    removed = old.join(new.select(key), on=key, how="anti")
    common = [c for c in new.columns if c in old.columns and c not in key]
    both = new.join(old.select(key + common), on=key, how="inner", suffix="__old")
    neq = both.select([pl.col(c).ne_missing(pl.col(f"{c}__old")).alias(c) for c in common])
    changed_mask = neq.select(pl.any_horizontal(pl.all()).alias("changed"))["changed"] if common else None
    if changed_mask is None:
        changed_mask = pl.Series("changed", [False] * both.height)
    changed = both.filter(changed_mask)
    columns_changed = {c: int(neq[c].sum()) for c in common if neq[c].sum()}

    def per_source(df: pl.DataFrame) -> dict[str, int]:
        return dict(df.group_by("source").len().sort("source").iter_rows()) if df.height else {}

    parts = {
        "added": per_source(added),
        "removed": per_source(removed),
        "changed": per_source(changed),
        "unchanged": per_source(both.filter(~changed_mask)),
    }
    sources = sorted(set().union(*parts.values()))

    def keys(df: pl.DataFrame) -> list[str]:
        return [f"{r['id']}#{r.get('sample_idx', 0)}" for r in df.head(EXAMPLES).to_dicts()]

    return {
        "old": {"ref": old_ref, "folder": str(old_dir), "version": old_manifest.get("version"), "rows": old.height},
        "new": {"ref": new_ref, "folder": str(new_dir), "version": new_manifest.get("version"), "rows": new.height},
        "key": key[1:],
        "rows": {k: sum(v.values()) for k, v in parts.items()},
        "questions": {
            "added": new.select("id").unique().join(old.select("id").unique(), on="id", how="anti").height,
            "removed": old.select("id").unique().join(new.select("id").unique(), on="id", how="anti").height,
        },
        "by_source": {s: {k: parts[k].get(s, 0) for k in parts} for s in sources},
        "columns_changed": dict(sorted(columns_changed.items(), key=lambda kv: (-kv[1], kv[0]))),
        "columns_added": [c for c in new.columns if c not in old.columns],
        "columns_removed": [c for c in old.columns if c not in new.columns],
        "examples": {"added": keys(added), "removed": keys(removed), "changed": keys(changed)},
    }


def changelog_entry(diff: dict[str, Any]) -> str:
    """One changelog line written from a diff."""
    r = diff["rows"]
    old_v, new_v = diff["old"].get("version") or "?", diff["new"].get("version") or "?"
    text = (
        f"v{new_v} (compared with v{old_v}): {r['added']:,} traces added, {r['removed']:,} removed, "
        f"{r['changed']:,} changed, {r['unchanged']:,} unchanged; {diff['new']['rows']:,} traces in all"
    )
    if diff["columns_changed"]:
        text += " (changed columns: " + ", ".join(f"`{c}` {n:,}" for c, n in diff["columns_changed"].items()) + ")"
    per = [
        f"{s} +{v['added']:,} −{v['removed']:,} ~{v['changed']:,}"
        for s, v in diff["by_source"].items()
        if v["added"] or v["removed"] or v["changed"]
    ]
    if per:
        text += "; by source: " + ", ".join(per)
    for what in ("added", "removed"):
        if diff[f"columns_{what}"]:
            text += f"; columns {what}: " + ", ".join(f"`{c}`" for c in diff[f"columns_{what}"])
    return text + "."


def write_changelog(new_folder: Path, diff: dict[str, Any], old_folder: Path | None) -> list[str]:
    """Rewrite the changelog of NEW's card from the diff (plus OLD's changelog) and record OLD in NEW's manifest."""
    from medr1_data.card import changelog_lines, replace_changelog
    from medr1_data.hub import parse_version

    old_v, new_v = diff["old"].get("version"), diff["new"].get("version")
    if old_v and new_v and parse_version(new_v, "NEW's version") <= parse_version(old_v, "OLD's version"):
        raise Medr1Error(
            f"NEW's version {new_v} is not greater than OLD's {old_v}: rebuild NEW with --set version=X.Y.Z"
        )
    card_path = Path(new_folder) / "README.md"
    if not card_path.exists():
        raise Medr1Error(f"{card_path}: no dataset card to write the changelog into")
    old_lines = []
    if old_folder is not None and (Path(old_folder) / "README.md").exists():
        old_lines = changelog_lines((Path(old_folder) / "README.md").read_text(encoding="utf-8"))
    text = card_path.read_text(encoding="utf-8")
    # NEW's own notes (the recipe's `card.changelog`) stay; its generated lines are replaced by the diff's entry.
    generated = (f"v{new_v} (compared with ", f"v{new_v}: first release.")
    notes = [line for line in changelog_lines(text) if not line.startswith(generated) and line not in old_lines]
    lines = [changelog_entry(diff), *notes, *(line for line in old_lines if not line.startswith(f"v{new_v} "))]
    try:
        card_path.write_text(replace_changelog(text, lines), encoding="utf-8")
    except ValueError:
        raise Medr1Error(f"{card_path}: the card has no changelog section markers (built by an older medr1?)") from None
    manifest_path = Path(new_folder) / MANIFEST
    manifest = read_manifest(Path(new_folder))
    manifest["previous"] = {"version": old_v, "ref": diff["old"]["ref"]}
    manifest_path.write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return lines
