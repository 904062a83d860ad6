"""Trace-quality signals on real DeepSeek-R1 traces and on corrupted copies of them."""

from __future__ import annotations

import pyarrow as pa
import pytest

from medr1_data.score import FLAGS, QUALITY_WEIGHTS, ScoreSettings, non_ascii, score
from medr1_data.select import SelectSettings, select
from medr1_data.verify import verify

from .conftest import require_shared
from .corrupt import CORRUPTIONS, corrupt_verified, flagged
from .real_traces import load_real_traces


@pytest.fixture(scope="module")
def real() -> pa.Table:
    """The 851 real R1 completions that contain `</think>`, verified."""
    folder = require_shared("traces")
    table = load_real_traces(folder)
    table = table.filter(pa.compute.field("has_think_end"))
    assert table.num_rows == 851
    return verify(table)


@pytest.mark.parametrize("kind", sorted(CORRUPTIONS))
def test_each_corruption_is_flagged_and_clean_traces_are_not(real: pa.Table, kind: str) -> None:
    corrupted = corrupt_verified(real, kind, seed=7)
    assert flagged(corrupted, kind) >= 0.95
    assert flagged(real, kind) <= 0.05


def test_real_truncated_completions_are_flagged() -> None:
    folder = require_shared("traces")
    qwq = load_real_traces(folder, "qwq_32b_*.json")
    cut = qwq.filter(pa.compute.invert(qwq.column("has_think_end")))
    assert cut.num_rows == 58
    assert flagged(verify(cut), "truncated") == 1.0
    r1_cut = load_real_traces(folder)
    r1_cut = r1_cut.filter(pa.compute.invert(r1_cut.column("has_think_end")))
    assert r1_cut.num_rows == 11
    assert flagged(verify(r1_cut), "truncated") == 1.0


def _trace(reasoning: str, response: str, finish: str | None = "stop") -> dict:
    return {
        "reasoning": reasoning,
        "response": response,
        "finish_reason": finish,
        "options": [{"label": x, "text": f"option {x}"} for x in "ABCD"],
        "answer_label": "B",
        "error": None,
    }


def _scored(rows: list[dict], settings: ScoreSettings | None = None) -> list[dict]:
    return score(verify(pa.Table.from_pylist(rows)), settings).to_pylist()


def test_quality_struct_and_score() -> None:
    good = "The patient has classic findings.\nSo the answer is B because of the history.\n" * 1 + "x" * 400
    rows = _scored([_trace(good, "<answer>B</answer>"), _trace(good, "", "length")])
    q = rows[0]["quality"]
    assert q["flags"] == [] and rows[0]["quality_score"] == 1.0
    assert q["reasoning_tokens"] == len(good.encode()) // 4
    assert q["conclusion_label"] == "B"
    assert rows[1]["quality"]["flags"][:2] == ["truncated", "no_answer"]
    assert rows[1]["quality_score"] == 0.0


def test_weights_are_documented_and_tunable() -> None:
    assert set(QUALITY_WEIGHTS) == set(FLAGS)
    reasoning = ("x" * 200 + "\n") + "So the answer is C.\n"
    default = _scored([_trace(reasoning, "B")])[0]
    assert default["quality"]["flags"] == ["conclusion_mismatch"]
    assert default["quality_score"] == pytest.approx(1 - QUALITY_WEIGHTS["conclusion_mismatch"])
    lenient = ScoreSettings(weights={**QUALITY_WEIGHTS, "conclusion_mismatch": 0.1})
    assert _scored([_trace(reasoning, "B")], lenient)[0]["quality_score"] == pytest.approx(0.9)


def test_flip_flop_and_hedging() -> None:
    flips = "".join(f"Maybe the answer is {x}. Hmm, no.\n" for x in "ABCD") + "y" * 300
    row = _scored([_trace(flips, "I cannot determine the answer from the information given.")])[0]
    assert row["quality"]["committed_letters"] == 4
    assert {"flip_flop", "hedging", "no_answer"} <= set(row["quality"]["flags"])


