"""Text canonicalisation shared by decontam and dedup: stem, option texts and answer text as comparable tokens.

A canonical text is NFKC-normalised, lower-cased, with thousands separators removed from numbers and every run of
characters that is not a letter or a digit replaced by one space (so "Na+/K+ ATPase," and "na k atpase" agree).
Stems also lose inline option blocks ("Answer Choices: (A) ...", lines "A. ...") and common prompt wrappers
("Answer the following question ...", "Question:", "Let's think step by step", ...); option texts lose a leading
option letter ("A.", "(b)"). The polars expressions are the hot path; `canon_text`/`canon_stem`/`canon_option` are
the same rules for one Python string (tests, debugging).
"""

from __future__ import annotations

import re
import unicodedata

import polars as pl
import pyarrow as pa

# Inline option blocks appended to a stem. The line form is matched before lower-casing (option letters are capitals);
# the "Answer Choices: (A) ..." form after it.
INLINE_OPTION_LINES = r"(?s)\n\s*\(?A[\).:]\s.*\n\s*\(?B[\).:]\s.*$"
INLINE_OPTION_BLOCK = r"(?s)(?-u:\b)(?:answer choices|answer options|options|choices)\s*:\s*\(?[a-j][\).:].*$"
# Prompt wrappers, matched on lower-cased text: instruction sentences before the stem and cues after it. Any number
# of them may stack ("You are a doctor. Answer the following question: ...").
WRAPPER_PREFIXES = (
    r"the following (?:is|are) (?:an? )?(?:multiple[- ]choice )?questions?[^\n:.]*[:.]",
    r"(?:please )?(?:answer|solve|read|consider|choose|select)(?: carefully)? (?:the|this) following[^\n:.]*[:.]",
    r"(?:please )?(?:answer|solve) (?:the|this) [^\n:.]{0,60}(?-u:\b)(?:question|problem|mcq)s?[^\n:.]*[:.]",
    r"you are an? [^\n.]{0,80}[.\n]",
    r"(?:let'?s |please )?think (?:it through )?step[- ]by[- ]step[^\n:.]*[:.]?",
    r"(?:question|q|problem|input)\s*(?:\d+\s*)?[:.]",
)
WRAPPER_SUFFIXES = (
    r"(?:let'?s|please)? ?think (?:it through )?step[- ]by[- ]step[^\n]*",
    r"(?:put|give|return|write) (?:your|the) (?:final )?answer[^\n]*",
    r"(?:the )?(?:correct )?answer(?: is)?\s*:?",
)
PREFIX = r"^(?:\s*(?:" + "|".join(WRAPPER_PREFIXES) + r"))+\s*"
SUFFIX = r"(?:\s*(?:\n\s*a\s*:|(?-u:\b)(?:" + "|".join(WRAPPER_SUFFIXES) + r")))+\s*$"  # "A:" on its own line
OPTION_LABEL = r"^\s*(?:\(?[a-j]\)|[a-j][.:])\s+"
THOUSANDS = r"(\d),(\d{3})\b"
NON_WORD = r"[^\p{L}\p{N} ]+"  # then runs of spaces collapse (two steps: faster than one on mostly-ASCII text)
NON_ASCII = r"[^\x00-\x7F]"
_PY_NON_WORD = re.compile(r"[\W_]+", re.UNICODE)


def _nfkc(e: pl.Expr) -> pl.Expr:
    """NFKC, computed only for texts that are not plain ASCII (which NFKC leaves as they are)."""
    e = e.fill_null("")
    return pl.when(e.str.contains(NON_ASCII)).then(e.str.normalize("NFKC")).otherwise(e)


def _tokens_expr(e: pl.Expr) -> pl.Expr:
    """Thousands separators dropped, one space between letter/digit runs (input already NFKC and lower-cased)."""
    return (
        e.str.replace_all(THOUSANDS, "${1}${2}")
        .str.replace_all(NON_WORD, " ")
        .str.replace_all(" {2,}", " ")
        .str.strip_chars()
    )


