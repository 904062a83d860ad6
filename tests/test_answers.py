"""The answer extractor (`medr1_data.answers`): which option a response committed to, and where it was found."""

from __future__ import annotations

import ast
import json
from pathlib import Path
from typing import Any

import pytest

from medr1_data.answers import after_thinking, extract

MCQ = [
    ("A", "Acute pancreatitis"),
    ("B", "Perforated peptic ulcer"),
    ("C", "Acute mesenteric ischemia"),
    ("D", "Ruptured abdominal aortic aneurysm"),
]
# The same options in the table form the pipeline stores (list of {label, text}).
MCQ_DICTS = [{"label": lab, "text": text} for lab, text in MCQ]
TEN = [
    ("A", "Prospective cohort study"),
    ("B", "Retrospective cohort study"),
    ("C", "Network meta-analysis"),
    ("D", "Pragmatic trial"),
    ("E", "Observational cohort study"),
    ("F", "Case-control study"),
    ("G", "Real-world evidence study"),
    ("H", "Randomized controlled trial"),
    ("I", "Cross-sectional study"),
    ("J", "Meta-analysis"),
]
PUBMEDQA = [("A", "yes"), ("B", "no"), ("C", "maybe")]

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def extract_label(response: str | None, options: Any, reasoning: str | None = None) -> str | None:
    return extract(response, options, reasoning).label


@pytest.mark.parametrize(
    ("response", "label", "rule"),
    [
        ("<answer>C</answer>", "C", "answer_tag"),
        ("The findings fit mesenteric ischemia.\n\n<answer> C </answer>", "C", "answer_tag"),
        (r"\boxed{C}", "C", "boxed"),
        (r"The final answer is $\boxed{\text{C}}$", "C", "boxed"),
        ("The answer is (C).", "C", "answer_is"),
        ("**Answer: C**", "C", "answer_is"),
        ("Answer: C", "C", "answer_is"),
        ("Given pain out of proportion to the exam, the correct answer is **B**.", "B", "answer_is"),
        ("The correct option is D", "D", "answer_is"),
        ("Answer: (C) Acute mesenteric ischemia", "C", "answer_is"),
        ("Therefore, (D) is the best choice.", "D", "is_correct"),
        ("C", "C", "bare_label"),
        ("**C**", "C", "bare_label"),
        ("(C)", "C", "bare_label"),
        ("C.", "C", "bare_label"),
        ("Atrial fibrillation is an embolic source.\n\nC", "C", "bare_label"),
        # An option's text alone on the last line (or as the whole response).
        ("Pain out of proportion to the exam in a patient with AF.\nAcute mesenteric ischemia", "C", "option_text"),
        ("Ruptured abdominal aortic aneurysm.", "D", "option_text"),
        # "<label>: <text>" and its variants are matched by the option-text rule.
        ("C: Acute mesenteric ischemia", "C", "option_text"),
        ("C. Acute mesenteric ischemia", "C", "option_text"),
        ("C) Acute mesenteric ischemia", "C", "option_text"),
        ("Embolus from the left atrium.\n**C. Acute mesenteric ischemia**", "C", "option_text"),
        ("Thus, option C is the most likely.", "C", "conclusion"),
    ],
)
def test_four_options(response: str, label: str, rule: str) -> None:
    got = extract(response, MCQ)
    assert got == (label, rule, "response")
    assert extract(response, MCQ_DICTS) == got  # {label, text} dicts and (label, text) pairs are the same
    assert extract_label(response, MCQ) == label


@pytest.mark.parametrize(
    ("response", "label"),
    [
        ("<answer>J</answer>", "J"),
        ("The answer is (H).", "H"),
        ("**Answer: I**", "I"),
        ("**I**", "I"),
        (r"\boxed{F}", "F"),
        ("Case-control study", "F"),
        ("I am not sure.", None),  # the pronoun is not option I
        ("I would go with the answer (H).", "H"),
        ("<answer>K</answer>", None),  # not an option
    ],
)
def test_ten_options(response: str, label: str | None) -> None:
    assert extract_label(response, TEN) == label


def test_pronoun_i_after_answer_is_not_option_i() -> None:
    assert extract_label("Final answer: I think it is D.", TEN) == "D"


@pytest.mark.parametrize(
    ("response", "label"),
    [
        ("<answer>maybe</answer>", "C"),
        ("<answer>Yes</answer>", "A"),
        ("The answer is no.", "B"),
        ("The answer is: **no**", "B"),
        ("The evidence from the trial supports it. The answer is yes", "A"),
        ("Maybe.", "C"),
        ("no", "B"),
        ("<answer>B</answer>", "B"),
        ("The data are not conclusive.", None),  # "not" is not "no"
        ("I am not sure.", None),
    ],
)
def test_pubmedqa_words(response: str, label: str | None) -> None:
    assert extract_label(response, PUBMEDQA) == label


