"""Decontamination: canonicalisation, rules, natural item ids, determinism, and recall/false positives out of sample.

The real-data tests use the four benchmarks in ../shared/data (HEAD-QA's test file is not there): 1,000 real test
items per disguise kind (fixed seed) must be flagged (recall >= 0.98 per kind; `new_options` is bounded by the share
of distinctive stems, `options_unrelated` is informative). The kinds and the real clean hard negatives are split into
a tuning part, on which the thresholds of `DecontamSettings` were set, and a held-out part, only measured
(tests/disguise.py, `TUNING_*` / `HELDOUT_*`). Tuning: MedXpertQA (its 77 rows that really are MedQA test cases set
aside) and MMLU dev (its 5 rows equal to test rows set aside), and the kinds that reword or cut the stem, or change
the options (verbatim, shuffle, options_only, truncated, synonyms, new_options), and pairs of different benchmark
items with the same options (the generic sets). Held-out: MedExpQA (another exam), PubMedQA's 500 non-test abstracts
(another question type), MMLU-Pro's 47 rows from MMLU subjects that are no target and the 80 Medbullets vignettes of
the R1 trace file (another question bank; its 4 rewrites of MedQA cases set aside as real copies); the kinds that
change only the stem's form (recase, stem_only, wrapped, reordered) and the options under an unrelated stem. At most
0.05% of either part's negatives may be flagged (1,562 held-out rows: none).
"""

from __future__ import annotations

import csv
import json
import os
import random
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from medr1_data.decontam import OUT_FIELDS, RULES, BenchmarkIndex, DecontamSettings, build_index, decontaminate
from medr1_data.normalize import canon_option, canon_stem, canon_stem_expr, canonical_frame
from medr1_data.schema import QUESTION_SCHEMA
from medr1_data.sources import load
from tests.conftest import FIXTURES, ROOT, SHARED_DATA, require_shared
from tests.disguise import (
    HELDOUT_KINDS,
    HELDOUT_NEGATIVES,
    KINDS,
    MEDXPERTQA_OVERLAPS,
    TUNING_KINDS,
    TUNING_NEGATIVES,
    common_words,
    disguise,
    disguised_rows,
    load_sets,
    real_sets,
)

PER_KIND = 1000
SEED = 20240601
MIN_RECALL = 0.98
MIN_RECALL_NEW_OPTIONS = 0.75  # 27% of MedMCQA stems have < 8 words: only distinctive stems flag under other options
MAX_FP_RATE = 0.0005


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


# --- the stem_distinctive rule, ties, natural ids, determinism ----------------------------------------------------

ANEMIA = row(
    "b4",
    "Which of the following is the most likely cause of anemia in this patient?",  # 13 words, boilerplate but one
    ["Iron deficiency", "Vitamin B12 deficiency", "Folate deficiency", "Lead poisoning"],
)
SHORT = row(
    "b5", "GNAS 1 gene mutation is associated with:", ["Fibrous dysplasia", "Osteopetrosis", "Rickets", "Paget"]
)
OTHER_OPTIONS = ["Aspirin", "Insulin", "Warfarin", "Heparin"]


