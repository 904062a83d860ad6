"""PubMedQA (Jin et al. 2019): `ori_pqal.json` + `test_ground_truth.json`; Hub `qiaojin/PubMedQA`; yes/no/maybe."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from medr1_data import Medr1Error
from medr1_data.sources import register
from medr1_data.sources.base import Question, Source, SourceRow
from medr1_data.sources.readers import RowError, read_json, require_id, require_str

OPTIONS = [("A", "yes"), ("B", "no"), ("C", "maybe")]
LABEL_OF = {text: label for label, text in OPTIONS}
TEST_IDS_FILE = "test_ground_truth.json"
TEST_IDS_URL = "https://raw.githubusercontent.com/pubmedqa/pubmedqa/master/data/test_ground_truth.json"
FILES = {"artificial": "ori_pqaa.json"}


@register
class PubMedQA(Source):
    name = "pubmedqa"
    license = "MIT"
    homepage = "https://pubmedqa.github.io"
    hub_id = "qiaojin/PubMedQA"
    # test: the official 500-question test split; train: the other 500 expert-labelled; labeled: all 1000.
    splits = ("train", "test", "labeled", "artificial")
    description = "Yes/no/maybe research questions over PubMed abstracts (context = abstract without conclusion)"

    def local_rows(self, path: Path, split: str) -> Iterator[SourceRow]:
        path = Path(path)
        folder = path if path.is_dir() else path.parent
        file = path if path.is_file() else folder / FILES.get(split, "ori_pqal.json")
        data = read_json(file)
        if not isinstance(data, dict):
            raise Medr1Error(f"{file}: expected a JSON object of PMID -> record, got a {type(data).__name__}")
        keep = self._split_filter(split, folder)
        for row, (pmid, record) in enumerate(data.items(), start=1):
            if not keep(str(pmid)):
                continue
            if not isinstance(record, dict):
                yield SourceRow(str(file), row, RowError("wrong_type", pmid, "record is not an object"))
                continue
            yield SourceRow(str(file), row, {"pubid": pmid, **record})

    def hub_dataset(self, split: str) -> Any:
        import datasets

        config = "pqa_artificial" if split == "artificial" else "pqa_labeled"
        return datasets.load_dataset(self.hub_id, config, split="train")

    def rows(self, split: str, path: Path | None) -> tuple[Iterator[SourceRow], bool]:
        rows, hub = super().rows(split, path)
        if not hub:
            return rows, hub
        keep = self._split_filter(split, None if path is None else Path(path).parent)
        return (r for r in rows if isinstance(r.raw, RowError) or keep(str(r.raw.get("pubid")))), hub

    def _split_filter(self, split: str, folder: Path | None):
        if split in ("labeled", "artificial"):
            return lambda pmid: True
        if split not in ("train", "test"):
            raise Medr1Error(f"pubmedqa has no split '{split}' (splits: {', '.join(self.splits)})")
        test_ids = _test_ids(folder)
        return (lambda pmid: pmid in test_ids) if split == "test" else (lambda pmid: pmid not in test_ids)

    def convert(self, raw: dict[str, Any], split: str, *, hub: bool) -> Question:
        pmid = require_id(raw, "pubid")
        if hub:
            question = require_str(raw, "question")
            ctx = raw.get("context") or {}
            contexts, labels, meshes = ctx.get("contexts"), ctx.get("labels"), ctx.get("meshes")
            long_answer, year = raw.get("long_answer"), None
        else:
            question = require_str(raw, "QUESTION")
            contexts, labels, meshes = raw.get("CONTEXTS"), raw.get("LABELS"), raw.get("MESHES")
            long_answer, year = raw.get("LONG_ANSWER"), raw.get("YEAR")
        if not isinstance(contexts, list) or not all(isinstance(c, str) for c in contexts):
            raise RowError("wrong_type", "CONTEXTS", "expected a list of strings")
        decision = require_str(raw, "final_decision").strip().lower()
        if decision not in LABEL_OF:
            raise RowError("answer_not_in_options", "final_decision", f"'{decision}' is not yes/no/maybe")
        if isinstance(labels, list) and len(labels) == len(contexts):
            context = "\n".join(f"{lab}: {text}" for lab, text in zip(labels, contexts, strict=True))
        else:
            context = "\n".join(contexts)
        meta = {"year": year, "meshes": meshes, "long_answer": long_answer}
        return Question(pmid, question, list(OPTIONS), LABEL_OF[decision], context, meta)


def _test_ids(folder: Path | None) -> set[str]:
    """PMIDs of the official test split: `test_ground_truth.json` beside the data, else from the PubMedQA repo."""
    if folder is not None and (folder / TEST_IDS_FILE).exists():
        data = read_json(folder / TEST_IDS_FILE)
    else:
        try:
            with urllib.request.urlopen(TEST_IDS_URL, timeout=30) as resp:
                data = json.loads(resp.read().decode("utf-8"))
        except OSError as e:
            where = f"{folder / TEST_IDS_FILE} is absent and " if folder else ""
            raise Medr1Error(f"pubmedqa: {where}{TEST_IDS_URL} could not be fetched ({e})") from None
    if not isinstance(data, dict):
        raise Medr1Error(f"pubmedqa: {TEST_IDS_FILE} must be a JSON object of PMID -> label")
    return {str(k) for k in data}
