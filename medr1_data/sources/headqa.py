"""HEAD-QA (Vilares & Gómez-Rodríguez 2019), English: exam JSON (qid, qtext, ra, answers); Hub `EleutherAI/headqa`."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from medr1_data import Medr1Error
from medr1_data.sources import register
from medr1_data.sources.base import LABELS, Question, Source, SourceRow
from medr1_data.sources.files import split_file
from medr1_data.sources.readers import RowError, iter_jsonl, read_json, require_id, require_str


@register
class HeadQA(Source):
    name = "headqa"
    license = "MIT"
    homepage = "https://aghie.github.io/head-qa/"
    hub_id = "EleutherAI/headqa"
    splits = ("train", "validation", "test")
    description = "Spanish healthcare specialisation exams (MIR, EIR, FIR, PIR, BIR, QIR), English translation"

    def local_rows(self, path: Path, split: str) -> Iterator[SourceRow]:
        names = {"validation": "dev"}.get(split, split)
        file = split_file(path, split, (f"{names}_HEAD_EN.json", f"*{names}*.json", f"*{names}*.jsonl"))
        if file.suffix == ".jsonl":  # Hub-style rows, one exam question per line
            for row, raw, text in iter_jsonl(file):
                yield SourceRow(str(file), row, raw, text)
            return
        data = read_json(file)
        exams = data.get("exams") if isinstance(data, dict) else None
        if not isinstance(exams, dict):
            raise Medr1Error(f"{file}: expected a HEAD-QA exam file with an 'exams' object")
        row = 0
        for exam in exams.values():
            for item in exam.get("data", []) if isinstance(exam, dict) else []:
                row += 1
                if not isinstance(item, dict):
                    yield SourceRow(str(file), row, RowError("wrong_type", None, "question is not an object"))
                    continue
                fields = {k: exam.get(k) for k in ("name", "year", "category")}
                yield SourceRow(str(file), row, {**fields, **item})

    def hub_dataset(self, split: str) -> Any:
        import datasets

        return datasets.load_dataset(self.hub_id, "en", split=split)

    def convert(self, raw: dict[str, Any], split: str, *, hub: bool) -> Question:
        question = require_str(raw, "qtext")
        answers = raw.get("answers")
        if not isinstance(answers, list):
            raise RowError("missing_field" if answers is None else "wrong_type", "answers")
        if not all(isinstance(a, dict) and isinstance(a.get("atext"), str) for a in answers):
            raise RowError("wrong_type", "answers", "expected a list of {aid, atext}")
        answers = sorted(answers, key=lambda a: int(a.get("aid", 0)))
        options = [(LABELS[i], a["atext"]) for i, a in enumerate(answers)]
        ra = raw.get("ra")
        if isinstance(ra, bool) or not isinstance(ra, int | str) or not str(ra).isdigit():
            raise RowError("wrong_type", "ra", "expected the aid of the right answer")
        aids = [int(a.get("aid", 0)) for a in answers]
        label = LABELS[aids.index(int(ra))] if int(ra) in aids else f"#{ra}"
        exam = str(raw.get("name") or "exam")
        meta = {
            "exam": exam,
            "year": raw.get("year"),
            "category": raw.get("category"),
            "image": raw.get("image") or None,
        }
        return Question(f"{exam}-{require_id(raw, 'qid')}", question, options, label, None, meta)