def test_a_distinctive_stem_flags_whatever_its_options_and_a_boilerplate_or_short_one_does_not() -> None:
    index = build_index([("toy_test", table(BENCH + FILLER + [ANEMIA, SHORT]))], DecontamSettings())
    rows = [
        row("d1", BENCH[1]["question"], OTHER_OPTIONS),  # the vignette under other options
        row("d2", "Answer the following question: " + BENCH[1]["question"].upper(), OTHER_OPTIONS[:3]),
        row("d3", BENCH[1]["question"], []),  # no options at all: stem_exact, as before
        row("n1", ANEMIA["question"], OTHER_OPTIONS),  # boilerplate stem (one topic word) under other options
        row("n2", SHORT["question"], OTHER_OPTIONS),  # a 7-word stem (MedMCQA has such) under other options
        row("n3", ANEMIA["question"], [o["text"] for o in ANEMIA["options"]][::-1], "D"),  # ... under its own options
    ]
    rows[2]["answer_label"] = ""
    out, report = decontaminate(table(rows), index)
    got = out.select(["contaminated", "contam_item_id", "contam_rule"]).to_pylist()
    assert [g["contam_rule"] for g in got[:3]] == ["stem_distinctive", "stem_distinctive", "stem_exact"]
    assert [g["contam_item_id"] for g in got[:3]] == ["b2", "b2", "b2"]
    assert [g["contaminated"] for g in got[3:]] == [False, False, True]
    assert got[5]["contam_item_id"] == "b4"
    assert report["by_rule"]["stem_distinctive"] == 2


def test_tied_items_report_the_lowest_natural_id() -> None:
    same = BENCH[1]
    ties = [same | {"source_id": sid} for sid in ("b10", "b9", "b12")]
    mmlu = [BENCH[0] | {"source_id": "x", "meta": json.dumps({"item_id": f"anatomy/{r}"})} for r in (10, 9, 11)]
    index = build_index([("toy_test", table(ties + mmlu + FILLER))], DecontamSettings())
    out, _ = decontaminate(table([row("r1", same["question"], []), row("r2", BENCH[0]["question"], [])]), index)
    assert out.column("contam_item_id").to_pylist() == ["b9", "anatomy/9"]


def test_natural_item_ids_from_the_native_files() -> None:
    # MedQA: 0-based line of the jsonl file; MMLU: `<subject>/<row>` of the subject's CSV. Expected ids read here.
    folder = FIXTURES / "sources"
    medqa = load(f"medqa={folder / 'medqa'}", "train").table
    mmlu = load(f"mmlu_medical={folder / 'mmlu_medical'}", "dev").table
    rows, expected = [], []
    for line_no, line in enumerate((folder / "medqa" / "train.jsonl").read_text(encoding="utf-8").splitlines()):
        raw = json.loads(line)
        rows.append(row(f"q{line_no}", raw["question"], list(raw["options"].values()), raw["answer_idx"]))
        expected.append(str(line_no))
    for file in sorted((folder / "mmlu_medical").glob("*_dev.csv")):
        for r, cells in enumerate(csv.reader(file.open(encoding="utf-8"))):
            rows.append(row(f"{file.stem}{r}", cells[0], cells[1:-1], cells[-1]))
            expected.append(f"{file.stem.removesuffix('_dev')}/{r}")
    out, _ = decontaminate(table(rows), [("medqa_x", medqa), ("mmlu_x", mmlu)])
    assert out.column("contam_item_id").to_pylist() == expected
    assert out.column("contam_benchmark").to_pylist() == ["medqa_x"] * 3 + ["mmlu_x"] * 3


def test_hub_copies_give_the_same_natural_ids(tmp_path: Path) -> None:
    folder = FIXTURES / "sources"
    medqa_rows = [json.loads(x) for x in (folder / "medqa" / "train.jsonl").read_text(encoding="utf-8").splitlines()]
    mmlu_rows = [
        {"question": c[0], "subject": f.stem.removesuffix("_dev"), "choices": c[1:5], "answer": "ABCD".index(c[5])}
        for f in sorted((folder / "mmlu_medical").glob("*_dev.csv"))
        for c in csv.reader(f.open(encoding="utf-8"))
    ]
    for name, split, hub_rows in (("medqa", "train", medqa_rows), ("mmlu_medical", "dev", mmlu_rows)):
        hub_file = tmp_path / name / f"{split}-00000-of-00001.parquet"
        hub_file.parent.mkdir()
        pq.write_table(pa.Table.from_pylist(hub_rows), hub_file)
        native, hub = load(f"{name}={folder / name}", split).table, load(f"{name}={hub_file}", split).table
        ids = [[json.loads(m)["item_id"] for m in t.column("meta").to_pylist()] for t in (native, hub)]
        assert ids[0] == ids[1] and len(set(ids[0])) == native.num_rows


