"""Verification: the label each trace committed to (`pred_label`), whether it is right, and why."""

from __future__ import annotations

import polars as pl
import pyarrow as pa

from medr1_data.answers import BARE_STRIP, NO_FALLBACK, REASONING_TAIL_CHARS, Extraction, extract
from medr1_data.schema import VERIFY_FIELDS

BATCH_ROWS = 32768


def verify(table: pa.Table) -> pa.Table:
    """Add `pred_label`, `is_correct`, `verify_reason` and `answer_source` to a table of traces."""
    # The commonest response is the label alone: read those columnar, the same way `extract` would.
    bare = pl.from_arrow(table.select(["response", "options"])).select(
        pl.col("response")
        .fill_null("")
        .str.split("</think>")
        .list.last()
        .str.strip_chars()
        .str.strip_chars(BARE_STRIP)
        .alias("bare"),
        pl.col("options").list.eval(pl.element().struct.field("label")).alias("labels"),
    )
    is_bare = bare.select(pl.col("labels").list.contains(pl.col("bare")))["labels"]
    found: list[Extraction | None] = [
        Extraction(b, "bare_label", "response") if ok else None
        for b, ok in zip(bare["bare"].to_list(), is_bare.to_list(), strict=True)
    ]
    rest = [i for i, f in enumerate(found) if f is None]
    for start in range(0, len(rest), BATCH_ROWS):  # Python objects for a batch at a time, not for every row
        part = rest[start : start + BATCH_ROWS]
        cols = table.select(["response", "options"]).take(part).to_pydict()
        for i, resp, opts in zip(part, cols["response"], cols["options"], strict=True):
            found[i] = extract(resp, opts)
    # Only rows whose response commits to nothing fall back to the end of their reasoning; a response that names
    # several options ("B or C", "D,F,G,I") decided on no answer, and its reasoning is not read instead.
    missing = [i for i, f in enumerate(found) if f.label is None and f.rule not in NO_FALLBACK]
    if missing:
        sub = (
            pl.from_arrow(table.select(["response", "options", "reasoning"]))[missing]  # rows first, then the tails
            .select("response", "options", pl.col("reasoning").str.slice(-REASONING_TAIL_CHARS))
            .to_dict(as_series=False)
        )
        for i, resp, opts, tail in zip(missing, sub["response"], sub["options"], sub["reasoning"], strict=True):
            if tail:
                found[i] = extract(resp, opts, tail)
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
