"""Trace quality: per-row signals in a `quality` struct and one `quality_score`, as polars expressions."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import polars as pl
import pyarrow as pa

from medr1_data.answers import extract
from medr1_data.config import Bounds

# How much each flag costs: quality_score = max(0, 1 - sum of the weights of the flags a trace raises).
# A truncated or unanswered trace is worthless for distillation; structure and consistency problems cost half;
# repetition and script mixing make a trace a poor example without making it wrong.
QUALITY_WEIGHTS: dict[str, float] = {
    "truncated": 1.0,
    "no_answer": 0.6,
    "malformed": 0.5,
    "conclusion_mismatch": 0.5,
    "repetition": 0.4,
    "language_mixing": 0.3,
    "short_reasoning": 0.2,
    "flip_flop": 0.1,
    "hedging": 0.1,
}
FLAGS = tuple(QUALITY_WEIGHTS)

# Scripts that do not belong in an English trace (Greek is left out: medical text uses α, β, µ).
FOREIGN_SCRIPT = r"[\p{Han}\p{Hiragana}\p{Katakana}\p{Hangul}\p{Cyrillic}\p{Arabic}\p{Hebrew}\p{Thai}\p{Devanagari}]"
HEDGE = (
    r"(?i)\b(?:cannot|can't|can not|unable to)\s+(?:be\s+)?(?:determine|decide|say|choose|answer)"
    r"|\bnot (?:enough|sufficient) information|\binsufficient information|\bnone of the (?:options|above)"
    r"|\bnot (?:sure|certain)\b|\bunclear\b"
)
# A committed option letter: "answer is C", "option C", "(C)", "**C**". Rust regex: no look-around.
COMMIT = (
    r"(?i:answer|option|choice)(?:\s+(?:is|would be|should be|must be|=))?\s*:?\s*\**\(?[A-Z]\b|\([A-Z]\)|\*\*[A-Z]\*\*"
)
ANSWER_IS = r"(?i:answer)\s+(?:is|would be|should be|must be)\s*:?\s*\**\(?([A-Z])\b"


@dataclass
class ScoreSettings:
    """The recipe's `score` section: every threshold of the quality signals, in one place."""

    loop_repeats: int = 4  # a loop: one line (paragraph) of >= loop_line_chars characters occurring this often
    loop_line_chars: int = 20
    foreign_script_chars: int = 3  # characters of a non-Latin script in the reasoning or response
    flip_flop_letters: int = 4  # distinct letters the reasoning commits to with "the answer is X"
    short_reasoning_tokens: int = 30
    conclusion_tail_chars: int = 800  # where the reasoning's own conclusion is read
    weights: dict[str, float] = field(default_factory=lambda: dict(QUALITY_WEIGHTS))

    BOUNDS: ClassVar[Bounds] = {
        "loop_repeats": (2, None),
        "loop_line_chars": (1, None),
        "foreign_script_chars": (1, None),
        "flip_flop_letters": (2, None),
        "short_reasoning_tokens": (0, None),
        "conclusion_tail_chars": (1, None),
        "weights": (0.0, 1.0),
    }
    CHOICES: ClassVar[dict[str, tuple[str, ...]]] = {"weights": tuple(QUALITY_WEIGHTS)}


