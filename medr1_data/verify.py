"""Verification: the label each trace committed to (`pred_label`), whether it is right, and why."""

from __future__ import annotations

import polars as pl
import pyarrow as pa

from medr1_data.answers import extract
from medr1_data.schema import VERIFY_FIELDS


def verify(table: pa.Table) -> pa.Table:
    """Add `pred_label`, `is_correct` and `verify_reason` to a table of traces."""
    cols = table.select(["response", "reasoning", "options"]).to_pydict()
    pred = [
        extract(resp, opts, reasoning).label
        for resp, reasoning, opts in zip(cols["response"], cols["reasoning"], cols["options"], strict=True)
    ]
    df = pl.from_arrow(table.select(["answer_label", "finish_reason", "error"])).with_columns(
        pl.Series("pred_label", pred, dtype=pl.String)
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