@pytest.mark.parametrize(
    "response",
    [
        "I am not sure.",
        "",
        "   \n ",
        "This is a patient with a history of alcohol use.",
        "In a patient with pain, a CT angiogram is done first.",
        "the answer is a",  # lowercase a is a word, not option A
        "Answer: c",
        "A patient with this presentation needs a CT angiogram.",
        # Letters that are not options (E, F with options A-D) are never returned.
        "The answer is E.",
        "<answer>E</answer>",
        r"\boxed{F}",
        "E",
        "**E**",
    ],
)
def test_no_answer(response: str) -> None:
    got = extract(response, MCQ)
    assert got.label is None
    assert got.rule == "none"
    assert got.where == ("response" if response.strip() else "empty")


def test_none_response_and_reasoning() -> None:
    assert extract(None, MCQ, None) == (None, "none", "empty")


def test_non_option_letter_does_not_replace_an_earlier_option() -> None:
    assert extract_label("The answer is B. (The answer is E in the 5-option version.)", MCQ) == "B"


@pytest.mark.parametrize(
    ("response", "label"),
    [
        ("The answer is A. Bowel sounds are preserved, though. Wait, on reflection the answer is B.", "B"),
        ("<answer>A</answer>\n... reconsidering the free air ...\n<answer>B</answer>", "B"),
        (r"\boxed{A} at first, but the lactate makes it \boxed{C}", "C"),
        ("Answer: D\nAnswer: C", "C"),
    ],
)
def test_last_committed_answer_wins(response: str, label: str) -> None:
    assert extract_label(response, MCQ) == label


def test_last_commitment_wins_across_rules() -> None:
    assert extract_label("The answer is A.\nWait, on reflection, (B) is the correct answer.", MCQ) == "B"


def test_response_beats_reasoning() -> None:
    reasoning = "Epigastric pain radiating to the back... so the answer is A. Hmm, but the AF."
    got = extract("<answer>D</answer>", MCQ, reasoning)
    assert got == ("D", "answer_tag", "response")


@pytest.mark.parametrize("response", ["", None, "   "])
def test_fallback_to_reasoning_when_response_is_empty(response: str | None) -> None:
    reasoning = "Pain out of proportion... free air under the diaphragm on the upright film. So the answer is B."
    assert extract(response, MCQ, reasoning) == ("B", "answer_is", "reasoning")


def test_fallback_to_reasoning_uses_its_last_statement() -> None:
    reasoning = "At first the answer is A. Then the lipase is normal.\nSo the answer is B."
    assert extract("", MCQ, reasoning).label == "B"


def test_reasoning_without_statement_gives_none() -> None:
    got = extract("", MCQ, "I keep going back and forth between A and B here.")
    assert got == (None, "none", "empty")


def test_after_thinking() -> None:
    assert after_thinking("<think>the answer is A</think>\n<answer>D</answer>") == "\n<answer>D</answer>"
    assert after_thinking("no tags at all") == "no tags at all"
    assert after_thinking("<think>a</think>b</think>c") == "c"  # the last close tag counts


@pytest.mark.parametrize(
    ("response", "label"),
    [
        ("<think>Lipase is high, so the answer is A.</think>\n<answer>D</answer>", "D"),
        ("<think>So the answer is A.</think>\nI cannot decide.", None),
        ("Lipase first. So the answer is A.</think>\nThe answer is (C).", "C"),  # pre-filled opening tag
    ],
)
def test_inline_thinking_in_response_is_ignored(response: str, label: str | None) -> None:
    got = extract(response, MCQ)
    assert got.label == label
    assert got.where == "response"


def _options(raw: object) -> dict[str, str]:
    return ast.literal_eval(raw) if isinstance(raw, str) else raw  # type: ignore[return-value]


def test_real_deepseek_r1_traces() -> None:
    files = sorted((DATA / "traces").glob("deepseek_r1_*.json"))
    if not files:
        pytest.skip(f"real DeepSeek-R1 traces not found under {DATA / 'traces'} (a fresh checkout has none)")
    total = labelled = agree = 0
    misses: list[str] = []
    for path in files:
        for n, row in enumerate(json.loads(path.read_text(encoding="utf-8"))):
            completion = row["completion"]
            if "</think>" not in completion:
                continue
            reasoning, _, response = completion.rpartition("</think>")
            options = _options(row["options"])
            label = extract_label(response, list(options.items()), reasoning)
            total += 1
            labelled += label is not None
            agree += label == row["predicted_answer"]
            if label is None:
                misses.append(f"{path.name}[{n}]: {response[-120:]!r}")
    assert total >= 800, f"expected the 851 completions with </think>, found {total}"
    assert labelled / total >= 0.99, f"no label on {total - labelled}/{total}: {misses[:5]}"
    assert agree / total >= 0.97, f"agreement with predicted_answer {agree}/{total}"


@pytest.mark.parametrize("response", ["D,F,G,I", "A and C", "(B) / (D)"])
def test_several_labels_commit_to_none(response: str) -> None:
    got = extract(response, TEN, "So the answer is D.")
    assert got.label is None and got.rule == "multiple_labels"
