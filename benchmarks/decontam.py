"""Decontamination: MedR1's method against an open-r1-style 8-gram check and an m1-style rapidfuzz ratio >= 95 check.

Usage: python benchmarks/decontam.py [--rows 170000] [--contaminated 0.02] [--m1-sample 9000] [--data ../shared/data]

Builds `--rows` generated training rows: `--contaminated` of them are disguised copies of real test items (the nine
kinds of tests/disguise.py, equal shares), the rest clean MCQ-like rows recombined from the sentences and options of
the clean hard negatives (MedXpertQA and MedExpQA minus the 77 rows that really overlap MedQA), numbers perturbed.
They are checked against the four benchmark test sets present in ../shared/data (medqa_us_test, medmcqa_val,
pubmedqa_test, mmlu_medical_test: 7,045 items; HEAD-QA's ~2.7K English test items are not in the shared data).
Each method runs in its own child process (same data file, same machine), so its wall time and peak RSS are its own.
The m1-style check runs on a sample (`--m1-sample` rows: every kind equally, plus clean rows) and its time is
extrapolated linearly to all rows. A second table times MedR1's method on 20K, 85K and 170K rows and, for the
growth with benchmark items, against a random quarter and half of each benchmark's items (all 170K rows).
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.disguise import KINDS, common_words, disguised_rows, load_sets, recombine  # noqa: E402

KIND_COLS = [*KINDS, "options_unrelated"]


def make_rows(data: Path, rows: int, contaminated: float, seed: int, out: Path) -> None:
    """Write the generated training rows (with `_kind`, `_bench`, `_item` truth columns) to a Parquet file."""
    from medr1_data.schema import QUESTION_SCHEMA

    targets, negatives = load_sets(data / "benchmarks")
    common = common_words(
        [r["question"] for _, t in targets for r in t.to_pylist()] + [r["question"] for r in negatives]
    )
    n_dirty = round(rows * contaminated)
    per_kind = max(1, n_dirty // len(KIND_COLS))
    unrelated = [r["question"].split("Answer Choices:")[0].strip() for r in negatives]
    dirty, truth = disguised_rows(targets, per_kind, seed, common, unrelated=unrelated)
    clean = recombine(negatives, rows - len(dirty), random.Random(seed))
    all_rows = dirty + clean
    truth += [("clean", "", "")] * len(clean)
    order = list(range(len(all_rows)))
    random.Random(seed + 1).shuffle(order)
    table = pa.Table.from_pylist([all_rows[i] for i in order], schema=QUESTION_SCHEMA)
    for k, name in enumerate(("_kind", "_bench", "_item")):
        table = table.append_column(name, pa.array([truth[i][k] for i in order], pa.string()))
    pq.write_table(table, out)


def scores(table: pa.Table, flagged: list[bool]) -> dict[str, float]:
    """Recall per disguise kind and the false-positive rate on the clean rows."""
    kinds = table.column("_kind").to_pylist()
    total, hit = Counter(kinds), Counter(k for k, f in zip(kinds, flagged, strict=True) if f)
    return {k: hit[k] / total[k] for k in total}


def openr1_flags(table: pa.Table, benchmarks: list[tuple[str, pa.Table]], n: int = 8) -> list[bool]:
    """open-r1 scripts/decontaminate.py: lower-case, collapse spaces, flag a row sharing any word n-gram."""

    def grams(text: str) -> set[str]:
        words = " ".join(text.lower().strip().split()).split()
        return {" ".join(words[i : i + n]) for i in range(len(words) - n + 1)}

    lookup: set[str] = set()
    for _, t in benchmarks:
        for q in t.column("question").to_pylist():
            lookup |= grams(q)
    return [not lookup.isdisjoint(grams(q)) for q in table.column("question").to_pylist()]


def m1_text(row: dict) -> str:
    """The whole question as one string (stem and options), as m1/OpenThoughts compare it."""
    return row["question"] + "\n" + "\n".join(f"{o['label']}. {o['text']}" for o in row["options"])


def m1_flags(table: pa.Table, benchmarks: list[tuple[str, pa.Table]]) -> list[bool]:
    """m1-style: rapidfuzz ratio >= 95 of the whole question against every test item (process.cdist, all cores)."""
    from rapidfuzz import fuzz, process

    bench = [m1_text(r) for _, t in benchmarks for r in t.select(["question", "options"]).to_pylist()]
    rows = [m1_text(r) for r in table.select(["question", "options"]).to_pylist()]
    best = process.cdist(rows, bench, scorer=fuzz.ratio, score_cutoff=95, workers=-1).max(axis=1)
    return [bool(b) for b in best]


def m1_sample(table: pa.Table, size: int, seed: int) -> pa.Table:
    """Equal numbers of each disguise kind and the rest clean rows, for the m1-style check."""
    kinds = table.column("_kind").to_pylist()
    rng = random.Random(seed)
    per = max(1, size // (2 * len(KIND_COLS)))
    picked = []
    for kind in KIND_COLS:
        idx = [i for i, k in enumerate(kinds) if k == kind]
        picked += rng.sample(idx, min(per, len(idx)))
    clean = [i for i, k in enumerate(kinds) if k == "clean"]
    picked += rng.sample(clean, min(size - len(picked), len(clean)))
    return table.take(sorted(picked))


def child(args: argparse.Namespace) -> None:
    """Run one method on the data file and print a JSON line of its measurements."""
    from medr1_data.benchmarks import load_benchmark
    from medr1_data.decontam import DecontamSettings, decontaminate
    from tests.disguise import TARGETS

    table = pq.read_table(args.file)
    if args.limit:
        table = table.slice(0, args.limit)
    benchmarks = [(n, load_benchmark(n, args.data / "benchmarks")[1].table) for n in TARGETS]
    if args.item_fraction < 1:  # a random share of each benchmark's items, for the growth with items
        rng = random.Random(args.seed)
        benchmarks = [
            (n, t.take(sorted(rng.sample(range(t.num_rows), round(t.num_rows * args.item_fraction)))))
            for n, t in benchmarks
        ]
    rows, measured = table.num_rows, table
    start = time.perf_counter()
    if args.method == "medr1":
        out, _ = decontaminate(table, benchmarks, DecontamSettings())
        flagged = out.column("contaminated").to_pylist()
    elif args.method == "openr1":
        flagged = openr1_flags(table, benchmarks)
    else:
        measured = m1_sample(table, args.m1_sample, args.seed)
        flagged = m1_flags(measured, benchmarks)
    wall = time.perf_counter() - start
    if measured is not table:
        wall *= rows / measured.num_rows  # extrapolated: cdist time is linear in the rows checked
    result = {
        "method": args.method,
        "rows": rows,
        "items": sum(t.num_rows for _, t in benchmarks),
        "checked": measured.num_rows,
        "wall_s": wall,
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2,
        "recall": scores(measured, flagged),
    }
    print(json.dumps(result))


def run_child(args: argparse.Namespace, file: Path, method: str, limit: int = 0, item_fraction: float = 1.0) -> dict:
    """Run `child` in a fresh interpreter and return its measurements."""
    cmd = [sys.executable, __file__, "--child", method, "--file", str(file), "--data", str(args.data)]
    cmd += ["--limit", str(limit), "--m1-sample", str(args.m1_sample), "--seed", str(args.seed)]
    cmd += ["--item-fraction", str(item_fraction)]
    done = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


LABELS = {
    "medr1": "MedR1 (views + confirmation)",
    "openr1": "open-r1 any word 8-gram",
    "m1": "m1 rapidfuzz ratio>=95 (sample, extrap.)",
}
SHORT = {
    "verbatim": "verb",
    "recase": "case",
    "shuffle": "shuf",
    "stem_only": "stem",
    "options_only": "opts",
    "wrapped": "wrap",
    "truncated": "trunc",
    "reordered": "reord",
    "synonyms": "syn",
    "options_unrelated": "opts*",
}


def main() -> None:
    """Generate the rows, run every method in its own process, print the two tables."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=170_000)
    p.add_argument("--contaminated", type=float, default=0.02)
    p.add_argument("--m1-sample", type=int, default=9000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    p.add_argument("--child", choices=["medr1", "openr1", "m1"], dest="method")
    p.add_argument("--file", type=Path)
    p.add_argument("--limit", type=int, default=0)
    p.add_argument("--item-fraction", type=float, default=1.0)
    args = p.parse_args()
    if args.method:
        child(args)
        return
    with tempfile.TemporaryDirectory() as tmp:
        file = Path(tmp) / "rows.parquet"
        t0 = time.perf_counter()
        make_rows(args.data, args.rows, args.contaminated, args.seed, file)
        print(f"generated {args.rows} rows in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
        results = [run_child(args, file, m) for m in ("medr1", "openr1", "m1")]
        growth = [run_child(args, file, "medr1", limit=n) for n in (20_000, 85_000) if n < args.rows]
        growth.append(results[0])
        growth += [run_child(args, file, "medr1", item_fraction=f) for f in (0.25, 0.5)]
    head = f"{'method':42} {'rows':>7} {'items':>6} {'wall s':>8} {'peak RSS':>9} "
    head += " ".join(f"{SHORT[k]:>5}" for k in KIND_COLS) + f" {'FP rate':>8}"
    print("Recall per disguise kind (opts* = options with an unrelated stem, informative) and FP rate on clean rows")
    print(head)
    for r in results:
        rec = r["recall"]
        line = (
            f"{LABELS[r['method']]:42} {r['rows']:>7} {r['items']:>6} {r['wall_s']:>8.1f} {r['peak_rss_gb']:>7.2f}GB "
        )
        line += " ".join(f"{rec.get(k, float('nan')):>5.3f}" for k in KIND_COLS)
        print(line + f" {rec.get('clean', float('nan')):>8.5f}")
    m1 = results[2]
    print(f"(m1: {m1['checked']} rows checked, wall time extrapolated x{m1['rows'] / m1['checked']:.0f})")
    print()
    print("MedR1's method: time against rows and benchmark items")
    print(f"{'rows':>7} {'items':>6} {'wall s':>8} {'peak RSS':>9} {'rows/s':>8}")
    for r in growth:
        rate = r["rows"] / r["wall_s"]
        print(f"{r['rows']:>7} {r['items']:>6} {r['wall_s']:>8.1f} {r['peak_rss_gb']:>7.2f}GB {rate:>8,.0f}")


if __name__ == "__main__":
    main()
