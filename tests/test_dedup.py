"""Near-duplicate clustering: exact and near copies across sources, the keep rule, and real benchmark duplicates."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
from rapidfuzz import fuzz

from medr1_data import selfindex
from medr1_data.dedup import DedupSettings, Questions, _exact_groups, _scan, components, dedup
from medr1_data.index import canon_table, token_counts
from medr1_data.normalize import canon_stem
from medr1_data.schema import QUESTION_SCHEMA
from medr1_data.selfindex import Spill
from tests.disguise import disguise, load_sets
from tests.test_decontam import row, table

VIGNETTE = (
    "A 45-year-old man comes to the physician because of a 2-week history of fatigue and jaundice. "
    "Serum bilirubin is 4.2 mg/dL. Which of the following is the most likely diagnosis?"
)
OPTS = ["Gilbert syndrome", "Hemolytic anemia", "Choledocholithiasis", "Hepatitis A"]


def with_source(r: dict[str, Any], source: str) -> dict[str, Any]:
    """The row as if it came from another source."""
    return r | {"source": source, "id": f"{source}/train/{r['source_id']}"}


def rows() -> list[dict[str, Any]]:
    """A question in three sources (one with shuffled options, one re-cased), two traces of one copy, and others."""
    a = with_source(row("a", VIGNETTE, OPTS, "C"), "medqa")
    shuffled = with_source(row("a2", VIGNETTE, [OPTS[2], OPTS[0], OPTS[3], OPTS[1]], "A"), "medmcqa")
    recased = with_source(row("a3", VIGNETTE.upper().replace(".", " ."), OPTS, "C"), "headqa")
    return [
        a,
        shuffled | {"is_correct": False},
        shuffled | {"is_correct": True},
        recased,
        row("b", "Which of the following is true?", ["Alpha", "Beta", "Gamma", "Delta"]),
        row("b2", "Which of the following is true?", ["One", "Two", "Three", "Four"]),
        row(
            "c",
            "Drug of choice for syphilis in pregnancy is:",
            ["Penicillin", "Doxycycline", "Erythromycin", "Ceftriaxone"],
        ),
    ]


def test_components_follow_chains() -> None:
    edges = pl.DataFrame({"a": [0, 1, 3, 6], "b": [1, 2, 4, 7]}, schema={"a": pl.UInt32, "b": pl.UInt32})
    assert components(8, edges)["label"].to_list() == [0, 0, 0, 3, 3, 5, 6, 6]
    assert components(3, edges.clear())["label"].to_list() == [0, 1, 2]


def test_copies_across_sources_cluster_and_the_rule_keeps_one() -> None:
    data = rows()
    for r in data:
        r.setdefault("is_correct", False)
    out = dedup(table(data))
    assert out.num_rows == len(data) and out.column("id").to_pylist() == [r["id"] for r in data]
    assert out.column_names[-2:] == ["dup_cluster", "dup_keep"]
    got = list(zip(out.column("dup_cluster").to_pylist(), out.column("dup_keep").to_pylist(), strict=True))
    kept = "medmcqa/train/a2"  # the copy with a correct trace wins
    assert got[:4] == [(kept, False), (kept, True), (kept, True), (kept, False)]
    # same generic stem, other options: different questions; and an unrelated question
    assert got[4:] == [("src/train/b", True), ("src/train/b2", True), ("src/train/c", True)]


def test_keep_rule_source_priority_then_more_options() -> None:
    data = [r for r in rows() if r["source_id"] in ("a", "a3")]
    five = with_source(row("a5", VIGNETTE, [*OPTS, "Hepatitis B"], "C"), "medqa5")  # MedQA's 5-option version
    data.append(five)
    out = dedup(table(data))
    assert set(out.column("dup_cluster").to_pylist()) == {"medqa5/train/a5"}  # more options wins when all else ties
    out = dedup(table(data), DedupSettings(source_priority=("headqa",)))
    assert out.column("dup_keep").to_pylist() == [False, True, False]


def test_real_duplicates_and_disguised_copies(shared_data: Path) -> None:
    targets, _ = load_sets(shared_data / "benchmarks")
    items = [r for _, t in targets for r in t.to_pylist()]
    rng = random.Random(7)
    picked = rng.sample(items, 300)
    copies = [disguise(it, ("verbatim", "shuffle", "recase")[k % 3], rng, f"copy-{k}") for k, it in enumerate(picked)]
    out = dedup(pa.Table.from_pylist(items + copies, schema=QUESTION_SCHEMA))
    cluster = dict(zip(out.column("id").to_pylist(), out.column("dup_cluster").to_pylist(), strict=True))
    found = sum(cluster[c["id"]] == cluster[it["id"]] for c, it in zip(copies, picked, strict=True))
    assert found == len(copies)
    # MMLU repeats questions across subjects (college_medicine / clinical_knowledge): each pair is one cluster.
    mmlu = {}
    for r in items:
        if r["source"] == "mmlu_medical":
            mmlu.setdefault(r["source_id"].split("-", 1)[1], []).append(r["id"])
    repeats = [ids for ids in mmlu.values() if len(ids) > 1]
    assert len(repeats) >= 20 and all(len({cluster[i] for i in ids}) == 1 for ids in repeats)
    # Clusters among the real items are close copies by an independent measure (rapidfuzz on the stems).
    text = {r["id"]: canon_stem(r["question"]) for r in items}
    by_cluster: dict[str, list[str]] = {}
    for r in items:
        by_cluster.setdefault(cluster[r["id"]], []).append(r["id"])
    multi = [ids for ids in by_cluster.values() if len(ids) > 1]
    assert len(multi) < 0.03 * len(items)
    for ids in multi:
        assert all(fuzz.token_set_ratio(text[ids[0]], text[i]) >= 80 for i in ids[1:]), ids


def _real_input(shared_data: Path) -> pa.Table:
    """Real items and 300 disguised copies, two trace rows per question (one correct on some), ids out of order."""
    targets, _ = load_sets(shared_data / "benchmarks")
    items = [r for _, t in targets for r in t.to_pylist()]
    rng = random.Random(3)
    picked = rng.sample(items, 300)
    copies = [disguise(it, ("verbatim", "shuffle", "recase")[k % 3], rng, f"copy-{k}") for k, it in enumerate(picked)]
    rows = items + copies
    rng.shuffle(rows)
    traces = [r | {"is_correct": rng.random() < 0.3} for r in rows for _ in range(2)]
    return pa.Table.from_pylist(traces, schema=QUESTION_SCHEMA.append(pa.field("is_correct", pa.bool_())))


def test_batches_and_spill_partitions_do_not_change_clusters(shared_data: Path, monkeypatch: Any) -> None:
    table = _real_input(shared_data)
    base = dedup(table).select(["id", "dup_cluster", "dup_keep"])
    assert 0 < (~pl.from_arrow(base)["dup_keep"]).sum() < table.num_rows // 10
    monkeypatch.setattr(selfindex, "FEATURE_ROWS", 20_000)  # many hash partitions, spilled to disk
    monkeypatch.setattr(selfindex, "HIT_ROWS", 5_000)  # many candidate batches
    spilled = dedup(table, DedupSettings(batch_rows=257)).select(["id", "dup_cluster", "dup_keep"])
    assert spilled.equals(base)


def test_exact_groups_are_checked_on_the_text_not_only_the_hash(shared_data: Path) -> None:
    table = _real_input(shared_data).slice(0, 3000)
    q = Questions.of(table)
    s = DedupSettings(batch_rows=500)
    hashes, _, _, counts = _scan(q, s, Spill(1))
    with_hashes = _exact_groups(q, hashes, counts, s)[0]
    colliding = np.zeros(q.n, dtype=np.uint64)  # every question with the same hash: the text must tell them apart
    assert (_exact_groups(q, colliding, _scan(q, s, Spill(1))[3], s)[0] == with_hashes).all()
    assert len(set(with_hashes.tolist())) < q.n  # some exact copies exist


def test_token_counts_summed_over_batches_equal_the_counts_of_the_whole_table(shared_data: Path) -> None:
    table = _real_input(shared_data).slice(0, 3000)
    q = Questions.of(table)
    whole = token_counts(canon_table(table.take(pa.array(q.rows(np.arange(q.n)))))).sort("tok")
    counts = _scan(q, DedupSettings(batch_rows=97), Spill(1))[3]  # 16 batches, merged as they outgrow the total
    assert counts.frame().sort("tok").cast({"len": pl.UInt32}).equals(whole)
    one_each = whole.head(10).with_columns(pl.lit(1, pl.UInt32).alias("len"))  # a batch naming each word once
    counts.add(one_each, -1)  # taken away: words counted only once leave, the others count one less
    taken = dict(counts.frame().iter_rows())
    for tok, n in whole.head(10).iter_rows():
        assert taken.get(tok, 0) == n - 1
    assert len(taken) == whole.height - int((whole.head(10)["len"] == 1).sum())


def test_empty_table() -> None:
    out = dedup(QUESTION_SCHEMA.empty_table())
    assert out.num_rows == 0 and out.column_names[-2:] == ["dup_cluster", "dup_keep"]
