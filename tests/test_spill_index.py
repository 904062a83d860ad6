"""`teacher.spill.KeyIndex`: the records a scan spills are those a join of the block's keys with the plan gives."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from medr1_data.teacher.spill import KEY_HASH_SEED, KeyIndex


def _joined(keys: pl.Series, need: pl.DataFrame) -> pl.DataFrame:
    out = keys.to_frame("key").with_row_index("j").join(need, on="key").sort("part", "j").select("j", "part")
    return out.cast({"j": pl.UInt32, "part": pl.UInt32})


def test_hits_are_the_join_with_the_plan(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    keys = [f"{i:064x}" for i in range(5000)]
    # a key planned in two partitions (the same request from two questions) gives both
    need = pl.DataFrame(
        {"key": [*keys, *keys[:50]], "part": np.concatenate([np.arange(5000) // 700, np.full(50, 9)])},
        schema={"key": pl.String, "part": pl.UInt32},
    )
    need.write_ipc(tmp_path / "need.arrow")
    index = KeyIndex.load(tmp_path / "need.arrow")
    block = pl.Series("key", [*(f"{i:064x}" for i in rng.integers(0, 6000, 800)), None, keys[7], "not a key"])
    hits = index.hits(block)
    assert hits.equals(_joined(block, need))
    assert hits.height > 600 and (hits["part"] == 9).any()
    assert index.hits(pl.Series("key", [], pl.String)).height == 0


def test_a_hash_shared_by_two_keys_matches_only_the_equal_key() -> None:
    a = pl.Series(["key-a"])
    h = a.hash(KEY_HASH_SEED).to_numpy()
    index = KeyIndex(np.concatenate([h, h]), pl.Series(["key-a", "key-b"]), np.array([3, 4], dtype=np.uint32))
    assert index.hits(a).rows() == [(0, 3)]  # key-b has key-a's hash here, and is not key-a
