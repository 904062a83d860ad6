"""Ingest throughput: `medr1_data.sources.load` (per-row checks, rejects) against bare readers, same run, same file.

Usage: python benchmarks/ingest.py [--rows 170000] [--data ../shared/data]
Replicates MedMCQA validation (real rows) to --rows lines, then times each reader on the same file.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import polars as pl


def timed(fn) -> tuple[float, int]:
    start = time.perf_counter()
    n = fn()
    return time.perf_counter() - start, n


def main() -> None:
    """Print rows/s for medr1 ingest and two baselines."""
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--rows", type=int, default=170_000)
    p.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[1].parent / "shared" / "data")
    args = p.parse_args()

    from medr1_data.sources import load

    src = args.data / "benchmarks" / "medmcqa_validation.jsonl"
    lines = src.read_text(encoding="utf-8").splitlines()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "train.jsonl"
        with path.open("w", encoding="utf-8") as f:
            for i in range(args.rows):
                row = json.loads(lines[i % len(lines)])
                row["id"] = f"{row['id']}-{i}"
                f.write(json.dumps(row) + "\n")

        def bare_json() -> int:
            return sum(1 for line in path.open(encoding="utf-8") if json.loads(line))

        def polars_ndjson() -> int:
            return pl.read_ndjson(path).height

        def medr1() -> int:
            return load(f"medmcqa={path}", "train").table.num_rows

        results = [
            ("medr1 load (canonical + checks + rejects)", *timed(medr1)),
            ("json.loads per line (parse only)", *timed(bare_json)),
            ("polars read_ndjson (parse only)", *timed(polars_ndjson)),
        ]
    base = results[0][1]
    print(f"{'reader':44} {'rows':>8} {'seconds':>8} {'rows/s':>10} {'time vs medr1':>14}")
    for name, seconds, n in results:
        print(f"{name:44} {n:>8} {seconds:>8.2f} {n / seconds:>10,.0f} {seconds / base:>13.2f}x")


if __name__ == "__main__":
    main()
