"""MedMCQA (Pal et al. 2022): native JSON-lines with `cop` 1-4; Hub `openlifescienceai/medmcqa` with `cop` 0-3."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from medr1_data.sources import register
from medr1_data.sources.base import LABELS, Question, Source, SourceRow
from medr1_data.sources.files import split_file
from medr1_data.sources.readers import RowError, iter_jsonl, require_id, require_str

OPTION_FIELDS = ("opa", "opb", "opc", "opd")


@register
class MedMCQA(Source):
    name = "medmcqa"
    license = "MIT"
    homepage = "https://medmcqa.github.io"
    hub_id = "openlifescienceai/medmcqa"
    splits = ("train", "validation", "test")
    description = "Indian AIIMS/NEET-PG entrance questions, 4 options, 21 subjects"
    # Upstream has rows whose options repeat a text (21 in validation); they are real exam rows: keep and flag.
    allow_duplicate_options = True

    def local_rows(self, path: Path, split: str) -> Iterator[SourceRow]:
        names = {"validation": "dev"}.get(split, split)
        file = split_file(path, split, (f"{names}.json", f"{names}.jsonl", "*{split}*.jsonl", "*{split}*.json"))
        for row, raw, text in iter_jsonl(file):
            yield SourceRow(str(file), row, raw, text)

    def convert(self, raw: dict[str, Any], split: str, *, hub: bool) -> Question:
        question = require_str(raw, "question")
        texts = [require_str(raw, f) for f in OPTION_FIELDS]
        options = list(zip(LABELS, texts, strict=False))
        cop = raw.get("cop")
        if cop is None:
            raise RowError("missing_field", "cop")
        if isinstance(cop, bool) or not isinstance(cop, int):
            raise RowError("wrong_type", "cop", f"expected an integer, got {type(cop).__name__}")
        index = cop if hub else cop - 1  # the Hub copy counts options from 0, the native files from 1
        label = LABELS[index] if 0 <= index < 26 else f"#{cop}"
        meta = {
            "subject": raw.get("subject_name"),
            "topic": raw.get("topic_name"),
            "explanation": raw.get("exp"),
            # "multi" rows still carry one `cop`: MedMCQA grades them single-answer, and so do we.
            "choice_type": raw.get("choice_type"),
        }
        if len({t.strip().lower() for t in texts}) < len(texts):
            meta["duplicate_options"] = True
        return Question(require_id(raw, "id"), question, options, label, None, meta)
