"""The answer extractor (`medr1_data.answers`): which option a response committed to, and where it was found."""

from __future__ import annotations

import ast
import hashlib
import json
from typing import Any

import pytest

from medr1_data.answers import NO_FALLBACK, extract, final_part

from .conftest import FIXTURES, require_shared

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

ACS = [("A", "Enoxaparin"), ("B", "Warfarin"), ("C", "Clopidogrel"), ("D", "Alteplase")]
VITAMINS = [("A", "Vitamin A deficiency"), ("B", "Vitamin B12 deficiency"), ("C", "Vitamin C deficiency"),
            ("D", "Vitamin D deficiency")]  # fmt: skip
EYES = [("A", "Erythromycin ointment"), ("B", "Silver nitrate drops"), ("C", "Oral erythromycin"),
        ("D", "Intravenous ceftriaxone")]  # fmt: skip
CORPUS = FIXTURES / "answers" / "student_corpus.jsonl"
ADJUDICATED = FIXTURES / "answers" / "r1_adjudicated.json"
# The targets (16): on the held-out half of the student corpus, and on the real R1 completions.
HELDOUT_AGREEMENT, HELDOUT_FALSE_COMMITMENTS, R1_AGREEMENT = 0.97, 0.01, 0.995


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
        ("Thus, option C is the most likely.", "C", "is_correct"),
        ("Thus, among the options, (C) fits the presentation.", "C", "conclusion"),
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
        "Answer: a patient with this presentation needs a CT angiogram",
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


@pytest.mark.parametrize("response", ["D,F,G,I", "A and C", "(B) / (D)"])
def test_several_labels_commit_to_none(response: str) -> None:
    got = extract(response, TEN, "So the answer is D.")
    assert got.label is None and got.rule == "multiple_labels"


# ------------------------------------------------------------------------------------ what students write


