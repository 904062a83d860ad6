"""`medr1-data audit` on datasets in each peer layout: planted benchmark items found with the right benchmark and
item id, clean rows not flagged, duplicates, verification, one-line errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from medr1_data.benchmarks import load_benchmark
from medr1_data.cli import main
from medr1_data.layouts import parse_mcq
from tests.conftest import FIXTURES, require_shared

LAYOUTS = ("m23k", "ii_medical", "openmed", "huatuo_o1", "messages")
# (benchmark, 0-based row of its loaded table) copied into each dataset at test time, never stored
PLANTS = (("medqa_us_test", 5), ("medmcqa_val", 7), ("mmlu_medical_test", 11))
BENCHMARKS = ("medqa_us_test", "medmcqa_val", "pubmedqa_test", "mmlu_medical_test")


def _prompt(question: str, options: list[dict[str, str]]) -> str:
    return question + "\n" + "\n".join(f"{o['label']}. {o['text']}" for o in options)


def _row(layout: str, item: dict[str, Any]) -> dict[str, Any]:
    """A benchmark item written in `layout`'s columns, with a plausible trace."""
    prompt, gold = _prompt(item["question"], item["options"]), item["answer_label"]
    answer = f"The answer is {gold}."
    if layout == "m23k":
        return {"prompt": prompt, "answer_letter": gold, "reasoning": "Think.", "distilled_answer_string": answer}
    if layout == "huatuo_o1":
        return {"Question": prompt, "Complex_CoT": "Let me think.", "Response": answer}
    messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": f"<think>Hm.</think>{answer}"}]
    extra = {"model": "R1", "problem": prompt, "question": item["question"]} if layout == "ii_medical" else {}
    return {"messages": messages, **extra, **({"answer": gold} if layout == "messages" else {})}


@pytest.fixture(scope="module")
def bench_dir() -> Path:
    return require_shared("benchmarks")


@pytest.fixture(scope="module")
def planted(bench_dir: Path) -> list[dict[str, Any]]:
    items = []
    for name, row in PLANTS:
        item = load_benchmark(name, bench_dir)[1].table.slice(row, 1).to_pylist()[0]
        items.append({**item, "benchmark": name, "item_id": json.loads(item["meta"]).get("item_id", item["source_id"])})
    return items


def _audit(tmp_path: Path, layout: str, rows: list[dict[str, Any]], bench_dir: Path) -> tuple[dict, Path]:
    data = tmp_path / f"{layout}.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    out = tmp_path / "audit"
    args = ["audit", f"{layout}={data}", "--benchmark-dir", str(bench_dir), "--out", str(out), "--batch-rows", "10"]
    for name in BENCHMARKS:
        args += ["--benchmark", name]
    assert main(args) == 0
    return json.loads((out / "report.json").read_text()), out


@pytest.mark.parametrize("layout", LAYOUTS)
def test_each_layout_finds_the_planted_items_and_nothing_else(
    tmp_path: Path, bench_dir: Path, planted: list[dict[str, Any]], layout: str
) -> None:
    clean = [json.loads(line) for line in (FIXTURES / "audit" / f"{layout}.jsonl").read_text().splitlines()]
    rows = clean[:10] + [_row(layout, planted[0])] + clean[10:20] + [_row(layout, p) for p in planted[1:]] + clean[20:]
    report, out = _audit(tmp_path, layout, rows, bench_dir)
    assert report["rows"] == report["rows_mapped"] == len(rows) == 28
    flagged = pq.read_table(out / "flagged.parquet").to_pylist()
    got = {(f["row"], f["contam_benchmark"], f["contam_item_id"]) for f in flagged}
    want = {(10, planted[0]["benchmark"], planted[0]["item_id"])}
    want |= {(21 + i, p["benchmark"], p["item_id"]) for i, p in enumerate(planted[1:])}
    assert got == want  # the planted rows, with the right benchmark and item id; no clean row
    assert all(f["id"] == f"{layout}/train/{f['row']}" for f in flagged)
    assert report["contamination"]["rows_flagged"] == 3
    if layout != "huatuo_o1":  # there row 1 is open-ended and its copy has options: not the same question
        assert report["duplicates"]["duplicate_rows"] == 1  # the fixtures' re-cased, shuffled copy of row 1
        assert report["duplicates"]["examples"] == [{"id": f"{layout}/train/27", "duplicate_of": f"{layout}/train/1"}]
    md = (out / "report.md").read_text()
    for p in planted:
        assert f"= item `{p['item_id']}`" in md
    if layout in ("m23k", "messages"):  # the layouts that carry a gold answer
        assert report["verification"]["rows"] == 28 and report["verification"]["verdicts"]["correct"] >= 25


