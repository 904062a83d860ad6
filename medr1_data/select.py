"""Selection: the one place rows are dropped. Fills `drop_reason`; every drop is counted by reason."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import polars as pl
import pyarrow as pa

from medr1_data.config import Bounds
from medr1_data.score import FLAGS

DROP_REASONS = {
    "request_failed": "the teacher request failed after all retries",
    "truncated": "generation hit the token limit before a committed answer",
    "no_thinking": "the teacher wrote no reasoning (`select.no_thinking: drop`)",
    "no_answer": "no committed answer could be extracted",
    "wrong_answer": "the committed answer is not the gold answer",
    "quality_<flag>": "a quality flag listed in `select.reject_flags` was raised (see the `quality` struct)",
    "low_quality_score": "`quality_score` below `select.min_quality`",
    "duplicate_sample": "the same reasoning as another correct sample of the question",
    "extra_sample": "another correct sample of the same question was kept",
}
DEFAULT_REJECT_FLAGS = ["truncated", "malformed", "no_answer", "conclusion_mismatch", "repetition", "language_mixing"]


@dataclass
class SelectSettings:
    """The recipe's `select` section."""

    keep: str = "best"  # best: one correct sample per question; all_correct: up to `max_per_question`
    max_per_question: int = 1
    drop_truncated: bool = True
    reject_flags: list[str] = field(default_factory=lambda: list(DEFAULT_REJECT_FLAGS))
    min_quality: float = 0.0
    no_thinking: str = "keep"  # a trace without reasoning (a teacher that does not think): keep or drop

    BOUNDS: ClassVar[Bounds] = {"max_per_question": (1, None), "min_quality": (0.0, 1.0)}
    CHOICES: ClassVar[dict[str, tuple[str, ...]]] = {
        "keep": ("best", "all_correct"),
        "reject_flags": FLAGS,
        "no_thinking": ("keep", "drop"),
    }


def select(table: pa.Table, settings: SelectSettings) -> pa.Table:
    """Fill `drop_reason` (null = kept): failed, wrong, unanswered and truncated traces, quality rejects, then extras.

    A trace cut off at the token limit is dropped even when its answer is right, unless `drop_truncated` is off;
    a trace with no reasoning is dropped as `no_thinking` when `no_thinking` is `drop`.

    Among a question's correct samples the best is kept: highest `quality_score` when the table has one,
    then the shorter reasoning, then the lower `sample_idx`.
    """
    # Only the columns the rules read go through polars; the result is one column set on the input table, so the
    # traces' text is neither copied nor converted.
    needed = ("id", "sample_idx", "verify_reason", "finish_reason", "reasoning", "drop_reason", "quality")
    df = pl.from_arrow(table.select([c for c in (*needed, "quality_score") if c in table.column_names]))
    text = pl.col("reasoning") if "reasoning" in df.columns else None
    if text is None and (settings.no_thinking == "drop" or df.get_column("id").is_duplicated().any()):
        raise ValueError("select: the reasoning column is needed (several samples a question, or no_thinking: drop)")
    text = pl.lit(None, pl.String) if text is None else text  # one sample a question: no rule below reads it
    reason = pl.col("verify_reason")
    cut_off = (pl.col("finish_reason") == "length") & pl.lit(settings.drop_truncated)
    thoughtless = (text.fill_null("").str.strip_chars() == "") & pl.lit(settings.no_thinking == "drop")
    bad = (
        pl.when(reason != "correct")
        .then(reason)
        .when(cut_off)
        .then(pl.lit("truncated"))
        .when(thoughtless)
        .then(pl.lit("no_thinking"))
        .otherwise(pl.lit(None, pl.String))
    )
    earlier = pl.col("drop_reason") if "drop_reason" in df.columns else pl.lit(None, pl.String)
    df = df.with_columns(pl.coalesce(earlier, bad).alias("drop_reason"))
    if "quality" in df.columns:
        flags = pl.col("quality").struct.field("flags")
        by_flag = [pl.when(flags.list.contains(f)).then(pl.lit(f"quality_{f}")) for f in settings.reject_flags]
        low = pl.when(pl.col("quality_score") < settings.min_quality).then(pl.lit("low_quality_score"))
        df = df.with_columns(pl.coalesce("drop_reason", *by_flag, low).alias("drop_reason"))
    # Two samples with the same reasoning text are one sample: keep the first by sample index.
    same = pl.int_range(pl.len()).over("id", text.hash()) > 0
    df = df.with_columns(
        pl.when(pl.col("drop_reason").is_null() & same)
        .then(pl.lit("duplicate_sample"))
        .otherwise("drop_reason")
        .alias("drop_reason")
    )
    score = pl.col("quality_score") if "quality_score" in df.columns else pl.lit(0.0)
    limit = 1 if settings.keep == "best" else settings.max_per_question
    order = (
        df.filter(pl.col("drop_reason").is_null())
        .with_columns((-score).alias("_neg_score"), text.str.len_chars().fill_null(0).alias("_len"))
        .sort(["id", "_neg_score", "_len", "sample_idx"])
        .with_columns(pl.int_range(pl.len()).over("id").alias("_rank"))
        .filter(pl.col("_rank") >= limit)
        .select("id", "sample_idx")
        .with_columns(pl.lit("extra_sample").alias("_extra"))
    )
    df = (
        df.join(order, on=["id", "sample_idx"], how="left", maintain_order="left")
        .with_columns(pl.coalesce("drop_reason", "_extra").alias("drop_reason"))
        .drop("_extra")
    )
    column = df.get_column("drop_reason").to_arrow().cast(pa.string())
    if "drop_reason" in table.column_names:
        return table.set_column(table.schema.get_field_index("drop_reason"), "drop_reason", column)
    return table.append_column("drop_reason", column)


def drop_counts(table: pa.Table) -> dict[str, int]:
    """Dropped rows per reason."""
    df = pl.from_arrow(table.select(["drop_reason"])).drop_nulls()
    return dict(df.group_by("drop_reason").len().sort("drop_reason").iter_rows())


def unanswered_questions(table: pa.Table) -> pa.Table:
    """Questions none of whose samples was kept, with their ids and sources (recorded, never silently lost)."""
    df = pl.from_arrow(table.select(["id", "source", "drop_reason"]))
    kept = df.group_by("id", "source").agg(pl.col("drop_reason").is_null().any().alias("any_kept"))
    return kept.filter(~pl.col("any_kept")).drop("any_kept").sort("id").to_arrow()
