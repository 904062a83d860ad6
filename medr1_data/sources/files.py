"""Find the file of a split inside a source folder."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from medr1_data import Medr1Error


def split_file(path: Path, split: str, patterns: Sequence[str]) -> Path:
    """`path` itself if it is a file, else the one file in the folder that matches a pattern for `split`."""
    path = Path(path)
    if path.is_file():
        return path
    if not path.is_dir():
        raise Medr1Error(f"{path}: no such file or folder")
    for pattern in patterns:
        found = sorted(path.glob(pattern.format(split=split)))
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            names = ", ".join(f.name for f in found)
            raise Medr1Error(f"{path}: several files for split '{split}' ({names}); give the file itself")
    raise Medr1Error(f"{path}: no file for split '{split}' (looked for {', '.join(patterns).format(split=split)})")
