"""Source adapters: the contract every registered source meets, real-file counts, Hub columns, and bad rows."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from medr1_data import Medr1Error
from medr1_data.schema import QUESTION_SCHEMA, validate
from medr1_data.sources import all_sources, get_source, load, parse_spec
from medr1_data.sources.base import load_rows

from .conftest import FIXTURES

SOURCE_FIXTURES = FIXTURES / "sources"


def fixture_spec(name: str) -> tuple[str, str]:
    """The contract's input for a source: its fixture folder and the first split it declares."""
    return f"{name}={SOURCE_FIXTURES / name}", get_source(name).splits[0]


@pytest.mark.parametrize("name", sorted(all_sources()))
def test_every_source_meets_the_contract(name: str) -> None:
    assert (SOURCE_FIXTURES / name).is_dir(), f"source '{name}' has no fixture in {SOURCE_FIXTURES / name}"
    spec, split = fixture_spec(name)
    first = load(spec, split)
    validate(first.table, QUESTION_SCHEMA, what=name)
    rows = first.table.to_pylist()
    assert len(rows) >= 2
    assert first.rejects.num_rows == 0, first.rejects.to_pylist()
    for row in rows:
        labels = [o["label"] for o in row["options"]]
        assert row["answer_label"] in labels
        assert labels == list("ABCDEFGHIJ"[: len(labels)])
        assert row["id"] == f"{name}/{split}/{row['source_id']}"
        assert row["question"].strip() and all(o["text"].strip() for o in row["options"])
        json.loads(row["meta"])
    again = load(spec, split)
    assert again.table.column("id").to_pylist() == first.table.column("id").to_pylist()
    assert again.table.equals(first.table)


def test_registry_lists_every_required_source() -> None:
    assert {"medqa", "medmcqa", "pubmedqa", "mmlu_medical", "headqa", "mcq_jsonl"} <= set(all_sources())
    for cls in all_sources().values():
        assert cls.license and cls.homepage.startswith("http")


REAL = [
    ("medqa", "medqa_us_4options_test.jsonl", "test", 1273),
    ("medmcqa", "medmcqa_validation.jsonl", "validation", 4183),
    ("pubmedqa", "pubmedqa", "test", 500),
    ("pubmedqa", "pubmedqa", "train", 500),
    ("mmlu_medical", "mmlu_medical", "test", 1089),
    ("mmlu_medical", "mmlu_medical", "dev", 30),
]


@pytest.mark.parametrize(("name", "path", "split", "count"), REAL)
def test_real_files_exact_counts_and_no_rejects(
    shared_data: Path, name: str, path: str, split: str, count: int
) -> None:
    loaded = load(f"{name}={shared_data / 'benchmarks' / path}", split)
    assert loaded.table.num_rows == count
    assert loaded.rejects.num_rows == 0, loaded.reject_counts()
    validate(loaded.table, QUESTION_SCHEMA)


def test_real_medmcqa_known_defects_are_kept_and_flagged(shared_data: Path) -> None:
    loaded = load(f"medmcqa={shared_data / 'benchmarks' / 'medmcqa_validation.jsonl'}", "validation")
    metas = [json.loads(m) for m in loaded.table.column("meta").to_pylist()]
    assert sum(1 for m in metas if m.get("duplicate_options")) == 21
    assert sum(1 for m in metas if m["choice_type"] == "multi") == 1367
    first = loaded.table.slice(0, 1).to_pylist()[0]
    assert first["answer_label"] == "A"  # native cop 1 is the first option


def test_real_pubmedqa_test_split_is_the_official_one(shared_data: Path) -> None:
    folder = shared_data / "benchmarks" / "pubmedqa"
    truth = json.loads((folder / "test_ground_truth.json").read_text())
    loaded = load(f"pubmedqa={folder}", "test")
    got = dict(
        zip(loaded.table.column("source_id").to_pylist(), loaded.table.column("answer_label").to_pylist(), strict=True)
    )
    assert set(got) == set(truth)
    letter = {"yes": "A", "no": "B", "maybe": "C"}
    assert all(got[k] == letter[v] for k, v in truth.items())
    assert all(c for c in loaded.table.column("context").to_pylist())


