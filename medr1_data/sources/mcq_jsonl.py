"""Generic MCQ JSON-lines: `question`, `options` {label: text}, `answer_idx`; the format most medical eval repos use."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from medr1_data.sources import register
from medr1_data.sources.base import Question, Source, SourceRow, content_id, options_from_mapping
from medr1_data.sources.files import split_file
from medr1_data.sources.readers import iter_jsonl, require_id, require_str

ID_FIELDS = ("id", "realidx", "qid")
CORE_FIELDS = {"question", "options", "answer_idx", "context", *ID_FIELDS}


@register
class MCQJsonl(Source):
    name = "mcq_jsonl"
    license = "see source"
    homepage = "https://github.com/xk-huang/medagents-benchmark"
    hub_id = None
    splits = ("train", "validation", "test")
    description = "Any JSON-lines file of question, options {label: text}, answer_idx (MedXpertQA, MedExpQA, ...)"

    def local_rows(self, path: Path, split: str) -> Iterator[SourceRow]:
        file = split_file(path, split, ("*{split}.jsonl", "*{split}*.jsonl"))
        for row, raw, text in iter_jsonl(file):
            yield SourceRow(str(file), row, raw, text)

    def convert(self, raw: dict[str, Any], split: str, *, hub: bool) -> Question:
        question = require_str(raw, "question")
        options = options_from_mapping(raw, "options")
        label = require_str(raw, "answer_idx").strip()
        id_field = next((f for f in ID_FIELDS if raw.get(f) is not None), None)
        source_id = require_id(raw, id_field) if id_field else content_id(question, options)
        context = raw.get("context") if isinstance(raw.get("context"), str) else None
        meta = {k: v for k, v in raw.items() if k not in CORE_FIELDS}
        return Question(source_id, question, options, label, context, meta)