@pytest.mark.parametrize(
    ("options", "response", "label"),
    [
        # committing sentences: the letter, the letter and the option text, the option text alone
        (MCQ, "The most likely diagnosis is A.", "A"),
        (MCQ, "The most likely diagnosis is A. Acute pancreatitis.", "A"),
        (EYES, "The most appropriate treatment is A. Erythromycin ointment.", "A"),
        (MCQ, "Given the lactate, the most appropriate next step is C, a CT angiogram.", "C"),
        (MCQ, "The most likely diagnosis in this patient is acute mesenteric ischemia, given the AF.", "C"),
        (MCQ, "The most likely diagnosis is a ruptured abdominal aortic aneurysm (D).", "D"),
        (VITAMINS, "The answer is vitamin C deficiency.", "C"),
        (VITAMINS, "The most likely diagnosis is Vitamin B12 deficiency (B).", "B"),
        (MCQ, "Based on the findings, the best answer is D.", "D"),
        # first person and "X is correct"
        (ACS, "I would choose C.", "C"),
        (ACS, "I'd go with option C, clopidogrel.", "C"),
        (ACS, "I would pick B. Warfarin is needed for the AF.", "B"),
        (ACS, "**Clopidogrel (C)** is the correct answer.", "C"),
        (ACS, "Clopidogrel is the most appropriate choice here.", "C"),
        # "X) text", "Answer - X" and lower-case letters
        (MCQ, "C) Acute mesenteric ischemia\n\nExplanation: embolus from the left atrium.", "C"),
        (MCQ, "**B) Perforated peptic ulcer**\n\nFree air under the diaphragm.", "B"),
        (MCQ, "Answer - B", "B"),
        (MCQ, "Answer - B. Perforated peptic ulcer", "B"),
        (MCQ, "Correct option: (b)", "B"),
        (MCQ, "ANSWER: d", "D"),
        (MCQ, "Answer: c", "C"),
        (MCQ, "Ans. is 'c' i.e., Acute mesenteric ischemia", "C"),
        # boxes and tags
        (MCQ, r"The final answer is $\boxed{C}$", "C"),
        (MCQ, r"\boxed{\textbf{C}}", "C"),
        (MCQ, r"\boxed{(C)}", "C"),
        (MCQ, r"\boxed{c}", "C"),
        (MCQ, r"\boxed{C. \text{Acute mesenteric ischemia}}", "C"),
        (MCQ, r"\boxed{\text{Acute mesenteric ischemia}}", "C"),
        (MCQ, "<answer> c </answer>", "C"),
        # HuatuoGPT-o1, m1, MedGemma: only the final part is read
        (MCQ, "## Thinking\n\nSo the answer is A.\n\n## Final Response\n\nThe most likely diagnosis is C.", "C"),
        (MCQ, "## Thinking\n\nHmm, B.\n\n## Final Response\n\nAcute mesenteric ischemia is the most likely.", "C"),
        (MCQ, "<|im_start|>think\nThe answer is B.\n<|im_start|>answer\nAnswer: D", "D"),
        (MCQ, "<unused94>thought\nThe answer is B.<unused95>**Answer: C**", "C"),
        # CJK
        (MCQ, "答案是C。", "C"),
        (MCQ, "根据症状,最可能的诊断是急性肠系膜缺血。\n\n答案：C", "C"),
        (MCQ, "正确答案为B", "B"),
        # PubMedQA words
        (PUBMEDQA, "No, the study did not show a benefit.", "B"),
        (PUBMEDQA, "**Yes**, mortality fell from 12% to 8%.", "A"),
        (PUBMEDQA, "Maybe. The effect disappeared after adjustment.", "C"),
        (PUBMEDQA, "Based on the abstract, the answer to the question is no.", "B"),
        (PUBMEDQA, r"\boxed{yes}", "A"),
        # the last commitment wins; explanations naming other options do not count
        (MCQ, "The answer is B) Perforated peptic ulcer. Actually, the free air is absent, so the answer is C.", "C"),
        (MCQ, "The correct answer is C.\n\nThe others are incorrect:\nA. Lipase is normal.\nB. No free air.", "C"),
        (MCQ, "A. Acute pancreatitis\nB. Perforated peptic ulcer\nC. Acute mesenteric ischemia\n\nAnswer: C", "C"),
        (MCQ, "The answer is A (pancreatitis), not B.", "A"),
        (MCQ, "The answer is not the ulcer (B). The correct answer is C.", "C"),
        # one option marked correct in a per-option list
        (MCQ, "A. Acute pancreatitis - Incorrect.\nB. Perforated peptic ulcer - Incorrect.\n"
              "C. Acute mesenteric ischemia - Correct.\nD. Ruptured abdominal aortic aneurysm - Incorrect.", "C"),
        # a short answer naming one option only
        (ACS, "The patient should be started on clopidogrel (C) in addition to aspirin.", "C"),
    ],
)  # fmt: skip
def test_student_styles(options: list[tuple[str, str]], response: str, label: str) -> None:
    got = extract(response, options)
    assert got.label == label, got
    assert got.where == "response"