def canon_text_expr(expr: pl.Expr) -> pl.Expr:
    """NFKC, lower case, numbers without thousands separators, one space between letter/digit runs."""
    return _tokens_expr(_nfkc(expr).str.to_lowercase())


def strip_stem_expr(expr: pl.Expr) -> pl.Expr:
    """The stem without inline option blocks and prompt wrappers, NFKC and lower-cased but not yet tokenised."""
    e = _nfkc(expr).str.replace(INLINE_OPTION_LINES, "").str.to_lowercase()
    return e.str.replace(INLINE_OPTION_BLOCK, "").str.replace(PREFIX, "").str.replace(SUFFIX, "")


def canon_stem_expr(expr: pl.Expr) -> pl.Expr:
    """Canonical stem: wrappers and inline options stripped, then tokens as in `canon_text_expr`."""
    return _tokens_expr(strip_stem_expr(expr))


def canon_option_expr(expr: pl.Expr) -> pl.Expr:
    """Canonical option text: a leading option letter stripped, then tokens as in `canon_text_expr`."""
    return _tokens_expr(_nfkc(expr).str.to_lowercase().str.replace(OPTION_LABEL, ""))


def canonical_frame(table: pa.Table | pl.DataFrame) -> pl.DataFrame:
    """One row per input row: `stem`, `opts` (canonical option texts in order), `answer` (null without one), `ctx`."""
    df = table if isinstance(table, pl.DataFrame) else pl.from_arrow(table, rechunk=False)
    assert isinstance(df, pl.DataFrame)
    cols = df.columns
    ctx = pl.col("context") if "context" in cols else pl.lit(None, dtype=pl.String)
    label = pl.col("answer_label").cast(pl.String) if "answer_label" in cols else pl.lit(None, dtype=pl.String)
    base = df.select(
        canon_stem_expr(pl.col("question").cast(pl.String)).alias("stem"),
        pl.col("options"),
        label.fill_null("").str.strip_chars().alias("_label"),
        canon_text_expr(ctx.cast(pl.String)).alias("ctx"),
    ).with_row_index("_i")
    opts = (
        base.select("_i", "_label", pl.col("options"))
        .explode("options")
        .filter(pl.col("options").is_not_null())
        .select(
            "_i",
            canon_option_expr(pl.col("options").struct.field("text").cast(pl.String)).alias("opt"),
            (pl.col("options").struct.field("label").cast(pl.String).str.strip_chars() == pl.col("_label")).alias(
                "is_answer"
            ),
        )
        .filter(pl.col("opt") != "")
    )
    by_row = opts.group_by("_i", maintain_order=True).agg(
        pl.col("opt").alias("opts"), pl.col("opt").filter(pl.col("is_answer")).first().alias("answer")
    )
    out = base.select("_i", "stem", "ctx").join(by_row, on="_i", how="left", maintain_order="left")
    return out.with_columns(pl.col("opts").fill_null(pl.lit([], dtype=pl.List(pl.String)))).drop("_i")


def canon_text(text: str | None) -> str:
    """`canon_text_expr` for one string."""
    t = unicodedata.normalize("NFKC", text or "").lower()
    t = re.sub(THOUSANDS, r"\1\2", t)
    return " ".join(_PY_NON_WORD.sub(" ", t).split())


def _py(pattern: str) -> str:
    return pattern.replace("(?-u:\\b)", "\\b")  # Python's re has no (?-u:...) group; its \b is close enough


def canon_stem(text: str | None) -> str:
    """`canon_stem_expr` for one string."""
    t = re.sub(INLINE_OPTION_LINES, "", unicodedata.normalize("NFKC", text or ""), count=1).lower()
    t = re.sub(_py(INLINE_OPTION_BLOCK), "", t, count=1)
    return canon_text(re.sub(_py(SUFFIX), "", re.sub(_py(PREFIX), "", t, count=1), count=1))


def canon_option(text: str | None) -> str:
    """`canon_option_expr` for one string."""
    return canon_text(re.sub(OPTION_LABEL, "", unicodedata.normalize("NFKC", text or "").lower(), count=1))
