"""The library as of another git revision, for a baseline measured in the same run as this checkout."""

from __future__ import annotations

import subprocess
import tarfile
from io import BytesIO
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def old_tree(rev: str, into: Path) -> Path | None:
    """`medr1_data/` and the `dataset_cards/` it reads as of `rev`, unpacked under `into` (git archive; the checkout
    is not touched); None without git or that revision."""
    cmd = ["git", "-C", str(ROOT), "archive", rev, "medr1_data", "dataset_cards"]
    try:
        tar = subprocess.run(cmd, capture_output=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    with tarfile.open(fileobj=BytesIO(tar.stdout)) as archive:
        archive.extractall(into, filter="data")
    return into
