"""Verification: the label each trace committed to (`pred_label`), whether it is right, and why."""

from __future__ import annotations

import polars as pl
import pyarrow as pa

from medr1_data.answers import REASONING_TAIL_CHARS, extract
from medr1_data.schema import VERIFY_FIELDS


def verify(table: pa.Table) -> pa.Table:
    """Add `pred_label`, `is_correct`, `verify_reason` and `answer_source` to a table of traces."""
    cols = table.select(["response", "options"]).to_pydict()
    found = [extract(resp, opts) for resp, opts in zip(cols["response"], cols["options"], strict=True)]
    # Only rows whose response commits to nothing fall back to the end of their reasoning.
    missing = [i for i, f in enumerate(found) if f.label is None]
    if missing:
        reasoning = pl.from_arrow(table.select(["reasoning"]))["reasoning"]
        tails = reasoning.gather(missing).str.slice(-REASONING_TAIL_CHARS)
        for i, tail in zip(missing, tails, strict=True):
            if tail:
                found[i] = extract(cols["response"][i], cols["options"][i], tail)
    df = pl.from_arrow(table.select(["answer_label", "finish_reason", "error"])).with_columns(
        pl.Series("pred_label", [f.label for f in found], dtype=pl.String),
        pl.Series("answer_source", [f.where if f.label else None for f in found], dtype=pl.String),
    )
    reason = (
        pl.when(pl.col("error").is_not_null())
        .then(pl.lit("request_failed"))
        .when(pl.col("pred_label") == pl.col("answer_label"))
        .then(pl.lit("correct"))
        .when(pl.col("finish_reason") == "length")
        .then(pl.lit("truncated"))
        .when(pl.col("pred_label").is_null())
        .then(pl.lit("no_answer"))
        .otherwise(pl.lit("wrong_answer"))
    )
    out = df.select(
        pl.col("pred_label"),
        (pl.col("pred_label") == pl.col("answer_label")).fill_null(False).alias("is_correct"),
        reason.alias("verify_reason"),
        pl.col("answer_source"),
    ).to_arrow()
    for f in VERIFY_FIELDS:
        name = f.name
        col = out.column(name).cast(f.type)
        table = (
            table.set_column(table.schema.get_field_index(name), f, col)
            if name in table.column_names
            else table.append_column(f, col)
        )
    return table
