"""MedR1: build, verify, decontaminate and publish a medical reasoning dataset distilled from DeepSeek-R1."""

import hashlib
import json
from importlib.metadata import PackageNotFoundError, version
from typing import Any

try:
    __version__ = version("medr1")
except PackageNotFoundError:  # running from a source tree without an install
    __version__ = "0.0.0+local"


class Medr1Error(Exception):
    """An error the CLI reports as one line (file, row, field and what is wrong) and a non-zero exit."""


def canonical_sha256(value: Any) -> str:
    """SHA-256 of `value` as canonical JSON (sorted keys, no spaces, UTF-8; non-JSON values as `str`)."""
    blob = json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()
