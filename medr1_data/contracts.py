"""Input contracts: the columns each verb and stage reads, with their Arrow types, checked at the door.

A contract names required columns and optional ones. A required column that is missing, or a column whose type
cannot be read as the expected one, is one Medr1Error naming the file, the column, the expected and the found type.
Compatible types are cast (large or view strings and lists, narrower integers, integers for floats, a column of
Arrow type `null` for any type, options stored as JSON text); missing optional columns are added as typed nulls;
other columns pass through unchanged. Tables written by other tools (a published release, a peer's dataset) are
normal input.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from medr1_data import Medr1Error
from medr1_data.schema import KNOWN_FIELDS, plain_type


@dataclass(frozen=True)
class Contract:
    """What a verb or stage reads: `required` and `optional` column names (types from `schema.KNOWN_FIELDS`),
    the required columns that may not hold nulls, and a hint for a missing column."""

    what: str
    required: tuple[str, ...]
    optional: tuple[str, ...] = ()
    not_null: tuple[str, ...] = ()
    hint: str = ""


QUESTIONS = Contract(
    "questions",
    ("id", "question", "options"),
    ("answer_label", "context"),
    ("id", "question", "options"),
    "a table of canonical questions (medr1-data ingest output)",
)
DISTILL = Contract(
    "questions to distill",
    ("id", "question", "options"),
    ("answer_label", "context", "source", "source_split", "source_id", "meta", "license"),
    ("id", "question", "options"),
    "a table of canonical questions (medr1-data ingest output)",
)
TRACES = Contract(
    "traces",
    ("options", "answer_label", "response"),
    ("reasoning", "finish_reason", "error"),
    ("options",),
    "a table of teacher traces (medr1-data distill output, or a release's shards)",
)
VERIFIED = Contract(
    "verified traces",
    ("options", "reasoning", "response", "pred_label"),
    ("finish_reason", "answer_source"),
    ("options",),
    "verified traces: run medr1-data verify first",
)


def _options_from_json(col: pa.ChunkedArray, where: str, name: str) -> pa.Array:
    dtype = pl.List(pl.Struct({"label": pl.String, "text": pl.String}))
    try:
        parsed = pl.from_arrow(col).str.json_decode(dtype)  # type: ignore[union-attr]
    except Exception:  # polars raises ComputeError / SchemaError for text that is not JSON of that shape
        raise Medr1Error(
            f"{where}: column '{name}': expected {KNOWN_FIELDS[name].type}, found string that is not a JSON list "
            "of {label, text} objects"
        ) from None
    return parsed.to_arrow().cast(KNOWN_FIELDS[name].type)


def _compatible(found: pa.DataType, expected: pa.DataType) -> bool:
    if pa.types.is_null(found) or plain_type(found).equals(expected):
        return True
    if pa.types.is_integer(expected):
        return pa.types.is_integer(found)
    if pa.types.is_floating(expected):
        return pa.types.is_integer(found) or pa.types.is_floating(found)
    return False


def _column(table: pa.Table, name: str, where: str) -> pa.ChunkedArray | pa.Array:
    """`name` read as its canonical type, or a Medr1Error naming the expected and the found type."""
    expected, col = KNOWN_FIELDS[name].type, table.column(name)
    if col.type.equals(expected):
        return col
    if name == "options" and (pa.types.is_string(col.type) or pa.types.is_large_string(col.type)):
        return _options_from_json(col, where, name)
    if not _compatible(col.type, expected):
        raise Medr1Error(f"{where}: column '{name}': expected {expected}, found {col.type}")
    try:
        return col.cast(expected)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
        raise Medr1Error(f"{where}: column '{name}': cannot read {col.type} as {expected}: {e}") from None


def check_input(table: pa.Table, contract: Contract, where: str) -> pa.Table:
    """`table` with the contract's columns in their canonical types (missing optional ones as nulls)."""
    missing = [n for n in contract.required if n not in table.column_names]
    if missing:
        hint = f"; expected {contract.hint}" if contract.hint else ""
        raise Medr1Error(f"{where}: missing column '{missing[0]}' ({KNOWN_FIELDS[missing[0]].type}){hint}")
    for name in (*contract.required, *contract.optional):
        field = pa.field(name, KNOWN_FIELDS[name].type)
        if name not in table.column_names:
            table = table.append_column(field, pa.nulls(table.num_rows, field.type))
            continue
        col = _column(table, name, where)
        if col is not table.column(name):
            table = table.set_column(table.schema.get_field_index(name), field, col)
    for name in contract.not_null:
        col = table.column(name)
        if col.null_count:
            row = pc.index(pc.is_null(col), True).as_py()
            raise Medr1Error(f"{where}: row {row}: column '{name}' is null")
    return table
