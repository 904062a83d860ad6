"""Decontamination out of sample: MedR1's method against an open-r1-style 8-gram check and an m1-style ratio check.

Usage: python benchmarks/decontam.py [--rows 170000] [--contaminated 0.02] [--m1-sample 9000] [--data ../shared/data]
                                    [--no-growth]

One file of `--rows` training rows, checked against the four benchmark test sets in ../shared/data (medqa_us_test,
medmcqa_val, pubmedqa_test, mmlu_medical_test: 7,045 items; HEAD-QA's test file is not in the shared data):
- `--contaminated` of the rows are disguised copies of real test items, equal shares of the eleven kinds of
  tests/disguise.py (`new_options` takes its options from the tuning negatives);
- every real row of `tests.disguise.real_sets`: the clean hard negatives (real medical MCQs that are no test item)
  and the real positives (rows of other data sets that really copy a test item);
- the rest are clean rows recombined from the sentences and options of the real negatives (numbers perturbed),
  half from the tuning negatives and half from the held-out ones.
Everything is split into a tuning part (the kinds and negatives `DecontamSettings` was tuned on) and a held-out part
(only reported): one table each, all columns: recall per disguise kind, the false-positive rate on the real and on
the generated clean rows, and the recall on the real positives. "MedR1 before" is the same method with the options
rule as it was before the own-question bar (`BEFORE`: `min_option_evidence_alone` = `min_option_evidence`), same rows,
same run. Under each table: the real negatives flagged (k of n, with the exact one-sided 95% upper bound of the rate)
and which. Each method runs on the whole file in its own child process, so its wall time and peak RSS are its own.
The m1-style check runs on a sample (`--m1-sample` rows: every kind equally, every real row, then generated clean
rows), its time extrapolated linearly to all rows. A third table
times MedR1's method on 20K, 85K and 170K rows and, for the growth with benchmark items, against a random quarter
and half of each benchmark's items (all rows).
"""

from __future__ import annotations

import argparse
import json
import math
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

from tests.disguise import (  # noqa: E402
    HELDOUT_KINDS,
    HELDOUT_NEGATIVES,
    TUNING_KINDS,
    TUNING_NEGATIVES,
    common_words,
    disguised_rows,
    load_sets,
    real_sets,
    recombine,
)

HELDOUT_POSITIVES = ("mmlu_pro_mmlu", "medbullets_medqa")  # the other real positive sets are tuning ones
BEFORE = {"min_option_evidence_alone": 3.0}  # the options rule before the own-question bar (3.0: min_option_evidence)
REAL = ("real FP", "gen FP", "real pos")  # columns after the kinds: flagged share of real / generated clean, positives


