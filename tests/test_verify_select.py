"""Verification (`verify`) and selection (`select`, `drop_counts`, `unanswered_questions`) on hand-built tables."""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pytest

from medr1_data.answers import extract
from medr1_data.schema import OPTION
from medr1_data.select import DROP_REASONS, SelectSettings, drop_counts, select, unanswered_questions
from medr1_data.verify import _bare_labels, verify

OPTIONS = [
    {"label": "A", "text": "Acute pancreatitis"},
    {"label": "B", "text": "Perforated peptic ulcer"},
    {"label": "C", "text": "Acute mesenteric ischemia"},
    {"label": "D", "text": "Ruptured abdominal aortic aneurysm"},
]
PUBMEDQA = [{"label": "A", "text": "yes"}, {"label": "B", "text": "no"}, {"label": "C", "text": "maybe"}]


def row(
    qid: str,
    sample_idx: int,
    response: str | None,
    *,
    answer: str = "C",
    reasoning: str | None = "thinking",
    finish: str | None = "stop",
    error: str | None = None,
    options: list[dict] | None = None,
    source: str = "medqa",
) -> dict[str, Any]:
    return {
        "id": qid,
        "source": source,
        "options": options or OPTIONS,
        "answer_label": answer,
        "reasoning": reasoning,
        "response": response,
        "finish_reason": finish,
        "error": error,
        "sample_idx": sample_idx,
    }


SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("source", pa.string()),
        ("options", pa.list_(OPTION)),
        ("answer_label", pa.string()),
        ("reasoning", pa.string()),
        ("response", pa.string()),
        ("finish_reason", pa.string()),
        ("error", pa.string()),
        ("sample_idx", pa.int32()),
    ]
)


def table(rows: list[dict[str, Any]]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=SCHEMA)


def by_key(t: pa.Table, column: str) -> dict[tuple[str, int], Any]:
    d = t.to_pydict()
    return {(i, s): v for i, s, v in zip(d["id"], d["sample_idx"], d[column], strict=True)}


# ----------------------------------------------------------------------------------------------- verify


@pytest.mark.parametrize(
    ("kwargs", "pred", "correct", "reason"),
    [
        ({"response": "The answer is (C)."}, "C", True, "correct"),
        ({"response": "<answer>A</answer>"}, "A", False, "wrong_answer"),
        ({"response": "I am not sure."}, None, False, "no_answer"),
        (
            {"response": "", "reasoning": "Free air under the diaphragm. So the answer is B."},
            "B",
            False,
            "wrong_answer",
        ),
        ({"response": "", "reasoning": "So the answer is C."}, "C", True, "correct"),
        ({"response": "", "reasoning": "Hmm, lactate is", "finish": "length"}, None, False, "truncated"),
        ({"response": "", "reasoning": "So the answer is A. But", "finish": "length"}, "A", False, "truncated"),
        # A correct answer stated before the cut-off is still correct.
        ({"response": "", "reasoning": "So the answer is C. Let me double", "finish": "length"}, "C", True, "correct"),
        (
            {"response": None, "reasoning": None, "finish": None, "error": "HTTP 500 after 5 retries"},
            None,
            False,
            "request_failed",
        ),
        ({"response": "<answer>maybe</answer>", "options": PUBMEDQA, "answer": "C"}, "C", True, "correct"),
        ({"response": "The answer is no.", "options": PUBMEDQA, "answer": "A"}, "B", False, "wrong_answer"),
    ],
)
def test_verify_reason(kwargs: dict[str, Any], pred: str | None, correct: bool, reason: str) -> None:
    out = verify(table([row("q1", 0, **kwargs)]))
    assert out.column("pred_label").to_pylist() == [pred]
    assert out.column("is_correct").to_pylist() == [correct]
    assert out.column("verify_reason").to_pylist() == [reason]


def test_verify_adds_typed_columns_and_keeps_the_rest() -> None:
    rows = [row("q1", 0, "<answer>C</answer>"), row("q1", 1, "<answer>D</answer>"), row("q2", 0, "unsure")]
    t = table(rows)
    out = verify(t)
    assert out.num_rows == 3
    assert out.column_names == [*t.column_names, "pred_label", "is_correct", "verify_reason", "answer_source"]
    assert out.column("answer_source").to_pylist() == ["response", "response", None]
    assert out.schema.field("pred_label").type == pa.string()
    assert out.schema.field("is_correct").type == pa.bool_()
    assert out.schema.field("verify_reason").type == pa.string()
    assert out.select(t.column_names).equals(t)
    assert out.column("verify_reason").to_pylist() == ["correct", "wrong_answer", "no_answer"]


def test_verify_twice_replaces_its_columns() -> None:
    once = verify(table([row("q1", 0, "<answer>C</answer>")]))
    twice = verify(
        once.set_column(once.schema.get_field_index("response"), "response", pa.array(["<answer>B</answer>"]))
    )
    assert twice.column_names == once.column_names
    assert twice.column("verify_reason").to_pylist() == ["wrong_answer"]
    assert twice.column("pred_label").to_pylist() == ["B"]


