"""Tolerant readers for native source files: one bad row becomes a RowError, never a crash."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import orjson

from medr1_data import Medr1Error


class RowError(Exception):
    """A row that cannot become a canonical question; carries the field and a reason code."""

    def __init__(self, reason: str, field: str | None = None, detail: str = "") -> None:
        super().__init__(f"{reason}: {field or ''} {detail}".strip())
        self.reason, self.field, self.detail = reason, field, detail


Record = tuple[int, "dict[str, Any] | RowError", str]
"""(1-based row number in the file, parsed row or the error that row raised, raw text for the rejects table)."""


def read_bytes(path: Path) -> bytes:
    """Read a whole file or raise a one-line Medr1Error naming it."""
    with open_bytes(path) as f:
        return f.read()


def open_bytes(path: Path) -> BinaryIO:
    """Open a file for reading bytes or raise a one-line Medr1Error naming it."""
    try:
        return Path(path).open("rb")
    except FileNotFoundError:
        raise Medr1Error(f"{path}: no such file") from None
    except IsADirectoryError:
        raise Medr1Error(f"{path}: is a folder, expected a file") from None
    except OSError as e:
        raise Medr1Error(f"{path}: cannot read: {e.strerror}") from None


def iter_jsonl(path: Path) -> Iterator[Record]:
    """Yield each line of a JSON-lines file as a dict, or a RowError for invalid UTF-8, JSON or a cut-off last line.

    The file is read a line at a time, so memory does not grow with its size."""
    with open_bytes(path) as f:
        for i, line in enumerate(f):
            cut = not line.endswith(b"\n")  # only the last line can lack its newline
            line = line if cut else line[:-1]
            if not line.strip():
                continue
            try:
                text = line.decode("utf-8")
            except UnicodeDecodeError as e:
                raw = line.decode("utf-8", errors="replace")
                yield i + 1, RowError("invalid_utf8", None, f"byte {e.start}"), raw
                continue
            try:
                obj = orjson.loads(text)
            except orjson.JSONDecodeError as e:
                reason = "truncated_line" if cut else "invalid_json"
                yield i + 1, RowError(reason, None, e.msg), text
                continue
            if not isinstance(obj, dict):
                kind = type(obj).__name__
                yield i + 1, RowError("wrong_type", None, f"line is a JSON {kind}, expected an object"), text
                continue
            yield i + 1, obj, text


def read_json(path: Path) -> Any:
    """Parse a whole JSON file or raise a one-line Medr1Error naming it."""
    data = read_bytes(path)
    try:
        return json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise Medr1Error(f"{path}: not UTF-8 (byte {e.start})") from None
    except json.JSONDecodeError as e:
        raise Medr1Error(f"{path}: not valid JSON at line {e.lineno} column {e.colno}: {e.msg}") from None


def iter_csv(path: Path) -> Iterator[tuple[int, list[str] | RowError, str]]:
    """Yield each CSV record as a list of cells, or a RowError for a record that is not valid UTF-8."""
    text = read_bytes(path).decode("utf-8", errors="surrogateescape")
    for i, cells in enumerate(csv.reader(io.StringIO(text, newline="")), start=1):
        raw = ",".join(cells)
        try:
            raw.encode("utf-8")
        except UnicodeEncodeError as e:
            yield (
                i,
                RowError("invalid_utf8", None, f"character {e.start}"),
                raw.encode("utf-8", errors="surrogateescape").decode("utf-8", errors="replace"),
            )
            continue
        if cells:
            yield i, cells, raw


def require_str(raw: dict[str, Any], field: str) -> str:
    """Return raw[field] if it is a string, else raise RowError (missing_field / wrong_type)."""
    if field not in raw or raw[field] is None:
        raise RowError("missing_field", field)
    value = raw[field]
    if not isinstance(value, str):
        raise RowError("wrong_type", field, f"expected a string, got {type(value).__name__}")
    return value


def require_id(raw: dict[str, Any], field: str) -> str:
    """Return raw[field] (a string or an integer) as a string, else raise RowError."""
    if field not in raw or raw[field] is None:
        raise RowError("missing_field", field)
    value = raw[field]
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise RowError("wrong_type", field, f"expected a string or integer id, got {type(value).__name__}")
    return str(value)