# --- The Hub path: the same adapter code on local Parquet with the Hub copy's columns -----------------------


def _hub_rows(name: str) -> list[dict]:
    d = SOURCE_FIXTURES / name
    if name == "medqa":
        return [json.loads(line) for line in (d / "train.jsonl").read_text().splitlines()]
    if name == "medmcqa":
        rows = [json.loads(line) for line in (d / "train.json").read_text().splitlines()]
        return [{**r, "cop": r["cop"] - 1} for r in rows]  # the Hub copy counts from 0
    if name == "pubmedqa":
        data = json.loads((d / "ori_pqal.json").read_text())
        return [
            {
                "pubid": int(k),
                "question": v["QUESTION"],
                "context": {"contexts": v["CONTEXTS"], "labels": v["LABELS"], "meshes": v["MESHES"]},
                "long_answer": v["LONG_ANSWER"],
                "final_decision": v["final_decision"],
            }
            for k, v in data.items()
        ]
    if name == "mmlu_medical":
        import csv

        out = []
        for f in sorted(d.glob("*_dev.csv")):
            for cells in csv.reader(f.open()):
                out.append(
                    {
                        "question": cells[0],
                        "subject": f.name.removesuffix("_dev.csv"),
                        "choices": cells[1:5],
                        "answer": "ABCD".index(cells[5]),
                    }
                )
        return out
    if name == "headqa":
        data = json.loads((d / "train_HEAD_EN.json").read_text())
        return [
            {k: exam[k] for k in ("name", "year", "category")} | item
            for exam in data["exams"].values()
            for item in exam["data"]
        ]
    raise AssertionError(name)


@pytest.mark.parametrize("name", ["medqa", "medmcqa", "pubmedqa", "mmlu_medical", "headqa"])
def test_hub_columns_give_the_same_questions(tmp_path: Path, name: str) -> None:
    spec, split = fixture_spec(name)
    native = load(spec, split).table
    hub_file = tmp_path / "hub" / f"{split}-00000-of-00001.parquet"
    hub_file.parent.mkdir()
    pq.write_table(pa.Table.from_pylist(_hub_rows(name)), hub_file)
    if name == "pubmedqa":
        (tmp_path / "hub" / "test_ground_truth.json").write_text(
            (SOURCE_FIXTURES / name / "test_ground_truth.json").read_text()
        )
    hub = load(f"{name}={hub_file}", split).table
    cols = [c for c in QUESTION_SCHEMA.names if c != "meta"]
    assert hub.select(cols).to_pylist() == native.select(cols).to_pylist()


def test_bare_name_without_hub_copy_says_how_to_read_it_locally() -> None:
    with pytest.raises(Medr1Error, match="mcq_jsonl=PATH"):
        load("mcq_jsonl", "test")


# --- Bad input: rejected with a reason, counted, never a crash -----------------------------------------------

GOOD = {
    "question": "Which vitamin deficiency causes scurvy?",
    "options": {"A": "Vitamin A", "B": "Vitamin C"},
    "answer_idx": "B",
}


def _write_lines(path: Path, lines: list[bytes], final_newline: bool = True) -> Path:
    path.write_bytes(b"\n".join(lines) + (b"\n" if final_newline else b""))
    return path