# ----------------------------------------------------------------------------------------------- select


def verified(rows: list[dict[str, Any]]) -> pa.Table:
    return verify(table(rows))


MIXED = [
    # q1: two correct samples; sample 1 has the shorter reasoning and is kept.
    row("q1", 0, "<answer>C</answer>", reasoning="x" * 300),
    row("q1", 1, "<answer>C</answer>", reasoning="x" * 100),
    row("q1", 2, "<answer>A</answer>", reasoning="x" * 10),
    # q2: correct samples of equal length: the lower sample_idx wins.
    row("q2", 1, "The answer is C.", reasoning="y" * 50),
    row("q2", 0, "The answer is C.", reasoning="z" * 50),
    row("q2", 2, "I am not sure.", reasoning="w"),
    # q3: nothing correct.
    row("q3", 0, "<answer>B</answer>", source="medmcqa"),
    row("q3", 1, "", reasoning="Thinking about it", finish="length", source="medmcqa"),
    row("q3", 2, None, reasoning=None, finish=None, error="timeout", source="medmcqa"),
    # q4: one correct sample only.
    row("q4", 0, "<answer>maybe</answer>", options=PUBMEDQA, answer="C", source="pubmedqa"),
]


def test_select_best_keeps_one_correct_sample_per_question() -> None:
    t = verified(MIXED)
    out = select(t, SelectSettings(keep="best"))
    assert out.num_rows == t.num_rows  # no row is lost
    reasons = by_key(out, "drop_reason")
    assert reasons == {
        ("q1", 0): "extra_sample",
        ("q1", 1): None,
        ("q1", 2): "wrong_answer",
        ("q2", 1): "extra_sample",
        ("q2", 0): None,
        ("q2", 2): "no_answer",
        ("q3", 0): "wrong_answer",
        ("q3", 1): "truncated",
        ("q3", 2): "request_failed",
        ("q4", 0): None,
    }
    kept = [k for k, v in reasons.items() if v is None]
    assert sorted(q for q, _ in kept) == ["q1", "q2", "q4"]  # exactly one per answered question
    assert set(drop_counts(out)) <= set(DROP_REASONS)


def test_select_without_the_thinking_when_no_rule_reads_it() -> None:
    """One sample a question and thoughtless traces kept: the build's select does not read the thinking, and the
    drops are those made with it; where a rule needs the thinking, its absence is an error, not another answer."""
    t = verified([r for r in MIXED if r["sample_idx"] == 0])
    assert t.column("id").to_pylist() == ["q1", "q2", "q3", "q4"]
    with_text = select(t, SelectSettings())
    without = select(t.drop_columns(["reasoning"]), SelectSettings())
    assert without.column("drop_reason").to_pylist() == with_text.column("drop_reason").to_pylist()
    assert with_text.column("drop_reason").to_pylist() == [None, None, "wrong_answer", None]
    with pytest.raises(ValueError, match="the reasoning column is needed"):
        select(verified(MIXED).drop_columns(["reasoning"]), SelectSettings())
    with pytest.raises(ValueError, match="the reasoning column is needed"):
        select(t.drop_columns(["reasoning"]), SelectSettings(no_thinking="drop"))


def test_select_keeps_row_order_and_columns() -> None:
    t = verified(MIXED)
    out = select(t, SelectSettings())
    assert out.column_names == [*t.column_names, "drop_reason"]
    assert out.column("id").to_pylist() == t.column("id").to_pylist()
    assert out.column("sample_idx").to_pylist() == t.column("sample_idx").to_pylist()


def test_quality_score_ranks_before_length() -> None:
    t = verified(
        [row("q1", 0, "<answer>C</answer>", reasoning="x" * 500), row("q1", 1, "<answer>C</answer>", reasoning="x")]
    )
    t = t.append_column("quality_score", pa.array([0.9, 0.1]))
    out = select(t, SelectSettings())
    assert by_key(out, "drop_reason") == {("q1", 0): None, ("q1", 1): "extra_sample"}


@pytest.mark.parametrize(("limit", "kept"), [(1, {0}), (2, {0, 1}), (3, {0, 1, 2}), (5, {0, 1, 2})])
def test_select_all_correct_keeps_up_to_max_per_question(limit: int, kept: set[int]) -> None:
    rows = [row("q1", s, "<answer>C</answer>", reasoning="x" * (10 * (s + 1))) for s in range(3)]
    rows.append(row("q1", 3, "<answer>D</answer>", reasoning="x"))
    out = select(verified(rows), SelectSettings(keep="all_correct", max_per_question=limit))
    reasons = by_key(out, "drop_reason")
    assert {s for (_, s), v in reasons.items() if v is None} == kept
    assert reasons[("q1", 3)] == "wrong_answer"
    assert all(v == "extra_sample" for (_, s), v in reasons.items() if s < 3 and s not in kept)