def test_open_ended_questions_are_kept_as_stems(tmp_path: Path, bench_dir: Path) -> None:
    clean = [json.loads(line) for line in (FIXTURES / "audit" / "huatuo_o1.jsonl").read_text().splitlines()]
    report, _ = _audit(tmp_path, "huatuo_o1", clean, bench_dir)
    assert report["rows_mapped"] == 25 and report["rows_with_options"] == 13  # every other row has no options
    assert report["contamination"]["rows_flagged"] == 0


def test_a_column_mapping_reads_any_layout_with_context(tmp_path: Path, bench_dir: Path) -> None:
    pubmed = load_benchmark("pubmedqa_test", bench_dir)[1].table.slice(3, 1).to_pylist()[0]
    abstract = "We followed 1,200 adults for ten years and measured blood pressure yearly."
    rows = [{"q": "Is regular exercise associated with lower blood pressure?", "abstract": abstract, "cot": "Think.",
             "out": "yes"}]  # fmt: skip
    rows.append({"q": pubmed["question"], "abstract": pubmed["context"], "cot": "Think.", "out": "yes"})
    data = tmp_path / "mine.parquet"
    import pyarrow as pa

    pq.write_table(pa.Table.from_pylist(rows), data)
    out = tmp_path / "audit"
    spec = f"question:q,context:abstract,reasoning:cot,response:out={data}"
    args = ["audit", spec, "--benchmark-dir", str(bench_dir), "--benchmark", "pubmedqa_test", "--out", str(out)]
    assert main(args) == 0
    flagged = pq.read_table(out / "flagged.parquet").to_pylist()
    assert [(f["row"], f["contam_benchmark"], f["contam_item_id"]) for f in flagged] == [
        (1, "pubmedqa_test", pubmed["source_id"])
    ]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("nosuch={path}", "layout 'nosuch': expected one of m23k, ii_medical, openmed, huatuo_o1, messages"),
        ("m23k={missing}", "no such file or folder"),
        ("m23k={path}", "layout m23k needs column 'prompt'"),
        ("question:nosuch,reasoning:x={path}", "layout columns needs column 'nosuch'"),
        ("{path}", "no known layout has columns"),
    ],
)
def test_bad_specs_are_one_line_errors(
    tmp_path: Path, bench_dir: Path, capsys: pytest.CaptureFixture[str], spec: str, message: str
) -> None:
    path = tmp_path / "x.jsonl"
    path.write_text('{"a": 1}\n')
    spec = spec.format(path=path, missing=tmp_path / "missing.jsonl")
    code = main(["audit", spec, "--benchmark-dir", str(bench_dir), "--benchmark", "medqa_us_test", "--out",
                 str(tmp_path / "o")])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.count("\n") == 1


def test_parse_mcq_reads_lettered_lists_in_prompts() -> None:
    assert parse_mcq("Which nerve?\nA. Ulnar\nB. Radial") == ("Which nerve?", [("A", "Ulnar"), ("B", "Radial")])
    assert parse_mcq("Question: Which? Answer Choices: A. one B. two C. three")[1] == [
        ("A", "one"), ("B", "two"), ("C", "three")
    ]  # fmt: skip
    assert parse_mcq("Which drug?\na) atropine\nb) timolol")[1] == [("A", "atropine"), ("B", "timolol")]
    assert parse_mcq("Deficiency of vitamin A. causes night blindness.") == (
        "Deficiency of vitamin A. causes night blindness.", []
    )  # fmt: skip
    assert parse_mcq("(A) x\n(B) y") == ("(A) x\n(B) y", [])  # no stem: not a question with options
