"""Decontamination's options rule on real rows: a question of its own under a generic option set is no copy.

Real-data tests (../shared/data, skipped where absent). The tuning evidence for `option_own_info` and
`min_option_evidence_alone` (`DecontamSettings`): MedMCQA items that ask their own question with the generic option set
and answer of another item, and the Medbullets rewrites of MedQA cases (held-out real copies).
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from medr1_data.decontam import BenchmarkIndex, DecontamSettings, build_index, decontaminate
from medr1_data.normalize import canon_option
from medr1_data.schema import QUESTION_SCHEMA
from tests.conftest import require_shared
from tests.disguise import MEDBULLETS_OVERLAPS, load_sets, real_sets
from tests.test_decontam import row, table


@pytest.fixture(scope="module")
def targets() -> list[tuple[str, pa.Table]]:
    """The four target benchmarks of ../shared/data."""
    return load_sets(require_shared("benchmarks"))[0]


def _option_mass(index: BenchmarkIndex, item: dict[str, Any]) -> float:
    """IDF mass of the distinct words of an item's canonical option texts (what the options rule weighs)."""
    words = {t for o in item["options"] for t in canon_option(o["text"]).split()}
    return sum(index.weights.get(t, 0.0) for t in words)


# Tuning evidence for the own-question bar: MedMCQA items that ask their own question with the generic option set and
# answer of another item (teeth, rotator cuff muscles, types of cry), checked against the benchmarks without them.
# Not here: 6652ddbc ("which tooth is known as enigma to endodontist"), still flagged against ed4c848b: left out of the
# index, its own words are no other item's, so they do not count as a question of its own (a known limit).
GENERIC_SET_PAIRS = {
    "c8f8d5ab-7894-42c8-99fd-87a0d20a7307": "premolar with a mesial marginal ridge more cervical",
    "cc495e6f-ff1e-491b-8c15-17554a45d3ad": "biomechanics of the rotator cuff muscles",
    "e9474805-33d3-4db9-a0dd-a7171bd262a6": "type of cry that is a constant whining",
}


def test_a_question_of_its_own_with_a_generic_option_set_is_not_a_copy(targets: list[tuple[str, pa.Table]]) -> None:
    mine = [r for _, t in targets for r in t.to_pylist() if r["source_id"] in GENERIC_SET_PAIRS]
    assert len(mine) == len(GENERIC_SET_PAIRS)
    left_out = pa.array(list(GENERIC_SET_PAIRS))
    rest = [(n, t.filter(pc.invert(pc.is_in(t.column("source_id"), left_out)))) for n, t in targets]
    rows = pa.Table.from_pylist(mine, schema=QUESTION_SCHEMA)
    index = build_index(rest, DecontamSettings())
    now, _ = decontaminate(rows, index)
    assert not any(now.column("contaminated").to_pylist())
    # The rule before the bar flagged every one on its option words alone, naming the other item.
    before, _ = decontaminate(rows, rest, DecontamSettings(min_option_evidence_alone=3.0))
    got = before.select(["contam_rule", "contam_item_id"]).to_pylist()
    assert [g["contam_rule"] for g in got] == ["options"] * len(mine)
    assert all(g["contam_item_id"] not in GENERIC_SET_PAIRS for g in got)
    # A distinctive option set still flags under a question of the row's own (its option words weigh enough).
    items = [r for _, t in rest for r in t.to_pylist()]
    distinct = next(r for r in items if _option_mass(index, r) >= 10 and len(r["options"]) == 4)
    own = row("own", mine[0]["question"], [o["text"] for o in distinct["options"]], distinct["answer_label"])
    out, _ = decontaminate(table([own]), index)
    assert out.column("contam_rule").to_pylist() == ["options"]


def test_medbullets_rewrites_of_medqa_are_flagged_as_such(targets: list[tuple[str, pa.Table]]) -> None:
    require_shared("traces")
    rows = real_sets(require_shared("benchmarks").parent)[1]["medbullets_medqa"]
    out, _ = decontaminate(pa.Table.from_pylist(rows, schema=QUESTION_SCHEMA), targets)
    got = out.select(["source_id", "contaminated", "contam_item_id"]).to_pylist()
    assert len(got) == len({v for v in MEDBULLETS_OVERLAPS.values()})  # the file repeats one of them
    hits = [g for g in got if g["contaminated"]]
    assert len(hits) >= 3  # 56 keeps the vignette but lists figure letters as options: not flagged
    for g in hits:
        assert MEDBULLETS_OVERLAPS[int(g["source_id"].removeprefix("medbullets-"))] == g["contam_item_id"], g