def test_malformed_rows_go_to_rejects_with_reasons(tmp_path: Path) -> None:
    def row(**kw: object) -> bytes:
        return json.dumps({**GOOD, "question": f"Q{len(kw)} {GOOD['question']}", **kw}).encode()

    lines = [
        json.dumps(GOOD).encode(),  # 1 kept
        row(options={}),  # 2 no_options
        row(answer_idx="E"),  # 3 answer_not_in_options
        row(options={"A": "Vitamin C", "B": " vitamin c"}),  # 4 duplicate_options
        row(question="   "),  # 5 empty_question
        row(question=42),  # 6 wrong_type
        row(options={"A": "x", "B": 3}),  # 7 wrong_type (options.B)
        b'{"question": "caf\xe9", "options": {"A": "a", "B": "b"}, "answer_idx": "A"}',  # 8 invalid_utf8
        b"[1, 2, 3]",  # 9 wrong_type (not an object)
        b'{"question": "broken", ',  # 10 invalid_json
        row(options={"A": "only one"}, answer_idx="A"),  # 11 single_option
        row(options={"A": "Vitamin A", "B": ""}),  # 12 empty_option
        json.dumps({**GOOD, "question": "Another clean question?"}).encode(),  # 13 kept
        b'{"question": "cut off at the end of the file", "opti',  # 14 truncated_line
    ]
    path = _write_lines(tmp_path / "train.jsonl", lines, final_newline=False)
    loaded = load(f"mcq_jsonl={path}", "train")
    assert loaded.table.num_rows == 2
    reasons = {r["row"]: (r["reason"], r["field"]) for r in loaded.rejects.to_pylist()}
    assert reasons == {
        2: ("no_options", "options"),
        3: ("answer_not_in_options", "answer"),
        4: ("duplicate_options", "options"),
        5: ("empty_question", "question"),
        6: ("wrong_type", "question"),
        7: ("wrong_type", "options.B"),
        8: ("invalid_utf8", None),
        9: ("wrong_type", None),
        10: ("invalid_json", None),
        11: ("single_option", "options"),
        12: ("empty_option", "options"),
        14: ("truncated_line", None),
    }
    assert all(r["file"] == str(path) for r in loaded.rejects.to_pylist())
    assert sum(loaded.reject_counts().values()) == 12
    assert loaded.reject_counts()["wrong_type"] == 3


def test_duplicate_rows_are_rejected_once(tmp_path: Path) -> None:
    path = _write_lines(tmp_path / "train.jsonl", [json.dumps(GOOD).encode()] * 3)
    loaded = load(f"mcq_jsonl={path}", "train")
    assert loaded.table.num_rows == 1
    assert loaded.reject_counts() == {"duplicate_id": 2}


def test_benchmark_loading_keeps_duplicate_option_texts(tmp_path: Path) -> None:
    dup = json.dumps({**GOOD, "options": {"A": "x", "B": "x"}}).encode()
    path = _write_lines(tmp_path / "test.jsonl", [dup, json.dumps(GOOD).encode()])
    source = get_source("mcq_jsonl")
    assert load_rows(source, "test", path).table.num_rows == 1
    assert load_rows(source, "test", path, keep_duplicate_options=True).table.num_rows == 2


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("nosuch=x.jsonl", "unknown source 'nosuch'"),
        ("medqa={tmp}/missing.jsonl", "missing.jsonl: no such file"),
        ("medmcqa={medqa}", "no row could be read as 'medmcqa'"),
        ("pubmedqa={tmp}/bad.json", "bad.json: not valid JSON"),
        ("medqa=", "empty path"),
    ],
)
def test_file_level_errors_are_one_line(tmp_path: Path, spec: str, message: str) -> None:
    (tmp_path / "bad.json").write_text("{not json")
    spec = spec.format(tmp=tmp_path, medqa=SOURCE_FIXTURES / "medqa" / "train.jsonl")
    with pytest.raises(Medr1Error, match=message) as err:
        load(spec, "train")
    assert "\n" not in str(err.value)


def test_parse_spec() -> None:
    assert parse_spec("medqa") == ("medqa", None)
    assert parse_spec("medqa=data/x.jsonl") == ("medqa", Path("data/x.jsonl"))


def test_entry_point_plugins_are_registered(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    import medr1_data.sources as registry

    pkg = tmp_path / "medr1_plugin_demo.py"
    pkg.write_text(
        "from medr1_data.sources.mcq_jsonl import MCQJsonl\nclass Plugin(MCQJsonl):\n    name = 'plugin_demo'\n"
    )
    dist = tmp_path / "medr1_plugin_demo-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: medr1-plugin-demo\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[medr1.sources]\nplugin_demo = medr1_plugin_demo:Plugin\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(registry, "_plugins_loaded", False)
    monkeypatch.setattr(registry, "REGISTRY", dict(registry.REGISTRY))
    try:
        assert "plugin_demo" in registry.all_sources()
        loaded = registry.load(f"plugin_demo={SOURCE_FIXTURES / 'mcq_jsonl'}", "train")
        assert loaded.table.column("id")[0].as_py().startswith("plugin_demo/train/")
    finally:
        sys.modules.pop("medr1_plugin_demo", None)
