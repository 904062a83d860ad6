"""Decontamination is batch-independent: a build or an audit may call it a batch of questions at a time.

Token weights and postings come from the benchmark items only (`build_index`), and each row's candidates and
confirmation read only that row and the index, so cutting the rows into batches of any size (trace rows of one
question split across batches included) gives the same flags, items, rules and scores as one call on all rows.
"""

from __future__ import annotations

import random
from pathlib import Path

import pyarrow as pa

from medr1_data.decontam import BenchmarkIndex, DecontamSettings, build_index, decontaminate
from medr1_data.schema import QUESTION_SCHEMA
from tests.disguise import disguise, load_sets

COLUMNS = ["id", "contaminated", "contam_benchmark", "contam_item_id", "contam_score", "contam_rule"]


def _rows(shared_data: Path) -> tuple[pa.Table, list[tuple[str, pa.Table]]]:
    targets, negatives = load_sets(shared_data / "benchmarks")
    items = [r for _, t in targets for r in t.to_pylist()]
    rng = random.Random(11)
    kinds = ("verbatim", "shuffle", "recase")
    copies = [disguise(it, kinds[k % 3], rng, f"copy-{k}") for k, it in enumerate(rng.sample(items, 240))]
    rows = copies + rng.sample(negatives, 240)
    rng.shuffle(rows)
    table = pa.Table.from_pylist(rows, schema=QUESTION_SCHEMA)
    twice = table.take(pa.array([i // 2 for i in range(2 * table.num_rows)]))  # two trace rows per question
    return twice, targets


def _in_batches(table: pa.Table, index: BenchmarkIndex, size: int) -> pa.Table:
    parts = [decontaminate(table.slice(lo, size), index)[0] for lo in range(0, table.num_rows, size)]
    return pa.concat_tables(parts).select(COLUMNS)


def test_results_do_not_depend_on_the_batch(shared_data: Path) -> None:
    table, targets = _rows(shared_data)
    index = build_index(targets, DecontamSettings())
    whole = decontaminate(table, index)[0].select(COLUMNS)
    assert 100 < sum(whole.column("contaminated").to_pylist()) < whole.num_rows  # copies found, clean rows not all
    for size in (37, 250):
        assert _in_batches(table, index, size).equals(whole), size
    small = build_index(targets, DecontamSettings(batch_rows=29))  # the retrieval batch inside one call
    assert decontaminate(table, small)[0].select(COLUMNS).equals(whole)


def test_worker_processes_load_the_saved_index_and_flag_the_same(shared_data: Path, tmp_path: Path) -> None:
    """The build's decontam stage with workers: the index saved once, each worker loads it and flags its parts;
    the flags are those of one call in this process."""
    import functools

    from medr1_data.decontam import save_index
    from medr1_data.stages import decontam_part
    from medr1_data.workers import Pool

    table, targets = _rows(shared_data)
    index = build_index(targets, DecontamSettings())
    whole = decontaminate(table, index)[0].select(COLUMNS)
    path = save_index(index, tmp_path / "index.pickle")
    parts = [table.slice(lo, 250) for lo in range(0, table.num_rows, 250)]
    pool = Pool(2)
    try:
        results = list(pool.map(functools.partial(decontam_part, index=path), parts, len(parts)))
    finally:
        pool.close()
    assert len(pool.peaks) == 2  # both workers ran parts
    flagged = pa.concat_tables([out for out, _ in results]).select(COLUMNS)
    assert flagged.to_pydict() == whole.to_pydict()
    assert sum(n for _, (_, n) in results) == whole.num_rows // 2  # each question once, though it has two rows
    assert set(pa.concat_tables([out for out, _ in results]).column("drop_reason").drop_null().to_pylist()) == {
        "contaminated"
    }