def test_select_drops_quality_rejects_with_their_flag() -> None:
    base = {"source": "medqa", "sample_idx": 0}
    rows = [
        {**_trace("z" * 200 + "\nSo the answer is B.", "<answer>B</answer>"), "id": "q1", **base},
        {
            **_trace(("Loop line that repeats itself.\n" * 5) + "So the answer is B.", "<answer>B</answer>"),
            "id": "q2",
            **base,
        },
        {**_trace("z" * 200 + "\nSo the answer is B.", "<answer>B</answer>"), "id": "q3", **base},
    ]
    table = score(verify(pa.Table.from_pylist(rows)))
    out = select(table, SelectSettings(min_quality=0.99, reject_flags=["repetition"]))
    assert out.column("drop_reason").to_pylist() == [None, "quality_repetition", None]
    lowered = ScoreSettings(weights={**QUALITY_WEIGHTS, "short_reasoning": 0.5})
    table = score(verify(pa.Table.from_pylist([{**rows[0], "reasoning": "B."}])), lowered)
    out = select(table, SelectSettings(min_quality=0.6, reject_flags=[]))
    assert out.column("drop_reason").to_pylist() == ["low_quality_score"]


@pytest.mark.parametrize("blank", ["", " \n\t", "\u00a0\u2003\u3000", "\r\n\u2028"])
def test_white_space_of_any_script_is_blank(blank: str) -> None:
    # A reasoning or response of white space only (Unicode White_Space, as str.strip_chars reads it) is empty.
    reasoning = "Findings fit.\nSo the answer is B.\n" + "y" * 200
    empty_reasoning, empty_response = _scored([_trace(blank, "B"), _trace(reasoning, blank)])
    assert "malformed" in empty_reasoning["quality"]["flags"]
    assert empty_response["quality"]["truncated"] and not empty_response["quality"]["malformed"]
    visible = _scored([_trace("\u200b" + reasoning, "B")])[0]  # a zero-width space is no white space
    assert not visible["quality"]["malformed"]


def test_loops_count_stripped_lines_of_the_minimum_length() -> None:
    line = "Check the renal function again before dosing."
    reasoning = "\n".join([line, f"  {line}\t", line, "short line", "short line", "short line", line]) + "\nanswer is B"
    q = _scored([_trace(reasoning, "B")], ScoreSettings(loop_line_chars=20))[0]["quality"]
    assert q["max_line_repeats"] == 4 and "repetition" in q["flags"]
    q = _scored([_trace(reasoning, "B")], ScoreSettings(loop_line_chars=5))[0]["quality"]
    assert q["max_line_repeats"] == 4
    assert _scored([_trace("x" * 10, "B")])[0]["quality"]["max_line_repeats"] == 0


def test_foreign_script_characters_are_counted_in_any_string_layout() -> None:
    # Hand-counted: 3 Han, 2 Cyrillic, 1 Hangul and 1 Arabic character; Greek, accents and symbols are not foreign.
    texts = ["渗透压 is high", "α-blocker, café, 5 µg → ≥2", "Привет 안 ب", None, "", "plain ASCII"]
    expected = [3, 0, 8, 0, 0, 0]
    rows = [_trace(f"{t}\nSo the answer is B.\n" if t is not None else None, "B") for t in texts]
    table = verify(pa.Table.from_pylist(rows))
    for layout in (pa.string(), pa.large_string(), pa.string_view()):
        typed = table.set_column(
            table.schema.get_field_index("reasoning"), "reasoning", table["reasoning"].cast(layout)
        )
        scored = score(typed).column("quality").to_pylist()
        assert [q["foreign_script_chars"] for q in scored] == expected, layout
    # A chunked and sliced column, scanned in windows smaller than one character, counts the same.
    column = pa.chunked_array([pa.array(texts[:2]), pa.array(texts[2:]).slice(0)]).cast(pa.large_string())
    for window in (1, 2, 5, 1 << 22):
        kept = non_ascii(column.slice(1), window_bytes=window).to_pylist()
        assert kept == ["αéµ→≥", "Привет안ب", "", "", ""]
