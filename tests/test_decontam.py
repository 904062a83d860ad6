"""Decontamination: canonicalisation, output columns and report, and recall/false positives on the real test sets.

The real-data tests disguise 1,000 real test items per kind (fixed seed) from the four benchmarks in ../shared/data
(HEAD-QA's test file is not there) and check recall >= 0.98 per kind; the clean hard negatives are MedXpertQA and
MedExpQA minus the 77 MedXpertQA rows that really overlap MedQA (tests/disguise.py says how they were found), and
at most 0.1% of them may be flagged. The thresholds under test live in `DecontamSettings`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from medr1_data.benchmarks import load_benchmark
from medr1_data.decontam import OUT_FIELDS, RULES, BenchmarkIndex, DecontamSettings, build_index, decontaminate
from medr1_data.normalize import canon_option, canon_stem, canon_stem_expr, canonical_frame
from medr1_data.schema import QUESTION_SCHEMA
from tests.conftest import SHARED_DATA
from tests.disguise import KINDS, MEDXPERTQA_OVERLAPS, common_words, disguised_rows, load_sets

PER_KIND = 1000
SEED = 20240601
MIN_RECALL = 0.98
MAX_FP_RATE = 0.001


def row(qid: str, question: str, options: list[str], answer: str = "A", **extra: Any) -> dict[str, Any]:
    """A canonical question row."""
    return {
        "id": f"src/train/{qid}",
        "source": "src",
        "source_split": "train",
        "source_id": qid,
        "question": question,
        "options": [{"label": "ABCDEFGHIJ"[k], "text": t} for k, t in enumerate(options)],
        "answer_label": answer,
        "context": extra.pop("context", None),
        "meta": "{}",
        "license": "test",
        **extra,
    }


def table(rows: list[dict[str, Any]]) -> pa.Table:
    """Rows as a table with the canonical schema (extra keys become extra columns)."""
    extra = [k for k in rows[0] if k not in QUESTION_SCHEMA.names]
    base = pa.Table.from_pylist([{k: r[k] for k in QUESTION_SCHEMA.names} for r in rows], schema=QUESTION_SCHEMA)
    for k in extra:
        base = base.append_column(k, pa.array([r[k] for r in rows]))
    return base


BENCH = [
    row(
        "b1",
        "Drug of choice for syphilis in pregnancy is:",
        ["Penicillin", "Doxycycline", "Erythromycin", "Ceftriaxone"],
    ),
    row(
        "b2",
        "A 45-year-old man comes to the physician because of a 2-week history of fatigue and jaundice. "
        "Serum bilirubin is 4.2 mg/dL. Which of the following is the most likely diagnosis?",
        ["Gilbert syndrome", "Hemolytic anemia", "Choledocholithiasis", "Hepatitis A"],
        "C",
    ),
    row("b3", "Which of the following is true?", ["Alpha", "Beta", "Gamma", "Delta"], "B"),
]
# Filler items so that word weights look like a real benchmark's: common words common, topic words rare.
FILLER = [
    row(
        f"f{k}",
        f"Which of the following is the most likely cause of finding {k} in this patient?",
        [f"cause {k}{x}" for x in "abcd"],
    )
    for k in range(40)
]


def small_index() -> BenchmarkIndex:
    """An index of three hand-made benchmark items and 40 fillers."""
    return build_index([("toy_test", table(BENCH + FILLER))], DecontamSettings())


# --- canonicalisation -------------------------------------------------------------------------------------------


def test_canonical_stem_strips_wrappers_inline_options_case_and_punctuation() -> None:
    wrapped = (
        "Answer the following USMLE question. Think step by step.\n\nA 45-year-old man has 1,000 mg/dL.\n"
        "Answer Choices: (A) foo (B) bar"
    )
    assert canon_stem(wrapped) == "a 45 year old man has 1000 mg dl"
    assert (
        canon_stem("Q: DRUG of choice,  for Syphilis?\nA: Let's think step by step.") == "drug of choice for syphilis"
    )
    assert canon_stem("Regimen of placenta previa:") == "regimen of placenta previa"  # not an "A:" cue
    assert canon_option("(b) Penicillin G.") == "penicillin g"
    texts = [wrapped, "You are a doctor. Question: Na+/K+ ATPase,  (µg)\nA. x\nB. y", "Which of the following is true?"]
    as_expr = pl.DataFrame({"q": texts}).select(canon_stem_expr(pl.col("q"))).to_series().to_list()
    assert as_expr == [canon_stem(t) for t in texts]


def test_canonical_frame_has_stem_options_answer_and_context() -> None:
    frame = canonical_frame(
        table([BENCH[0], row("p", "Is it?", ["yes", "no", "maybe"], "B", context="Some abstract.")])
    )
    assert frame.columns == ["stem", "ctx", "opts", "answer"]
    assert frame["opts"].to_list()[0] == ["penicillin", "doxycycline", "erythromycin", "ceftriaxone"]
    assert frame["answer"].to_list() == ["penicillin", "no"]
    assert frame["ctx"].to_list() == ["", "some abstract"]


# --- output columns, order, report ------------------------------------------------------------------------------


def test_columns_order_extra_columns_and_report() -> None:
    rows = [
        row(
            "r1", "drug of choice for SYPHILIS in pregnancy is", ["Ceftriaxone", "Penicillin", "Doxycycline", "X"], "B"
        ),
        row("r2", "What is the capital of France?", ["Paris", "Rome", "Oslo", "Bern"], note="keep me"),
        row("r3", "Answer this: " + BENCH[1]["question"], [o["text"] for o in BENCH[1]["options"]], "C"),
    ]
    rows[0]["note"] = rows[2]["note"] = "x"
    out, report = decontaminate(table(rows), [("toy_test", table(BENCH + FILLER))])
    assert out.column_names == [*QUESTION_SCHEMA.names, "note", *(f.name for f in OUT_FIELDS)]
    assert out.column("id").to_pylist() == [r["id"] for r in rows]
    assert out.column("note").to_pylist() == ["x", "keep me", "x"]
    for f in OUT_FIELDS:
        assert out.schema.field(f.name).type == f.type
    got = out.select(["contaminated", "contam_benchmark", "contam_item_id", "contam_rule"]).to_pylist()
    assert got[0] == {
        "contaminated": True,
        "contam_benchmark": "toy_test",
        "contam_item_id": "b1",
        "contam_rule": "stem_exact",
    }
    assert got[1] == {"contaminated": False, "contam_benchmark": None, "contam_item_id": None, "contam_rule": None}
    assert got[2]["contam_item_id"] == "b2"
    scores = out.column("contam_score").to_pylist()
    assert scores[1] is None and all(0 < s <= 1 for s in (scores[0], scores[2]))
    json.dumps(report)  # JSON-able
    assert report["benchmarks"]["toy_test"]["items_indexed"] == 43
    assert report["benchmarks"]["toy_test"]["rows_flagged"] == 2
    assert sum(report["benchmarks"]["toy_test"]["by_rule"].values()) == 2
    assert report["rows"] == 3 and report["rows_flagged"] == 2
    assert report["parameters"] == DecontamSettings().to_dict()
    assert report["elapsed_seconds"] >= 0 and set(report["by_rule"]) <= set(RULES)


def test_trace_rows_share_their_question_verdict() -> None:
    rows = [BENCH[0] | {"id": "q/1"}, BENCH[0] | {"id": "q/1"}, row("other", "Unrelated stem words here", ["a", "b"])]
    out, report = decontaminate(table(rows), small_index())
    assert out.column("contaminated").to_pylist() == [True, True, False]
    assert report["questions_checked"] == 2 and report["rows"] == 3


def test_boilerplate_and_shared_option_sets_do_not_flag_clean_rows() -> None:
    clean = [
        # shares the USMLE ending "which of the following is the most likely diagnosis" (an 8-gram) and nothing else
        row(
            "c1",
            "A 30-year-old woman has a rash on both cheeks after sun exposure. "
            "Which of the following is the most likely diagnosis?",
            ["Lupus", "Rosacea", "Eczema", "Psoriasis"],
        ),
        # the same generic stem as a benchmark item, other options
        row("c2", "Which of the following is true?", ["One", "Two", "Three", "Four"]),
        # a different question about the same drug, different options
        row(
            "c3", "Drug of choice for malaria in pregnancy is:", ["Chloroquine", "Primaquine", "Quinine", "Tafenoquine"]
        ),
    ]
    out, _ = decontaminate(table(clean), small_index())
    assert out.column("contaminated").to_pylist() == [False, False, False]


def test_short_stems_are_caught_where_an_8gram_check_cannot() -> None:
    # Stems under 8 words (27% of MedMCQA) shuffled, relabelled, stem only, or options only with a new stem.
    rows = [
        row(
            "s1",
            "Drug of choice for syphilis in pregnancy is",
            ["Doxycycline", "Ceftriaxone", "Penicillin", "Erythromycin"],
            "C",
        ),
        row("s2", "DRUG OF CHOICE for syphilis in pregnancy ???", []),
        row(
            "s3",
            "Pick the right answer about syphilis.",
            ["Erythromycin", "Penicillin", "Ceftriaxone", "Doxycycline"],
            "B",
        ),
    ]
    rows[1]["answer_label"] = ""
    out, _ = decontaminate(table(rows), small_index())
    assert out.column("contaminated").to_pylist() == [True, True, True]
    assert out.column("contam_item_id").to_pylist() == ["b1", "b1", "b1"]


def test_empty_inputs() -> None:
    out, report = decontaminate(QUESTION_SCHEMA.empty_table(), small_index())
    assert out.num_rows == 0 and "contaminated" in out.column_names and report["rows_flagged"] == 0
    out, report = decontaminate(table([BENCH[0]]), [])
    assert out.column("contaminated").to_pylist() == [False] and report["items_indexed"] == 0


# --- real benchmark test sets -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real() -> dict[str, Any]:
    """Index of the four available benchmarks, 1,000 disguised copies per kind, the clean hard negatives; checked."""
    if not (SHARED_DATA / "benchmarks").is_dir():
        pytest.skip(f"real reference data not found at {SHARED_DATA} (present in CI, absent in a user's clone)")
    targets, negatives = load_sets(SHARED_DATA / "benchmarks")
    index = build_index(targets, DecontamSettings())
    common = common_words(
        [r["question"] for _, t in targets for r in t.to_pylist()] + [r["question"] for r in negatives]
    )
    rows, truth = disguised_rows(targets, PER_KIND, SEED, common)
    dirty, _ = decontaminate(pa.Table.from_pylist(rows, schema=QUESTION_SCHEMA), index)
    clean, _ = decontaminate(pa.Table.from_pylist(negatives, schema=QUESTION_SCHEMA), index)
    return {"index": index, "truth": truth, "dirty": dirty, "clean": clean, "negatives": negatives}


@pytest.mark.parametrize("kind", KINDS)
def test_recall_per_disguise_kind(real: dict[str, Any], kind: str) -> None:
    got = real["dirty"].select(["contaminated", "contam_benchmark"]).to_pylist()
    mine = [(g, t) for g, t in zip(got, real["truth"], strict=True) if t[0] == kind]
    assert len(mine) == PER_KIND
    recall = sum(g["contaminated"] for g, _ in mine) / len(mine)
    right_bench = sum(g["contam_benchmark"] == t[1] for g, t in mine) / len(mine)
    assert recall >= MIN_RECALL, f"{kind}: recall {recall:.4f}"
    assert right_bench >= MIN_RECALL - 0.01, f"{kind}: matched the right benchmark for {right_bench:.4f}"


def test_clean_hard_negatives_are_rarely_flagged(real: dict[str, Any]) -> None:
    clean = real["clean"]
    assert clean.num_rows == 1861 + 589 + 935 - len(MEDXPERTQA_OVERLAPS)
    flagged = clean.filter(clean.column("contaminated"))
    rate = flagged.num_rows / clean.num_rows
    assert rate <= MAX_FP_RATE, (
        f"{flagged.num_rows} flagged: {flagged.select(['source_id', 'contam_item_id']).to_pylist()}"
    )


def test_medxpertqa_rewrites_of_medqa_are_flagged_as_such(real: dict[str, Any], shared_data: Path) -> None:
    # Real overlaps (same patient, rewritten vignette, 10 options): flagging them is right, and names the MedQA item.
    found = []
    for name in ("medxpertqa_r_test", "medxpertqa_u_test"):
        loaded = load_benchmark(name, shared_data / "benchmarks")[1].table
        found.append(loaded.filter(pc.is_in(loaded["source_id"], pa.array(list(MEDXPERTQA_OVERLAPS)))))
    overlaps = pa.concat_tables(found)
    assert overlaps.num_rows == len(MEDXPERTQA_OVERLAPS)
    out, _ = decontaminate(overlaps, real["index"])
    hits = out.filter(out.column("contaminated")).select(["source_id", "contam_item_id"]).to_pylist()
    assert len(hits) >= 0.8 * overlaps.num_rows
    assert all(MEDXPERTQA_OVERLAPS[h["source_id"]] == h["contam_item_id"] for h in hits)