def test_best_ignores_max_per_question() -> None:
    rows = [row("q1", s, "<answer>C</answer>") for s in range(3)]
    out = select(verified(rows), SelectSettings(keep="best", max_per_question=3))
    assert out.column("drop_reason").null_count == 1


def test_drop_truncated_controls_correct_traces_cut_at_the_limit() -> None:
    rows = [
        row("q1", 0, "", reasoning="Thinking about the lactate", finish="length"),
        row("q1", 1, "<answer>A</answer>"),
        row("q2", 0, "", reasoning="So the answer is C. Let me double", finish="length"),
        row("q2", 1, "", reasoning="Thinking more", finish="length"),
    ]
    t = verified(rows)
    strict = select(t, SelectSettings(drop_truncated=True))
    assert by_key(strict, "drop_reason") == {
        ("q1", 0): "truncated",
        ("q1", 1): "wrong_answer",
        ("q2", 0): "truncated",
        ("q2", 1): "truncated",
    }
    lenient = select(t, SelectSettings(drop_truncated=False))
    # Off, a trace cut at the limit is kept when its committed answer is right; without one it is still dropped.
    assert by_key(lenient, "drop_reason") == {
        ("q1", 0): "truncated",
        ("q1", 1): "wrong_answer",
        ("q2", 0): None,
        ("q2", 1): "truncated",
    }
    assert unanswered_questions(lenient).to_pylist() == [{"id": "q1", "source": "medqa"}]


def test_drop_truncated_false_prefers_a_correct_sample() -> None:
    rows = [
        row("q1", 0, "<answer>C</answer>", reasoning="x" * 400),
        row("q1", 1, "", reasoning="x" * 100, finish="length"),
    ]
    out = select(verified(rows), SelectSettings(drop_truncated=False))
    assert by_key(out, "drop_reason") == {("q1", 0): None, ("q1", 1): "truncated"}


def test_unanswered_questions_and_drop_counts() -> None:
    out = select(verified(MIXED), SelectSettings())
    un = unanswered_questions(out)
    assert un.column_names == ["id", "source"]
    assert un.to_pylist() == [{"id": "q3", "source": "medmcqa"}]
    counts = drop_counts(out)
    assert counts == {"extra_sample": 2, "no_answer": 1, "request_failed": 1, "truncated": 1, "wrong_answer": 2}
    dropped = out.num_rows - out.column("drop_reason").null_count
    assert sum(counts.values()) == dropped == 7


def test_unanswered_lists_each_question_once_sorted() -> None:
    rows = [
        row("q9", 0, "<answer>A</answer>", source="medqa"),
        row("q9", 1, "<answer>B</answer>", source="medqa"),
        row("q2", 0, "nothing", source="medmcqa"),
        row("q5", 0, "<answer>C</answer>"),
    ]
    out = select(verified(rows), SelectSettings())
    assert unanswered_questions(out).to_pylist() == [
        {"id": "q2", "source": "medmcqa"},
        {"id": "q9", "source": "medqa"},
    ]


def test_all_kept_gives_empty_counts() -> None:
    out = select(verified([row("q1", 0, "<answer>C</answer>"), row("q2", 0, "C")]), SelectSettings())
    assert drop_counts(out) == {}
    assert unanswered_questions(out).num_rows == 0
    assert out.column("drop_reason").null_count == 2


def test_columnar_answer_tags_agree_with_the_extractor() -> None:
    # The columnar path reads `<answer>X</answer>` alone; the extractor (`answers.extract`) is the reference.
    inner = [
        "C",
        " C ",
        "(C)",
        "**C**",
        "[C].",
        "_C_:",
        "C.",
        "E",
        "c",
        "C or D",
        "C, D",
        ").C",
        "C) ",
        "\u3000C\u2003",
    ]
    around = [
        "{}",
        "  {}\n",
        "<think>x</think>\n{}",
        "Thinking.</think>{}",
        "{} Because the lactate is high.",
        "**{}**",
    ]
    responses = [a.format(f"<answer>{x}</answer>") for x in inner for a in around] + [
        "<answer>C</answer><answer>D</answer>"
    ]
    rows = table([row(f"q{i}", 0, r) for i, r in enumerate(responses)])
    columnar = _bare_labels(rows).to_list()
    out = verify(rows)
    preds, sources = out.column("pred_label").to_pylist(), out.column("answer_source").to_pylist()
    for response, fast, pred, source in zip(responses, columnar, preds, sources, strict=True):
        found = extract(response, OPTIONS)
        assert fast in (None, found.label), response
        assert (pred, source) == (found.label, found.where if found.label else None), response
    # C alone or wrapped (9 of the inner forms), the tag alone in the first 4 ways around it: read columnar
    assert sum(f is not None for f in columnar) == 9 * 4