@pytest.mark.parametrize(
    ("options", "response"),
    [
        # options pasted without a commitment: never the last one listed
        (ACS, "A. Enoxaparin\nC. Clopidogrel"),
        (ACS, "Enoxaparin\nClopidogrel"),
        (ACS, "The correct answer is:\n\nA. Enoxaparin\nB. Warfarin\nC. Clopidogrel\nD. Alteplase"),
        (ACS, "Question: which drug?\nA. Enoxaparin\nB. Warfarin\nC. Clopidogrel\nD. Alteplase\nAnswer:"),
        (ACS, "Enoxaparin, Warfarin, Clopidogrel, Alteplase"),
        # per-option analyses without a conclusion
        (MCQ, "* **A. Acute pancreatitis:** possible.\n* **B. Perforated peptic ulcer:** possible.\n"
              "* **C. Acute mesenteric ischemia:** possible with AF.\n* **D. Ruptured abdominal aortic aneurysm:** "
              "an emergency.\n\nPlease consult a physician."),
        # negations
        (MCQ, "Not B."),
        (MCQ, "The answer is not D."),
        (MCQ, "It's not A, and it's not D either."),
        (MCQ, "The correct answer is not A. Acute pancreatitis would raise the lipase."),
        # hedges between two options
        (MCQ, "The answer is B or C."),
        (MCQ, "The answer is either A or D."),
        (MCQ, "The most likely diagnosis is either B) Perforated peptic ulcer or C) Acute mesenteric ischemia."),
        (MCQ, "Both hyponatremia (C) and (D) fit, so the answer could be C or D."),
        (MCQ, r"\boxed{B \text{ or } C}"),
        (MCQ, r"\boxed{C, D}"),
        (MCQ, "<answer>B or A</answer>"),
        (MCQ, "Correct option: (b) and (c)"),
        (MCQ, "The answer is A, B, C or D, depending on the imaging."),
        (PUBMEDQA, "Yes and no: short-term outcomes improved, one-year outcomes did not."),
        # letters that are not options, articles and pronouns
        (MCQ, "The correct answer is E. Acute appendicitis."),
        (MCQ, "Answer: A patient with atrial fibrillation should go to hospital."),
        (TEN, "I think the patient needs rate control; I would discuss it with a cardiologist."),
        # no final part yet: thinking never closed, or HuatuoGPT's thinking without a final response
        (MCQ, "<think>The answer is B, but let me check the"),
        (MCQ, "## Thinking\n\nThe answer is B, but let me check the lactate"),
        (MCQ, "<|im_start|>think\nSo the answer is C"),
        (MCQ, r"\boxed{}"),
        (PUBMEDQA, "The study suggests an association; more research is needed."),
    ],
)  # fmt: skip
def test_commits_to_nothing(options: list[tuple[str, str]], response: str) -> None:
    assert extract(response, options).label is None


def test_option_list_is_not_credited_with_its_last_line() -> None:
    """The issue's case: a 135M model pasting two options is not "correct" because C comes last."""
    assert extract("A. Enoxaparin\nC. Clopidogrel", ACS) == (None, "none", "response")


@pytest.mark.parametrize("response", ["The answer is B or C.", r"\boxed{B \text{ or } C}", "D,F,G,I"])
def test_deciding_on_no_answer_does_not_fall_back_to_the_reasoning(response: str) -> None:
    from .test_verify_select import row, table

    got = extract(response, TEN, "So the answer is B.")
    assert got.label is None and got.rule in NO_FALLBACK
    from medr1_data.verify import verify

    out = verify(table([row("q", 0, response, reasoning="So the answer is B.", options=_dicts(TEN))]))
    assert out.column("pred_label").to_pylist() == [None]
    assert out.column("verify_reason").to_pylist() == ["no_answer"]


def _dicts(options: list[tuple[str, str]]) -> list[dict[str, str]]:
    return [{"label": lab, "text": text} for lab, text in options]


@pytest.mark.parametrize(
    ("response", "final"),
    [
        ("<think>a</think>b", "b"),
        ("<think>a</think>b</think>c", "c"),  # the last close tag counts
        ("<think>never closed", ""),
        ("## Thinking\nt\n## Final Response\nf", "\nf"),
        ("## Thinking\nstill thinking", ""),
        ("<|im_start|>think\nt\n<|im_start|>answer\nAnswer: C", "\nAnswer: C"),
        ("no thinking at all", "no thinking at all"),
    ],
)
def test_final_part(response: str, final: str) -> None:
    assert final_part(response) == final


# ------------------------------------------------------------------------------------ the labelled corpus


def _corpus() -> list[dict[str, Any]]:
    return [json.loads(line) for line in CORPUS.read_text(encoding="utf-8").splitlines() if line.strip()]