def _signals(s: ScoreSettings) -> list[pl.Expr]:
    reasoning = pl.col("reasoning").fill_null("")
    response = pl.col("response").fill_null("")
    # The most repeated line of at least loop_line_chars characters (after stripping), in one pass over each list.
    longest_loop = reasoning.str.split("\n").list.eval(
        pl.element().str.strip_chars().filter(pl.element().str.len_chars() >= s.loop_line_chars).unique_counts().max()
    )
    blank = r"\S"  # `x.str.strip_chars() == ""` without copying every text: no character other than white space
    return [
        (reasoning.str.len_bytes() // 4).cast(pl.Int64).alias("reasoning_tokens"),
        response.str.len_chars().cast(pl.Int64).alias("response_chars"),
        (
            (pl.col("finish_reason") == "length").fill_null(False) | (~response.str.contains(blank) & (reasoning != ""))
        ).alias("truncated"),
        (
            ~reasoning.str.contains(blank)
            | response.str.contains("<think>|</think>")
            | reasoning.str.contains("</think>|<answer>")
        ).alias("malformed"),
        (pl.col("answer_source") != "response").fill_null(True).alias("no_answer"),
        response.str.contains(HEDGE).alias("hedging"),
        longest_loop.list.first().fill_null(0).cast(pl.Int64).alias("max_line_repeats"),
        # A match of ANSWER_IS ends with its letter: the last character is the letter committed to.
        reasoning.str.extract_all(ANSWER_IS)
        .list.eval(pl.element().str.slice(-1))
        .list.n_unique()
        .cast(pl.Int64)
        .alias("committed_letters"),
    ]


def _fast_conclusion(s: ScoreSettings) -> pl.Expr:
    """The last option letter committed to near the end of the reasoning (Rust regex; confirmed in Python)."""
    tail = pl.col("reasoning").fill_null("").str.slice(-s.conclusion_tail_chars)
    return tail.str.extract_all(COMMIT).list.last().str.extract(r"([A-Z])\W*$").alias("conclusion_label")


def non_ascii(texts: pa.ChunkedArray | pa.Array, window_bytes: int = 1 << 22) -> pa.ChunkedArray:
    """Each text with its ASCII characters removed: its multi-byte characters, still valid UTF-8 (a null slot keeps
    the bytes it spans, none as pyarrow and polars write them; callers mask nulls)."""
    chunks = texts.chunks if isinstance(texts, pa.ChunkedArray) else [texts]
    out = []
    for chunk in chunks:
        if not (pa.types.is_string(chunk.type) or pa.types.is_large_string(chunk.type)):
            chunk = chunk.cast(pa.large_string())
        wide = np.int64 if pa.types.is_large_string(chunk.type) else np.int32
        offsets = np.frombuffer(chunk.buffers()[1], wide)[chunk.offset : chunk.offset + len(chunk) + 1].astype(np.int64)
        data = np.frombuffer(chunk.buffers()[2], np.uint8) if chunk.buffers()[2] else np.zeros(0, np.uint8)
        # Every byte of a multi-byte UTF-8 character is >= 0x80 and no ASCII byte is: dropping the ASCII bytes keeps
        # each other character whole. Scanned in small windows: their masks reuse memory a large one would fault in.
        first, end = int(offsets[0]), int(offsets[-1])
        high = [
            np.flatnonzero(data[a : min(a + window_bytes, end)] >= 0x80) + a for a in range(first, end, window_bytes)
        ]
        pos = np.concatenate(high) if high else np.zeros(0, np.int64)
        starts = np.searchsorted(pos, offsets)
        kept = pa.py_buffer(np.ascontiguousarray(data[pos]))
        out.append(pa.LargeStringArray.from_buffers(len(chunk), pa.py_buffer(starts - starts[0]), kept))
    return pa.chunked_array(out, pa.large_string())


def _foreign_script_chars(table: pa.Table) -> pl.Series:
    """Characters of a foreign script in reasoning and response, counted in their non-ASCII characters alone."""
    total = pl.zeros(table.num_rows, pl.Int64, eager=True)
    for name in ("reasoning", "response"):
        col = table.column(name)
        found = pl.Series(non_ascii(col)).str.count_matches(FOREIGN_SCRIPT).cast(pl.Int64)
        total = total + found.zip_with(pl.Series(col.is_valid()), pl.repeat(0, len(found), eager=True))
    return total.alias("foreign_script_chars")


def _confirm_conclusions(df: pl.DataFrame, s: ScoreSettings) -> pl.Series:
    """The reasoning's conclusion where the fast regex disagrees with the answer: re-read with the full extractor."""
    labels = df["conclusion_label"].to_list()
    doubt = df.select(
        (
            pl.col("pred_label").is_not_null()
            & (pl.col("answer_source") == "response")
            & (pl.col("conclusion_label").is_null() | (pl.col("conclusion_label") != pl.col("pred_label")))
        ).alias("doubt")
    )["doubt"]
    rows = doubt.arg_true().to_list()
    if rows:
        sub = (
            df[rows].select(pl.col("reasoning").str.slice(-s.conclusion_tail_chars), "options").to_dict(as_series=False)
        )
        for i, tail, options in zip(rows, sub["reasoning"], sub["options"], strict=True):
            labels[i] = extract(tail, options).label
    return pl.Series("conclusion_label", labels, dtype=pl.String)


def _chunked(df: pl.DataFrame, rows_per_chunk: int = 8192) -> pl.DataFrame:
    """Polars runs a string kernel on one thread per chunk: give a large single-chunk frame several chunks."""
    if df.n_chunks() > 1 or df.height <= rows_per_chunk:
        return df
    parts = [df.slice(i, rows_per_chunk) for i in range(0, df.height, rows_per_chunk)]
    return pl.concat(parts, rechunk=False)


def score(table: pa.Table, settings: ScoreSettings | None = None) -> pa.Table:
    """Add the `quality` struct (signals and flags) and `quality_score` to verified traces."""
    s = settings or ScoreSettings()
    df = _chunked(
        pl.from_arrow(
            table.select(["reasoning", "response", "finish_reason", "options", "pred_label", "answer_source"])
        )
    )
    # The polars signals release the GIL: compute them in a thread while Python confirms the conclusions.
    with ThreadPoolExecutor(max_workers=1) as pool:
        signals = pool.submit(lambda: df.select(_signals(s)).with_columns(_foreign_script_chars(table)))
        conclusions = _confirm_conclusions(df.with_columns(_fast_conclusion(s)), s)
        sig = pl.concat([df, signals.result()], how="horizontal").with_columns(conclusions)
    flags = {
        "truncated": pl.col("truncated"),
        "no_answer": pl.col("no_answer"),
        "malformed": pl.col("malformed"),
        "conclusion_mismatch": (
            pl.col("conclusion_label").is_not_null()
            & pl.col("pred_label").is_not_null()
            & (pl.col("conclusion_label") != pl.col("pred_label"))
        ),
        "repetition": pl.col("max_line_repeats") >= s.loop_repeats,
        "language_mixing": pl.col("foreign_script_chars") >= s.foreign_script_chars,
        "short_reasoning": pl.col("reasoning_tokens") < s.short_reasoning_tokens,
        "flip_flop": pl.col("committed_letters") >= s.flip_flop_letters,
        "hedging": pl.col("hedging") & pl.col("no_answer"),
    }
    sig = sig.with_columns(
        pl.concat_list([pl.when(e.fill_null(False)).then(pl.lit(n)) for n, e in flags.items()])
        .list.drop_nulls()
        .alias("flags")
    )
    penalty = pl.sum_horizontal(
        [pl.col("flags").list.contains(n).cast(pl.Float64) * s.weights.get(n, 0.0) for n in flags]
    )
    out = sig.select(
        pl.struct(
            "reasoning_tokens",
            "response_chars",
            "truncated",
            "malformed",
            "no_answer",
            "hedging",
            "max_line_repeats",
            "foreign_script_chars",
            "committed_letters",
            "conclusion_label",
            "flags",
        ).alias("quality"),
        (1.0 - penalty).clip(0.0, 1.0).round(4).alias("quality_score"),
    ).to_arrow()
    for name in ("quality", "quality_score"):
        col = out.column(name)
        if name in table.column_names:
            table = table.drop_columns([name])
        table = table.append_column(name, col)
    return table
