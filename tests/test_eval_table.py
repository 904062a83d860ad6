"""benchmarks/eval_table.py: the seed's table from lm-eval runs, with the settings beside the numbers."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

pytest.importorskip("lm_eval", reason="lm-eval is in the eval extra")

from .conftest import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))
import eval_table


def test_table_has_the_seed_columns_and_records_settings(tiny_model: Path, shared_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "table"
    argv = [
        "--model", f"tiny=hf:pretrained={tiny_model},dtype=float32", "--tasks", "medr1_medqa,medr1_medmcqa",
        "--limit", "2", "--max-gen-toks", "6", "--benchmark-dir", str(shared_data / "benchmarks"),
        "--device", "cpu", "--batch-size", "2", "--out", str(out),
    ]  # fmt: skip
    assert eval_table.main(argv) == 0
    data = json.loads(out.with_suffix(".json").read_text())
    s = data["settings"]
    assert (s["max_gen_toks"], s["temperature"], s["samples"], s["limit"]) == (6, 0.0, 1, 2)
    assert s["versions"]["lm_eval"] and s["versions"]["transformers"] and s["apply_chat_template"] is True
    [model] = data["models"]
    assert set(model["results"]) == {"medr1_medqa", "medr1_medmcqa"}
    assert all(r["n"] == 2 and 0 <= r["acc"] <= 1 and 0 <= r["truncated"] <= 1 for r in model["results"].values())
    lines = out.with_suffix(".md").read_text().splitlines()
    assert lines[0] == "| Model | MedQA-US-TEST | MedMCQA-VALIDATION | truncated |"
    r = model["results"]
    assert lines[2] == (
        f"| tiny | {100 * r['medr1_medqa']['acc']:.1f} | {100 * r['medr1_medmcqa']['acc']:.1f} "
        f"| {100 * r['medr1_medqa']['truncated']:.1f}% |"
    )


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--model", "no-type-here"], "expected LABEL=TYPE:ARGS"),
        (["--model", "a=hf:pretrained=x", "--samples", "4"], "--samples > 1 needs --temperature > 0"),
    ],
)
def test_bad_arguments_are_one_line(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert eval_table.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("eval_table: error: ") and message in err and "\n" not in err
