"""Verification: the label each trace committed to (`pred_label`), whether it is right, and why."""

from __future__ import annotations

import polars as pl
import pyarrow as pa

from medr1_data.answers import BARE_STRIP, NO_FALLBACK, REASONING_TAIL_CHARS, extract
from medr1_data.schema import VERIFY_FIELDS

BATCH_ROWS = 32768


# The answer as the teacher prompt asks for it, alone: `<answer>X</answer>`, X perhaps wrapped ("(B)", "**B**").
# `extract` reads exactly these as the label X (tests/test_verify_select.py checks the two agree).
TAGGED_LABEL = r"^<answer>[\s*_(\[]*([A-Z])[\s*_)\].:]*</answer>$"


def _bare_labels(table: pa.Table) -> pl.Series:
    """The label of each response that is the label alone or in the prompt's answer tag alone (read columnar, the
    way `extract` would), else null."""
    frame = pl.from_arrow(table.select(["response", "options"]))
    final = pl.col("response").fill_null("").str.split("</think>").list.last().str.strip_chars()
    return frame.select(
        final.str.strip_chars(BARE_STRIP).alias("bare"),
        final.str.extract(TAGGED_LABEL, 1).alias("tagged"),
        pl.col("options").list.eval(pl.element().struct.field("label")).alias("labels"),
    ).select(
        pl.when(pl.col("labels").list.contains(pl.col("bare")))
        .then(pl.col("bare"))
        .when(pl.col("labels").list.contains(pl.col("tagged")))
        .then(pl.col("tagged"))
        .alias("bare")
    )["bare"]


def _extracted(table: pa.Table, rows: list[int]) -> tuple[list[str | None], list[str | None]]:
    """(label, where it was found) of each of `rows` by the full extractor, its reasoning read where it may be."""
    labels: list[str | None] = []
    wheres: list[str | None] = []
    retry: list[int] = []  # positions in `rows` whose response commits to nothing
    for start in range(0, len(rows), BATCH_ROWS):  # Python objects for a batch at a time, not for every row
        part = rows[start : start + BATCH_ROWS]
        cols = table.select(["response", "options"]).take(part).to_pydict()
        for resp, opts in zip(cols["response"], cols["options"], strict=True):
            found = extract(resp, opts)
            if found.label is None and found.rule not in NO_FALLBACK:
                retry.append(len(labels))
            labels.append(found.label)
            wheres.append(found.where if found.label else None)
    # Only rows whose response commits to nothing fall back to the end of their reasoning; a response that names
    # several options ("B or C", "D,F,G,I") decided on no answer, and its reasoning is not read instead.
    if retry:
        sub = (
            pl.from_arrow(table.select(["response", "options", "reasoning"]))[[rows[k] for k in retry]]
            .select("response", "options", pl.col("reasoning").str.slice(-REASONING_TAIL_CHARS))
            .to_dict(as_series=False)
        )
        for k, resp, opts, tail in zip(retry, sub["response"], sub["options"], sub["reasoning"], strict=True):
            if tail:
                found = extract(resp, opts, tail)
                labels[k], wheres[k] = found.label, found.where if found.label else None
    return labels, wheres


def verify(table: pa.Table) -> pa.Table:
    """Add `pred_label`, `is_correct`, `verify_reason` and `answer_source` to a table of traces."""
    bare = _bare_labels(table)
    # The commonest response is the label alone: those rows stay columnar; the others go through the extractor.
    source = pl.select(pl.when(bare.is_not_null() & (bare != "")).then(pl.lit("response")).alias("s"))["s"]
    rows = bare.is_null().arg_true()
    if len(rows):
        labels, wheres = _extracted(table, rows.to_list())
        bare = bare.scatter(rows, pl.Series(labels, dtype=pl.String))
        source = source.scatter(rows, pl.Series(wheres, dtype=pl.String))
    df = pl.from_arrow(table.select(["answer_label", "finish_reason", "error"])).with_columns(
        bare.alias("pred_label"), source.alias("answer_source")
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