def determinism_inputs() -> tuple[pa.Table, list[tuple[str, pa.Table]]]:
    """Rows and benchmarks for the determinism test: the real sets with their tied items where present, else toys."""
    if (SHARED_DATA / "benchmarks").is_dir():
        targets, negatives = load_sets(SHARED_DATA / "benchmarks")
        rows, _ = disguised_rows(targets, 150, SEED, set(), clean=negatives)
        rows += [r for _, t in targets for r in t.to_pylist()]  # every item verbatim: MMLU's repeats tie
        return pa.Table.from_pylist(rows, schema=QUESTION_SCHEMA), targets
    ties = [BENCH[1] | {"source_id": sid} for sid in ("b10", "b9", "b12")]
    rows = [disguise(r, k, random.Random(k), f"{k}-{r['source_id']}") for r in BENCH + ties for k in KINDS[:4]]
    return table(rows), [("toy_test", table(BENCH + ties + FILLER))]


DETERMINISM_SCRIPT = """
import sys
import pyarrow as pa
from medr1_data.decontam import decontaminate
from tests.test_decontam import determinism_inputs
rows, benchmarks = determinism_inputs()
out, _ = decontaminate(rows, benchmarks)
with pa.OSFile(sys.argv[1], "wb") as f, pa.ipc.new_file(f, out.schema) as w:
    w.write_table(out)
"""


def test_outputs_are_byte_identical_whatever_the_threads(tmp_path: Path) -> None:
    outs = []
    for threads, hash_seed in (("1", "1"), ("2", "2"), ("4", "3")):
        out = tmp_path / f"out-{threads}.arrow"
        env = {**os.environ, "POLARS_MAX_THREADS": threads, "PYTHONHASHSEED": hash_seed, "PYTHONPATH": str(ROOT)}
        subprocess.run([sys.executable, "-c", DETERMINISM_SCRIPT, str(out)], check=True, cwd=ROOT, env=env)
        outs.append(out.read_bytes())
    assert outs[0] == outs[1] == outs[2]
    flagged = pa.ipc.open_file(pa.py_buffer(outs[0])).read_all().column("contaminated")
    assert pc.sum(flagged).as_py() > 0


# --- real benchmark test sets -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real() -> dict[str, Any]:
    """Index of the four benchmarks; 1,000 disguised copies per kind; the real negatives and positives; checked."""
    data = require_shared("benchmarks").parent
    require_shared("traces")
    targets, negatives = load_sets(data / "benchmarks")
    neg, pos = real_sets(data)
    index = build_index(targets, DecontamSettings())
    common = common_words(
        [r["question"] for _, t in targets for r in t.to_pylist()] + [r["question"] for r in negatives]
    )
    unrelated = [r["question"] for name in HELDOUT_NEGATIVES for r in neg[name]]
    clean = [r for name in TUNING_NEGATIVES for r in neg[name]]
    rows, truth = disguised_rows(targets, PER_KIND, SEED, common, unrelated=unrelated, clean=clean)
    dirty, _ = decontaminate(pa.Table.from_pylist(rows, schema=QUESTION_SCHEMA), index)

    def check(sets: dict[str, list[dict[str, Any]]]) -> dict[str, pa.Table]:
        return {k: decontaminate(pa.Table.from_pylist(v, schema=QUESTION_SCHEMA), index)[0] for k, v in sets.items()}

    items = {(n, r["source_id"]): r for n, t in targets for r in t.to_pylist()}
    items |= {(n, json.loads(r["meta"]).get("item_id")): r for n, t in targets for r in t.to_pylist()}
    return {"index": index, "truth": truth, "dirty": dirty, "neg": check(neg), "pos": check(pos), "items": items}


