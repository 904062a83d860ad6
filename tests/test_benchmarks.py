"""Benchmark registry: names, local folders, NAME=PATH and mcq:NAME=PATH specs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from medr1_data import Medr1Error
from medr1_data.benchmarks import BENCHMARK_DIR_ENV, BENCHMARKS, DEFAULT_BENCHMARKS, load_benchmark, resolve


def test_required_benchmarks_are_registered() -> None:
    assert set(DEFAULT_BENCHMARKS) == {
        "medqa_us_test",
        "medmcqa_val",
        "pubmedqa_test",
        "mmlu_medical_test",
        "headqa_en_test",
    }
    assert BENCHMARKS["medmcqa_val"].source == "medmcqa" and BENCHMARKS["medmcqa_val"].split == "validation"
    assert BENCHMARKS["pubmedqa_test"].hub_id == "qiaojin/PubMedQA"


@pytest.mark.parametrize(
    ("name", "count"),
    [
        ("medqa_us_test", 1273),
        ("medmcqa_val", 4183),
        ("pubmedqa_test", 500),
        ("mmlu_medical_test", 1089),
        ("medxpertqa_r_test", 1861),
        ("medxpertqa_u_test", 589),
        ("medexqa_test", 935),
    ],
)
def test_benchmark_dir_env_loads_every_item(
    shared_data: Path, monkeypatch: pytest.MonkeyPatch, name: str, count: int
) -> None:
    monkeypatch.setenv(BENCHMARK_DIR_ENV, str(shared_data / "benchmarks"))
    got, loaded = load_benchmark(name)
    assert got == name
    assert loaded.table.num_rows == count
    assert loaded.rejects.num_rows == 0


def test_name_equals_path_and_generic_mcq(tmp_path: Path) -> None:
    f = tmp_path / "mine.jsonl"
    f.write_text(json.dumps({"question": "Q?", "options": {"A": "x", "B": "y"}, "answer_idx": "A"}) + "\n")
    name, loaded = load_benchmark(f"mcq:my_bench={f}")
    assert name == "my_bench" and loaded.table.num_rows == 1
    assert loaded.table.column("source").to_pylist() == ["mcq_jsonl"]
    name, source, split, path = resolve(f"medqa_us_test={f}")
    assert (name, source, split, path) == ("medqa_us_test", "medqa", "test", f)


def test_bare_name_prefers_the_benchmark_dir_then_the_hub(tmp_path: Path) -> None:
    assert resolve("medqa_us_test") == ("medqa_us_test", "medqa", "test", None)
    (tmp_path / "medqa_us_4options_test.jsonl").write_text("")
    assert resolve("medqa_us_test", tmp_path)[3] == tmp_path / "medqa_us_4options_test.jsonl"
    with pytest.raises(Medr1Error, match="not found in the benchmark folder"):
        resolve("medmcqa_val", tmp_path)


@pytest.mark.parametrize(
    ("spec", "message"),
    [("nosuch", "unknown benchmark 'nosuch'"), ("mcq:x", "needs =PATH"), ("medexqa_test", "has no Hub copy")],
)
def test_bad_specs(spec: str, message: str) -> None:
    with pytest.raises(Medr1Error, match=message):
        resolve(spec)