def _scores(rows: list[dict[str, Any]]) -> tuple[float, float, list[str]]:
    """Agreement, false commitments (a label where none is expected, over all rows) and the disagreeing ids."""
    got = [extract(r["response"], r["options"], r.get("reasoning")).label for r in rows]
    agree = sum(g == r["expected"] for g, r in zip(got, rows, strict=True))
    false = sum(g is not None and r["expected"] is None for g, r in zip(got, rows, strict=True))
    missed = [
        f"{r['id']}: got {g}, expected {r['expected']}" for g, r in zip(got, rows, strict=True) if g != r["expected"]
    ]
    return agree / len(rows), false / len(rows), missed


def test_corpus_is_large_varied_and_split_by_a_hash_of_the_id() -> None:
    rows = _corpus()
    assert len(rows) >= 300 and sum(r["expected"] is None for r in rows) >= 60
    assert len({r["id"] for r in rows}) == len(rows)
    for r in rows:
        parity = int(hashlib.sha256(r["id"].encode()).hexdigest()[:8], 16) % 2
        assert r["split"] == ("tune" if parity == 0 else "heldout"), r["id"]
        assert r["expected"] is None or r["expected"] in {o["label"] for o in r["options"]}, r["id"]
    halves = {s: [r for r in rows if r["split"] == s] for s in ("tune", "heldout")}
    assert all(len(h) >= 140 and sum(r["expected"] is None for r in h) >= 30 for h in halves.values())
    styles = " ".join(r["style"] for r in rows)
    for family in ("qwen2.5", "qwen3", "llama-3", "mistral", "gemma", "medgemma", "smollm", "huatuogpt-o1", "m1-",
                   "ii-medical", "deepseek-r1-distill"):  # fmt: skip
        assert family in styles, family


@pytest.mark.parametrize("split", ["tune", "heldout"])
def test_corpus_targets(split: str) -> None:
    """Held-out: the rules were never tuned on it. Both halves must meet the issue's targets."""
    agreement, false, missed = _scores([r for r in _corpus() if r["split"] == split])
    assert agreement >= HELDOUT_AGREEMENT, f"{split}: agreement {agreement:.1%}; {missed}"
    assert false <= HELDOUT_FALSE_COMMITMENTS, f"{split}: false commitments {false:.1%}; {missed}"


# ------------------------------------------------------------------------------------ real R1 completions


def test_real_deepseek_r1_traces() -> None:
    """The 851 real R1 completions with </think>: agreement with the files' labels, 14 of them read by hand."""
    traces = require_shared("traces")
    fixes = {(c["file"], c["index"]): c for c in json.loads(ADJUDICATED.read_text())["corrections"]}
    total = agree_file = agree_ref = 0
    misses: list[str] = []
    for path in sorted(traces.glob("deepseek_r1_*.json")):
        for n, row in enumerate(json.loads(path.read_text(encoding="utf-8"))):
            completion = row["completion"]
            if "</think>" not in completion:
                continue
            reasoning, _, response = completion.rpartition("</think>")
            if (fix := fixes.get((path.name, n))) is not None:  # the fixture describes the file as it is
                assert (response.strip(), row["predicted_answer"]) == (fix["response"], fix["file_label"])
            reference = fix["label"] if fix else row["predicted_answer"]
            options = row["options"] if isinstance(row["options"], dict) else ast.literal_eval(row["options"])
            label = extract(response, list(options.items()), reasoning).label
            total += 1
            agree_file += label == row["predicted_answer"]
            agree_ref += label == reference
            if label != reference:
                misses.append(f"{path.name}[{n}]: {label} vs {reference}: {response[-120:]!r}")
    assert total == 851
    assert agree_ref / total >= R1_AGREEMENT, f"agreement {agree_ref}/{total}: {misses[:5]}"
    # The 14 corrections are the only disagreements with the files' own parser.
    assert agree_file == total - len(fixes), misses[:5]