def make_rows(data: Path, rows: int, contaminated: float, seed: int, out: Path) -> None:
    """Write the rows (with `_kind`, `_part`, `_bench`, `_item`, `_set` truth columns) to a Parquet file."""
    from medr1_data.schema import QUESTION_SCHEMA

    targets, negatives = load_sets(data / "benchmarks")
    neg, pos = real_sets(data)
    common = common_words(
        [r["question"] for _, t in targets for r in t.to_pylist()] + [r["question"] for r in negatives]
    )
    tuning_neg = [r for name in TUNING_NEGATIVES for r in neg[name]]
    heldout_neg = [r for name in HELDOUT_NEGATIVES for r in neg[name]]
    kinds = [*TUNING_KINDS, *HELDOUT_KINDS]
    per_kind = max(1, round(rows * contaminated) // len(kinds))
    unrelated = [r["question"].split("Answer Choices:")[0].strip() for r in heldout_neg]
    dirty, truth = disguised_rows(targets, per_kind, seed, common, kinds, unrelated=unrelated, clean=tuning_neg)
    marks = [(k, "tuning" if k in TUNING_KINDS else "heldout", b, i, "") for k, b, i in truth]
    real: list[dict] = []
    for name, part in [*((n, "tuning") for n in TUNING_NEGATIVES), *((n, "heldout") for n in HELDOUT_NEGATIVES)]:
        real += neg[name]
        marks += [("neg", part, "", "", name)] * len(neg[name])
    for name, got in pos.items():
        real += got
        marks += [("pos", "heldout" if name in HELDOUT_POSITIVES else "tuning", "", "", name)] * len(got)
    n_clean = max(0, rows - len(dirty) - len(real))
    clean = recombine(tuning_neg, n_clean // 2, random.Random(seed), prefix="clean-t")
    clean += recombine(heldout_neg, n_clean - n_clean // 2, random.Random(seed + 2), prefix="clean-h")
    marks += [("clean", "tuning", "", "", "")] * (n_clean // 2)
    marks += [("clean", "heldout", "", "", "")] * (n_clean - n_clean // 2)
    all_rows = dirty + real + clean
    order = list(range(len(all_rows)))
    random.Random(seed + 1).shuffle(order)
    table = pa.Table.from_pylist([all_rows[i] for i in order], schema=QUESTION_SCHEMA)
    for k, name in enumerate(("_kind", "_part", "_bench", "_item", "_set")):
        table = table.append_column(name, pa.array([marks[i][k] for i in order], pa.string()))
    pq.write_table(table, out)


def scores(table: pa.Table, flagged: list[bool]) -> dict[str, dict[str, float]]:
    """Per part: recall per disguise kind, FP rate on real and generated clean rows, recall on real positives."""
    column = {"neg": "real FP", "clean": "gen FP", "pos": "real pos"}
    keys = [
        (part, column.get(kind, kind))
        for kind, part in zip(table.column("_kind").to_pylist(), table.column("_part").to_pylist(), strict=True)
    ]
    total, hit = Counter(keys), Counter(k for k, f in zip(keys, flagged, strict=True) if f)
    out: dict[str, dict[str, float]] = {"tuning": {}, "heldout": {}}
    for part, col in total:
        out[part][col] = hit[(part, col)] / total[(part, col)]
        out[part][f"n {col}"] = total[(part, col)]
    return out


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
    """Every disguised and real row (they are a few thousand), then generated clean rows up to `size`."""
    kinds = table.column("_kind").to_pylist()
    picked = [i for i, k in enumerate(kinds) if k != "clean"]
    clean = [i for i, k in enumerate(kinds) if k == "clean"]
    picked += random.Random(seed).sample(clean, max(0, min(size - len(picked), len(clean))))
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
    rows, measured, out = table.num_rows, table, None
    start = time.perf_counter()
    if args.method in ("medr1", "before"):
        out, _ = decontaminate(table, benchmarks, DecontamSettings(**(BEFORE if args.method == "before" else {})))
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
        "scores": scores(measured, flagged),
        "real_fp": real_fp(out if out is not None else measured, flagged),
    }
    print(json.dumps(result))


def real_fp(table: pa.Table, flagged: list[bool]) -> list[list[str]]:
    """The real negatives flagged: part, set, id and (MedR1's columns, when there) the item and rule that fired."""
    cols = ["_part", "_set", "source_id", "contam_benchmark", "contam_item_id", "contam_rule"]
    got = table.select([c for c in cols if c in table.column_names]).to_pylist()
    kinds = table.column("_kind").to_pylist()
    return [[str(v) for v in g.values()] for g, k, f in zip(got, kinds, flagged, strict=True) if f and k == "neg"]


def upper95(k: int, n: int) -> float:
    """Exact (Clopper-Pearson) one-sided 95% upper bound of a rate seen k times in n (bisection on the binomial CDF)."""
    if n == 0 or k >= n:
        return 1.0

    def cdf(p: float) -> float:  # from log terms: binomial coefficients overflow floats
        lp, lq, ln = math.log(p), math.log1p(-p), math.lgamma(n + 1)
        terms = (ln - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * lp + (n - i) * lq for i in range(k + 1))
        return sum(math.exp(t) for t in terms)

    lo, hi = k / n, 1.0
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if cdf(mid) > 0.05 else (lo, mid)
    return hi


def run_child(args: argparse.Namespace, file: Path, method: str, limit: int = 0, item_fraction: float = 1.0) -> dict:
    """Run `child` in a fresh interpreter and return its measurements."""
    cmd = [sys.executable, __file__, "--child", method, "--file", str(file), "--data", str(args.data)]
    cmd += ["--limit", str(limit), "--m1-sample", str(args.m1_sample), "--seed", str(args.seed)]
    cmd += ["--item-fraction", str(item_fraction)]
    done = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


LABELS = {
    "medr1": "MedR1 (views + confirmation)",
    "before": "MedR1 before (previous options rule)",
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
    "new_options": "newop",
    "options_unrelated": "opts*",
}


def print_part(results: list[dict], part: str, kinds: tuple[str, ...], title: str) -> None:
    """One table: a line per method with its recall per kind, FP rates and recall on the real positives."""
    print(title)
    sizes = results[0]["scores"][part]
    head = f"{'method':42} {'wall s':>7} {'peak RSS':>9} " + " ".join(f"{SHORT[k]:>6}" for k in kinds)
    print(head + " " + " ".join(f"{c:>9}" for c in REAL))
    for r in results:
        got = r["scores"][part]
        line = f"{LABELS[r['method']]:42} {r['wall_s']:>7.1f} {r['peak_rss_gb']:>7.2f}GB "
        line += " ".join(f"{got.get(k, float('nan')):>6.3f}" for k in kinds)
        print(line + " " + " ".join(f"{got.get(c, float('nan')):>9.5f}" for c in REAL))
    counts = ", ".join(f"{c} {sizes.get(f'n {c}', 0):,}" for c in REAL)
    print(f"(MedR1 and open-r1 rows per column: each kind {sizes.get(f'n {kinds[0]}', 0)}, {counts})")
    n = int(sizes.get("n real FP", 0))
    for r in results:
        fps = [f for f in r["real_fp"] if f[0] == part]
        k = len(fps)  # every real row is checked, by m1 too (its sample keeps them all)
        shown = "; ".join(" ".join(f[1:]) for f in fps[:6]) + (" ..." if len(fps) > 6 else "")
        print(f"  real FP {LABELS[r['method']]}: {k} of {n:,} (95% upper bound {upper95(k, n):.3%}) {shown}")
    print()


def main() -> None:
    """Generate the rows, run every method in its own process, print the three tables."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=170_000)
    p.add_argument("--contaminated", type=float, default=0.02)
    p.add_argument("--m1-sample", type=int, default=9000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    p.add_argument("--child", choices=list(LABELS), dest="method")
    p.add_argument("--file", type=Path)
    p.add_argument("--limit", type=int, default=0)
    p.add_argument("--item-fraction", type=float, default=1.0)
    p.add_argument("--no-growth", action="store_true", help="skip the time-against-rows-and-items table")
    args = p.parse_args()
    if args.method:
        child(args)
        return
    with tempfile.TemporaryDirectory() as tmp:
        file = Path(tmp) / "rows.parquet"
        t0 = time.perf_counter()
        make_rows(args.data, args.rows, args.contaminated, args.seed, file)
        print(f"generated {args.rows} rows in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
        results = [run_child(args, file, m) for m in LABELS]
        growth = []
        if not args.no_growth:
            growth = [run_child(args, file, "medr1", limit=n) for n in (20_000, 85_000) if n < args.rows]
            growth.append(results[0])
            growth += [run_child(args, file, "medr1", item_fraction=f) for f in (0.25, 0.5)]
    print(f"{results[0]['rows']:,} rows against {results[0]['items']:,} benchmark items; wall time and peak RSS of")
    print("the whole run (both parts); opts* = options under an unrelated stem, informative (no target)")
    print()
    print_part(results, "tuning", TUNING_KINDS, "Tuning part (DecontamSettings was tuned on these)")
    print_part(results, "heldout", HELDOUT_KINDS, "Held-out part (only reported)")
    m1 = results[-1]
    print(f"(m1: {m1['checked']} rows checked, wall time extrapolated x{m1['rows'] / m1['checked']:.0f})")
    if growth:
        print()
        print("MedR1's method: time against rows and benchmark items")
        print(f"{'rows':>7} {'items':>6} {'wall s':>8} {'peak RSS':>9} {'rows/s':>8}")
        for r in growth:
            rate = r["rows"] / r["wall_s"]
            print(f"{r['rows']:>7} {r['items']:>6} {r['wall_s']:>8.1f} {r['peak_rss_gb']:>7.2f}GB {rate:>8,.0f}")


if __name__ == "__main__":
    main()