@pytest.mark.parametrize("kind", [*TUNING_KINDS, *HELDOUT_KINDS])
def test_recall_per_disguise_kind(real: dict[str, Any], kind: str) -> None:
    got = real["dirty"].select(["contaminated", "contam_benchmark", "contam_item_id"]).to_pylist()
    mine = [(g, t) for g, t in zip(got, real["truth"], strict=True) if t[0] == kind]
    assert len(mine) == PER_KIND
    recall = sum(g["contaminated"] for g, _ in mine) / len(mine)
    right_bench = sum(g["contam_benchmark"] == t[1] for g, t in mine) / len(mine)
    if kind == "options_unrelated":  # informative: a generic option set cannot name its item (other questions use it)
        bar = real["index"].settings.min_option_evidence_alone
        mass = [_option_mass(real, real["items"][(t[1], t[2])]) for _, t in mine]
        distinctive = [g["contaminated"] for (g, _), m in zip(mine, mass, strict=True) if m >= bar]
        assert len(distinctive) > 300 and sum(distinctive) / len(distinctive) >= MIN_RECALL, sum(distinctive)
        assert recall >= 0.5, f"{kind}: recall {recall:.4f}"
        return
    if kind == "new_options":
        medqa = [g["contaminated"] for g, t in mine if t[1] == "medqa_us_test"]  # vignettes: always distinctive
        assert len(medqa) > 100 and sum(medqa) / len(medqa) >= MIN_RECALL
        assert recall >= MIN_RECALL_NEW_OPTIONS, f"{kind}: recall {recall:.4f}"
        return
    assert recall >= MIN_RECALL, f"{kind}: recall {recall:.4f}"
    assert right_bench >= MIN_RECALL - 0.01, f"{kind}: matched the right benchmark for {right_bench:.4f}"


def _option_mass(real: dict[str, Any], item: dict[str, Any]) -> float:
    """IDF mass of the distinct words of an item's canonical option texts (what the options rule weighs)."""
    weights = real["index"].weights
    return sum(weights.get(t, 0.0) for t in {t for o in item["options"] for t in canon_option(o["text"]).split()})


def test_verbatim_copies_name_their_item_or_an_identical_one(real: dict[str, Any]) -> None:
    got = real["dirty"].select(["contam_benchmark", "contam_item_id"]).to_pylist()
    items = real["items"]
    for g, (kind, bench, item) in zip(got, real["truth"], strict=True):
        if kind != "verbatim" or g["contam_item_id"] == item:
            continue
        a, b = items[(bench, item)], items[(g["contam_benchmark"], g["contam_item_id"])]
        assert _words(a["question"]) == _words(b["question"]), (item, g)
        assert sorted(_words(o["text"]) for o in a["options"]) == sorted(_words(o["text"]) for o in b["options"])


def _words(text: str) -> str:
    return " ".join(re.findall(r"[^\W_]+", text.lower()))


@pytest.mark.parametrize("part", ["tuning", "heldout"])
def test_clean_hard_negatives_are_rarely_flagged(real: dict[str, Any], part: str) -> None:
    names = TUNING_NEGATIVES if part == "tuning" else HELDOUT_NEGATIVES
    sizes = {"medxpertqa_r_test": 1798, "medxpertqa_u_test": 575, "mmlu_medical_dev": 25}
    sizes |= {"medexqa_test": 935, "pubmedqa_nontest": 500, "mmlu_pro_other": 47, "medbullets": 80}
    assert {n: real["neg"][n].num_rows for n in names} == {n: sizes[n] for n in names}
    flagged = [r for n in names for r in real["neg"][n].filter(real["neg"][n].column("contaminated")).to_pylist()]
    total = sum(sizes[n] for n in names)
    assert len(flagged) <= MAX_FP_RATE * total, [(r["source_id"], r["contam_item_id"]) for r in flagged]


