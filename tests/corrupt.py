"""Corrupted copies of real traces, one kind at a time, for the quality-signal tests and benchmarks."""

from __future__ import annotations

import random

import polars as pl
import pyarrow as pa

from medr1_data.score import score
from medr1_data.verify import verify

VERDICT = ["pred_label", "is_correct", "verify_reason", "answer_source"]

FOREIGN_SENTENCES = [
    "这个病人的症状表明可能是心肌梗死。",
    "この患者の症状は心筋梗塞を示唆している。",
    "이 환자의 증상은 심근경색을 시사한다.",
    "Симптомы пациента указывают на инфаркт миокарда.",
    "تشير أعراض المريض إلى احتشاء عضلة القلب.",
    "रोगी के लक्षण मायोकार्डियल इन्फार्क्शन की ओर इशारा करते हैं।",
]
HEDGES = [
    "Several of these options are plausible, and more clinical information would be needed to decide.",
    "It is difficult to choose between the options without further data.",
    "",
]


def _paragraphs(text: str) -> list[str]:
    return [p for p in text.split("\n\n") if p.strip()] or [text]


def cut_thinking(row: dict, rng: random.Random) -> dict:
    """Cut the reasoning at 30-80% of its length; no response follows."""
    r = row["reasoning"]
    return {**row, "reasoning": r[: int(len(r) * rng.uniform(0.3, 0.8))], "response": ""}


def loop_paragraph(row: dict, rng: random.Random) -> dict:
    """Repeat one paragraph of the reasoning three more times in place (four in a row)."""
    paras = _paragraphs(row["reasoning"])
    i = rng.randrange(len(paras))
    return {**row, "reasoning": "\n\n".join(paras[: i + 1] + [paras[i]] * 3 + paras[i + 1 :])}


def insert_foreign(row: dict, rng: random.Random) -> dict:
    """Insert one sentence in another script between two paragraphs."""
    paras = _paragraphs(row["reasoning"])
    i = rng.randrange(len(paras) + 1)
    return {**row, "reasoning": "\n\n".join([*paras[:i], rng.choice(FOREIGN_SENTENCES), *paras[i:]])}


def swap_answer(row: dict, rng: random.Random) -> dict:
    """Replace the final answer by another option, so that it contradicts the reasoning."""
    labels = [o["label"] for o in row["options"] if o["label"] != row["pred_label"]]
    return {**row, "response": rng.choice(labels)}


def drop_answer(row: dict, rng: random.Random) -> dict:
    """Replace the response with text that commits to no option (or nothing at all)."""
    return {**row, "response": rng.choice(HEDGES)}


CORRUPTIONS = {
    "truncated": cut_thinking,
    "repetition": loop_paragraph,
    "language_mixing": insert_foreign,
    "conclusion_mismatch": swap_answer,
    "no_answer": drop_answer,
}


def corrupt(table: pa.Table, kind: str, seed: int = 0) -> pa.Table:
    """A copy of `table` with every row corrupted by `kind` (the flag it must raise)."""
    rng = random.Random(seed)
    rows = [CORRUPTIONS[kind](row, rng) for row in table.to_pylist()]
    return pa.Table.from_pylist(rows, schema=table.schema)


def corrupt_verified(clean: pa.Table, kind: str, seed: int = 0) -> pa.Table:
    """Corrupt verified traces and verify the copies again (swap_answer needs each trace's own committed label)."""
    base = clean.drop_columns(VERDICT).append_column("pred_label", clean.column("pred_label"))
    return verify(corrupt(base, kind, seed=seed).drop_columns(["pred_label"]))


def flagged(table: pa.Table, flag: str) -> float:
    """Share of verified rows whose quality flags include `flag`."""
    q = pl.from_arrow(score(table).select(["quality"]))
    return q.select(pl.col("quality").struct.field("flags").list.contains(flag).mean()).item()
