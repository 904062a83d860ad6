"""MMLU (Hendrycks et al. 2021), the six medical subjects: headerless hendrycks CSVs; Hub `cais/mmlu`."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from medr1_data import Medr1Error
from medr1_data.sources import register
from medr1_data.sources.base import LABELS, Question, Source, SourceRow, content_id
from medr1_data.sources.readers import RowError, iter_csv

SUBJECTS = (
    "anatomy",
    "clinical_knowledge",
    "college_biology",
    "college_medicine",
    "medical_genetics",
    "professional_medicine",
)
FILE_SPLIT = {"validation": "val"}  # hendrycks file names say `val`; the Hub says `validation`
ITEM_ID = "_item_id"  # raw key the readers add: `<subject>/<0-based row of the subject's CSV or Hub split>`


@register
class MMLUMedical(Source):
    name = "mmlu_medical"
    license = "MIT"
    homepage = "https://github.com/hendrycks/test"
    hub_id = "cais/mmlu"
    splits = ("dev", "validation", "test")
    description = "MMLU anatomy, clinical knowledge, college biology/medicine, medical genetics, professional medicine"

    def local_rows(self, path: Path, split: str) -> Iterator[SourceRow]:
        path = Path(path)
        suffix = FILE_SPLIT.get(split, split)
        if path.is_file():
            files = [path]
        else:
            files = []
            for subject in SUBJECTS:
                hits = [
                    f
                    for f in (path / f"{subject}_{suffix}.csv", path / suffix / f"{subject}_{suffix}.csv")
                    if f.exists()
                ]
                files.extend(hits[:1])
            if not files:
                raise Medr1Error(f"{path}: no <subject>_{suffix}.csv files for the medical subjects")
        for file in files:
            subject = file.name.removesuffix(f"_{suffix}.csv").removesuffix(".csv")
            n = 0  # data rows before this one: the row index the hendrycks files and the Hub share
            for row, cells, text in iter_csv(file):
                if isinstance(cells, RowError):
                    yield SourceRow(str(file), row, cells, text)
                elif row == 1 and cells[0].strip().lower() == "question":
                    continue  # some mirrors add a header row (question,choice0..3,answer)
                else:
                    raw = {"subject": subject, "cells": cells, ITEM_ID: f"{subject}/{n}"}
                    yield SourceRow(str(file), row, raw, text)
                n += 1

    def hub_dataset(self, split: str) -> Any:
        import datasets

        parts = [datasets.load_dataset(self.hub_id, s, split=split) for s in SUBJECTS]
        return datasets.concatenate_datasets(parts)

    def hub_rows(self, dataset: Any, split: str, file: str) -> Iterator[SourceRow]:
        seen: dict[str, int] = {}
        for r in super().hub_rows(dataset, split, file):
            if isinstance(r.raw, RowError):
                yield r
                continue
            subject = str(r.raw.get("subject"))
            seen[subject] = seen.get(subject, -1) + 1
            yield r._replace(raw={**r.raw, ITEM_ID: f"{subject}/{seen[subject]}"})

    def convert(self, raw: dict[str, Any], split: str, *, hub: bool) -> Question:
        if hub:
            question, choices, answer, subject = (
                raw.get("question"),
                raw.get("choices"),
                raw.get("answer"),
                raw.get("subject"),
            )
            if not isinstance(choices, list):
                raise RowError("wrong_type", "choices", "expected a list of strings")
        else:
            cells, subject = raw["cells"], raw["subject"]
            if len(cells) < 3:
                raise RowError("missing_field", "answer", f"{len(cells)} cells, expected question, options, answer")
            question, choices, answer = cells[0], cells[1:-1], cells[-1].strip()
        if not isinstance(question, str):
            raise RowError("wrong_type", "question", "expected a string")
        if not all(isinstance(c, str) for c in choices):
            raise RowError("wrong_type", "choices", "expected strings")
        options = list(zip(LABELS, choices, strict=False))
        if isinstance(answer, int) or (isinstance(answer, str) and answer.isdigit()):
            index = int(answer)
            label = LABELS[index] if 0 <= index < len(LABELS) else f"#{answer}"
        elif isinstance(answer, str):
            label = answer.upper()
        else:
            raise RowError("wrong_type", "answer", f"expected a letter or index, got {type(answer).__name__}")
        # MMLU repeats some questions across subjects (college_medicine / college_biology), so the id names it.
        source_id = f"{subject}-{content_id(question, options)}"
        # `item_id` (`<subject>/<row>`) is how the official files and papers name an item (decontam's `contam_item_id`).
        return Question(source_id, question, options, label, None, {"subject": subject, "item_id": raw.get(ITEM_ID)})