def test_real_copies_are_flagged_with_their_item(real: dict[str, Any]) -> None:
    items = real["items"]
    pro = real["pos"]["mmlu_pro_mmlu"].to_pylist()  # MMLU-Pro keeps the MMLU test stem, 4-10 options
    assert len(pro) == 53
    for r in pro:
        assert r["contaminated"] and r["contam_benchmark"] == "mmlu_medical_test", r["question"]
        assert items[("mmlu_medical_test", r["contam_item_id"])]["question"].strip() == r["question"].strip()
    dev = real["pos"]["mmlu_medical_dev_equal"]
    assert dev.num_rows == 5 and all(dev.column("contaminated").to_pylist())


def test_medxpertqa_rewrites_of_medqa_are_flagged_as_such(real: dict[str, Any]) -> None:
    # Real overlaps (same patient, rewritten vignette, 10 options): flagging them is right, and names the MedQA item.
    overlaps = pa.concat_tables([real["pos"][f"{n}_medqa"] for n in ("medxpertqa_r_test", "medxpertqa_u_test")])
    assert overlaps.num_rows == len(MEDXPERTQA_OVERLAPS)
    hits = overlaps.filter(overlaps.column("contaminated")).select(["source_id", "contam_item_id"]).to_pylist()
    assert len(hits) >= 0.8 * overlaps.num_rows
    assert all(MEDXPERTQA_OVERLAPS[h["source_id"]] == h["contam_item_id"] for h in hits)


def _raw_items(bench: Path) -> list[tuple[str, str, list[str], str]]:
    """(benchmark, expected natural id, question, options) of every target item, read from the native files here."""
    out = []
    for n, line in enumerate((bench / "medqa_us_4options_test.jsonl").read_text(encoding="utf-8").splitlines()):
        raw = json.loads(line)
        out.append(("medqa_us_test", str(n), raw["question"], list(raw["options"].values())))
    for line in (bench / "medmcqa_validation.jsonl").read_text(encoding="utf-8").splitlines():
        raw = json.loads(line)
        out.append(("medmcqa_val", raw["id"], raw["question"], [raw[k] for k in ("opa", "opb", "opc", "opd")]))
    pqal = json.loads((bench / "pubmedqa" / "ori_pqal.json").read_text(encoding="utf-8"))
    for pmid in json.loads((bench / "pubmedqa" / "test_ground_truth.json").read_text(encoding="utf-8")):
        out.append(("pubmedqa_test", pmid, pqal[pmid]["QUESTION"], ["yes", "no", "maybe"]))
    for file in sorted((bench / "mmlu_medical").glob("*_test.csv")):
        for r, cells in enumerate(csv.reader(file.open(encoding="utf-8"))):
            out.append(("mmlu_medical_test", f"{file.stem.removesuffix('_test')}/{r}", cells[0], cells[1:5]))
    return out


def test_natural_item_ids_per_benchmark(real: dict[str, Any]) -> None:
    raw = _raw_items(SHARED_DATA / "benchmarks")
    seen = Counter(q.strip().lower() for _, _, q, _ in raw)
    unique = [r for r in raw if seen[r[2].strip().lower()] == 1]  # a repeated question ties: tested above
    picked = [r for b in ("medqa_us_test", "medmcqa_val", "pubmedqa_test", "mmlu_medical_test") for r in
              random.Random(b).sample([u for u in unique if u[0] == b], 60)]  # fmt: skip
    rows = [row(f"n{k}", q, opts) for k, (_, _, q, opts) in enumerate(picked)]
    out, _ = decontaminate(table(rows), real["index"])
    got = list(zip(out.column("contam_benchmark").to_pylist(), out.column("contam_item_id").to_pylist(), strict=True))
    assert got == [(b, i) for b, i, _, _ in picked]
    assert {i for b, i, _, _ in picked if b == "medqa_us_test"} <= {str(n) for n in range(1273)}
