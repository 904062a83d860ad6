"""Layouts of other open medical reasoning datasets, mapped to canonical questions and traces.

A layout turns one record batch of a peer dataset into rows with the canonical question columns (`id`,
`question`, `options`, `answer_label`, …) and trace columns (`reasoning`, `response`). Options written into the
prompt or the user turn as a lettered list ("A. …", "(B) …", "c) …", one per line or inline after the stem) are
parsed out; a question without one is kept as an open-ended stem (no options). Row ids trace back to the input:
`<layout>/<split>/<row index>`.

- `m23k` (UCSC-VLAA/m23k-tokenized): `prompt` (stem and lettered options), `answer_letter`, `reasoning`,
  `distilled_answer_string`, `source`;
- `ii_medical` (II-Medical-Reasoning-SFT): `messages` (user: the question; assistant: `<think>…</think>` answer),
  `model`;
- `openmed` (Medical-Reasoning-SFT-*): `messages` with `reasoning_content` on the assistant turn;
- `huatuo_o1` (medical-o1-reasoning-SFT): `Question`, `Complex_CoT`, `Response`;
- `messages`: any `messages` column whose user turn holds the question;
- `question:COL,reasoning:COL,…`: a column mapping over `question`, `options`, `answer`, `reasoning`, `response`,
  `context`.

A gold answer (`answer_letter`, `answer`, `answer_idx`, or the mapping's `answer`) is read where the layout has one:
a letter, a 0-based index, or an option's text.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from medr1_data import Medr1Error
from medr1_data.schema import KNOWN_FIELDS
from medr1_data.teacher.traces import split_reasoning

LAYOUTS = ("m23k", "ii_medical", "openmed", "huatuo_o1", "messages")
MAPPING_KEYS = ("question", "options", "answer", "reasoning", "response", "context")
GOLD_COLUMNS = ("answer_letter", "answer", "answer_idx")
MARKER = re.compile(r"(?:^|(?<=\s))\(?([A-Ja-j])[\.\):]\s+")  # "A. ", "(B) ", "c) ", "D: " after space or at start
LEAD = re.compile(r"^\s*(?:question|q)\s*[:.]\s*", re.I)
TRAIL = re.compile(r"\s*(?:answer choices|choices|options)\s*:?\s*$", re.I)
OUT_FIELDS = [
    *(pa.field(n, KNOWN_FIELDS[n].type) for n in ("id", "source", "source_split", "source_id", "question")),
    pa.field("options", KNOWN_FIELDS["options"].type),
    *(pa.field(n, pa.string()) for n in ("answer_label", "context", "meta", "license")),
    pa.field("sample_idx", pa.int32()),
    *(pa.field(n, pa.string()) for n in ("teacher_model", "reasoning", "response", "finish_reason")),
]
OUT_SCHEMA = pa.schema(OUT_FIELDS)


@dataclass(frozen=True)
class Layout:
    """A named layout, or a column mapping (`mapping`: canonical name -> the dataset's column)."""

    name: str
    mapping: dict[str, str] = field(default_factory=dict)


def parse_layout(text: str) -> Layout:
    """`m23k`, `ii_medical`, …, or `question:COL,reasoning:COL,…` (a column mapping)."""
    if text in LAYOUTS:
        return Layout(text)
    if ":" not in text:
        raise Medr1Error(f"layout '{text}': expected one of {', '.join(LAYOUTS)} or a mapping question:COL,...")
    mapping = {}
    for part in text.split(","):
        key, _, col = part.partition(":")
        if key.strip() not in MAPPING_KEYS or not col.strip():
            raise Medr1Error(f"layout mapping '{part}': expected KEY:COLUMN with KEY in {', '.join(MAPPING_KEYS)}")
        mapping[key.strip()] = col.strip()
    if "question" not in mapping:
        raise Medr1Error(f"layout mapping '{text}': needs question:COLUMN")
    return Layout("columns", mapping)


def detect_layout(columns: list[str]) -> Layout:
    """The layout a table's columns say it has."""
    cols = set(columns)
    if {"prompt", "answer_letter", "reasoning"} <= cols:
        return Layout("m23k")
    if {"Question", "Complex_CoT", "Response"} <= cols:
        return Layout("huatuo_o1")
    if {"messages", "problem", "model"} <= cols:
        return Layout("ii_medical")
    if "messages" in cols:
        return Layout("messages")
    raise Medr1Error(f"no known layout has columns {', '.join(sorted(cols))}: give LAYOUT=PATH or a column mapping")


def required_columns(layout: Layout) -> tuple[str, ...]:
    """The columns a layout cannot do without."""
    return {
        "m23k": ("prompt", "reasoning", "distilled_answer_string"),
        "huatuo_o1": ("Question", "Complex_CoT", "Response"),
        "columns": tuple(layout.mapping.values()),
    }.get(layout.name, ("messages",))


def resolve_layout(layout: Layout | None, columns: list[str], where: str) -> Layout:
    """The given layout (or the one the columns say), checked to have the columns it needs."""
    layout = layout or detect_layout(columns)
    missing = [c for c in required_columns(layout) if c not in columns]
    if missing:
        raise Medr1Error(f"{where}: layout {layout.name} needs column '{missing[0]}'")
    return layout


def parse_mcq(text: str) -> tuple[str, list[tuple[str, str]]]:
    """(stem, [(label, text)]) of a question with a lettered option list; ([], the whole text) without one."""
    marks = list(MARKER.finditer(text))
    letters = [m.group(1) for m in marks]
    for start, first in enumerate(letters):
        if first not in "Aa":
            continue
        run, want = [marks[start]], "B"  # the next letter of the run, in the first one's case
        for k in range(start + 1, len(marks)):
            if letters[k].upper() == want and letters[k].isupper() == first.isupper():
                run.append(marks[k])
                want = chr(ord(want) + 1)
        if len(run) < 2:
            continue
        stem = TRAIL.sub("", LEAD.sub("", text[: run[0].start()])).strip()
        ends = [r.start() for r in run[1:]] + [len(text)]
        options = [(r.group(1).upper(), text[r.end() : e].strip()) for r, e in zip(run, ends, strict=True)]
        options[-1] = (options[-1][0], options[-1][1].split("\n")[0].strip())  # what follows the list is not option
        if stem and all(t for _, t in options):
            return stem, options
    return LEAD.sub("", text).strip(), []


def gold_label(value: Any, options: list[tuple[str, str]]) -> str | None:
    """A gold answer as a label: a letter, a 0-based index, or an option's text; None when it names no option."""
    if value is None or not options:
        return None
    labels = [lab for lab, _ in options]
    if isinstance(value, int) and not isinstance(value, bool):
        return labels[value] if 0 <= value < len(labels) else None
    text = str(value).strip()
    if text.upper().strip("()") in labels:
        return text.upper().strip("()")
    by_text = {t.strip().lower(): lab for lab, t in options}
    return by_text.get(text.lower())


def _turns(messages: Any) -> tuple[str | None, dict[str, Any] | None]:
    """(the first user turn's text, the last assistant message) of a chat."""
    if isinstance(messages, str):
        messages = json.loads(messages)
    user = next((m.get("content") for m in messages or [] if m.get("role") == "user"), None)
    assistant = next((m for m in reversed(messages or []) if m.get("role") == "assistant"), None)
    return user, assistant


def _fields(layout: Layout, row: dict[str, Any]) -> dict[str, Any]:
    """question text, options (if separate), gold, reasoning, response and teacher of one row."""
    name, get = layout.name, row.get
    if name == "m23k":
        return {"text": get("prompt"), "gold": get("answer_letter"), "reasoning": get("reasoning"),
                "response": get("distilled_answer_string"), "source": get("source")}  # fmt: skip
    if name == "huatuo_o1":
        return {"text": get("Question"), "reasoning": get("Complex_CoT"), "response": get("Response")}
    if name == "columns":
        m = layout.mapping
        values = {k if k != "question" else "text": get(col) for k, col in m.items()}
        return values | {"gold": get(m.get("answer", ""))}
    user, assistant = _turns(get("messages"))
    reasoning, response = split_reasoning(assistant) if assistant else (None, None)
    gold = next((get(c) for c in GOLD_COLUMNS if get(c) is not None), None)
    return {"text": user, "gold": gold, "reasoning": reasoning, "response": response, "teacher": get("model")}


def _options(value: Any) -> list[tuple[str, str]]:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return []
    if isinstance(value, dict):
        return [(str(k).upper(), str(v)) for k, v in value.items() if v is not None]
    if isinstance(value, list):
        return [(chr(65 + i), str(v)) for i, v in enumerate(value)]
    return []


def map_rows(batch: pa.RecordBatch | pa.Table, layout: Layout, split: str, first_row: int) -> tuple[pa.Table, dict]:
    """Canonical rows of one batch, and the rows that could not be mapped per reason (no question text)."""
    out: dict[str, list[Any]] = {f.name: [] for f in OUT_FIELDS}
    rejected: dict[str, int] = {}
    for i, row in enumerate(batch.to_pylist(), start=first_row):
        f = _fields(layout, row)
        text = f.get("text")
        if not isinstance(text, str) or not text.strip():
            rejected["no_question_text"] = rejected.get("no_question_text", 0) + 1
            continue
        stem, options = (text.strip(), _options(f["options"])) if f.get("options") is not None else parse_mcq(text)
        values = {
            "id": f"{layout.name}/{split}/{i}", "source": layout.name, "source_split": split, "source_id": str(i),
            "question": stem, "options": [{"label": lab, "text": t} for lab, t in options],
            "answer_label": gold_label(f.get("gold"), options), "context": f.get("context"),
            "meta": json.dumps({"row": i, "source": f.get("source")}), "license": "unknown", "sample_idx": 0,
            "teacher_model": f.get("teacher"), "reasoning": f.get("reasoning"), "response": f.get("response"),
            "finish_reason": None,
        }  # fmt: skip
        for k, v in values.items():
            out[k].append(v if not isinstance(v, str) or k in ("question", "meta") else v.strip() or None)
    return pa.Table.from_pydict(out, schema=OUT_SCHEMA), rejected
