"""MedQA-USMLE (Jin et al. 2021): jind11 JSON-lines, US 4- or 5-option; Hub `GBaker/MedQA-USMLE-4-options`."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from medr1_data.sources import register
from medr1_data.sources.base import Question, Source, SourceRow, content_id, options_from_mapping
from medr1_data.sources.files import split_file
from medr1_data.sources.readers import RowError, iter_jsonl, require_str

ITEM_ID = "_item_id"  # raw key the readers add: the row's 0-based line index in the file (or row of the Hub split)


@register
class MedQA(Source):
    name = "medqa"
    license = "MIT"
    homepage = "https://github.com/jind11/MedQA"
    hub_id = "GBaker/MedQA-USMLE-4-options"
    splits = ("train", "dev", "test")
    description = "USMLE-style clinical vignettes, US English, 4 or 5 options"

    def local_rows(self, path: Path, split: str) -> Iterator[SourceRow]:
        file = split_file(path, split, ("*{split}.jsonl", "*{split}*.jsonl"))
        for row, raw, text in iter_jsonl(file):
            yield SourceRow(str(file), row, raw if isinstance(raw, RowError) else {**raw, ITEM_ID: row - 1}, text)

    def hub_rows(self, dataset: Any, split: str, file: str) -> Iterator[SourceRow]:
        for r in super().hub_rows(dataset, split, file):
            yield r if isinstance(r.raw, RowError) else r._replace(raw={**r.raw, ITEM_ID: r.row - 1})

    def convert(self, raw: dict[str, Any], split: str, *, hub: bool) -> Question:
        question = require_str(raw, "question")
        options = options_from_mapping(raw, "options")
        label = require_str(raw, "answer_idx").strip()
        answer = raw.get("answer")
        by_label = dict(options)
        if isinstance(answer, str) and label in by_label and answer.strip() != by_label[label].strip():
            raise RowError("answer_text_mismatch", "answer", f"'{answer[:60]}' is not option {label}")
        # The id stays a content hash (stable whatever the file's order); `item_id` is the line index that the official
        # file and the papers use (decontamination reports it as `contam_item_id`).
        meta = {"exam": raw.get("meta_info"), "item_id": _str(raw.get(ITEM_ID))}
        return Question(content_id(question, options), question, options, label, None, meta)


def _str(value: Any) -> str | None:
    return None if value is None else str(value)
