"""Verify + score throughput on ~170K real-length traces, beside a per-row Python baseline in the same run.

Usage: python benchmarks/score.py [--copies 200] [--data ../shared/data]
The rows are the 862 real DeepSeek-R1 completions in ../shared/data/traces, repeated (mean reasoning ~6.5K chars).
Baseline: the m1-style check, a Python loop that reads the last \\boxed{} / "answer is X" of each completion.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path

import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from medr1_data.score import score
from medr1_data.verify import verify
from tests.real_traces import load_real_traces

LAST_ANSWER = re.compile(r"\\boxed\{([A-J])\}|answer is \(?([A-J])\b|^\s*([A-J])\s*$", re.MULTILINE)


def baseline(table: pa.Table) -> int:
    """m1-style: one regex per completion, last match wins, no quality signals."""
    correct = 0
    cols = table.select(["reasoning", "response", "answer_label"]).to_pydict()
    for reasoning, response, gold in zip(cols["reasoning"], cols["response"], cols["answer_label"], strict=True):
        found = LAST_ANSWER.findall(f"{reasoning or ''}\n</think>\n{response or ''}")
        label = next((g for g in found[-1] if g), None) if found else None
        correct += label == gold
    return correct


def main() -> None:
    """Print rows/s for the baseline, verify, score and verify+score."""
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--copies", type=int, default=200)
    p.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[1].parent / "shared" / "data")
    args = p.parse_args()
    real = load_real_traces(args.data / "traces")
    table = pa.concat_tables([real] * args.copies).combine_chunks()
    n = table.num_rows
    mean_chars = sum(len(r or "") for r in real.column("reasoning").to_pylist()) / real.num_rows

    t0 = time.perf_counter()
    baseline(table)
    t_base = time.perf_counter() - t0
    t0 = time.perf_counter()
    verified = verify(table)
    t_verify = time.perf_counter() - t0
    t0 = time.perf_counter()
    score(verified)
    t_score = time.perf_counter() - t0

    print(f"{n:,} traces, mean reasoning {mean_chars:,.0f} characters\n")
    print(f"{'step':42} {'seconds':>8} {'rows/s':>10} {'vs baseline':>12}")
    for name, secs in [
        ("baseline: last-match regex per row (m1)", t_base),
        ("medr1 verify (answer extraction)", t_verify),
        ("medr1 score (quality signals)", t_score),
        ("medr1 verify + score", t_verify + t_score),
    ]:
        print(f"{name:42} {secs:>8.2f} {n / secs:>10,.0f} {secs / t_base:>11.2f}x")


if __name__ == "__main__":
    main()
