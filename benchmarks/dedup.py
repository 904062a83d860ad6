"""Near-duplicate detection at scale: `dedup()` over N generated questions, time and peak memory, new beside old.

Usage: python benchmarks/dedup.py --rows 170000 [--rows 2200000 ...] [--traces 2] [--old REV] [--no-old]

Generates N questions (QUESTION_SCHEMA): stems of 18-40 words drawn with their real frequencies from the MedMCQA
validation stems in `../shared/data/benchmarks` (so that boilerplate words are common and rare words rare, as in
real sources), four options of 1-4 words; 1 % exact copies re-cased, 1 % near copies (one stem word changed),
0.5 % copies with shuffled options and new letters, 0.5 % truncated stems, 1.5 % of the stems repeated with other
options (a generic stem, different questions); one row per question as in the build's dedup stage (`--traces 2`:
two rows per `id`, as after the teacher). Then, each in a fresh process, it runs the current
`medr1_data.dedup.dedup` and the one of git revision `--old` (`git show REV:medr1_data/dedup.py`, `index.py` and
`selfindex.py` in a temporary package) and prints their time and peak RSS (the child's VmHWM, the input
table included) side by side, with the clusters compared: rows whose `dup_cluster` or `dup_keep` differ must be 0.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
OLD_REV = "5cc7d70"
CHUNK = 100_000


def word_frequencies(bench_dir: Path) -> tuple[list[str], list[int]]:
    """Words of the real MedMCQA validation stems and their counts (lower case, alphabetic)."""
    counts: Counter[str] = Counter()
    for line in (bench_dir / "medmcqa_validation.jsonl").read_text(encoding="utf-8").splitlines():
        counts.update(w for w in json.loads(line)["question"].lower().split() if w.isalpha())
    words = sorted(counts)
    return words, [counts[w] for w in words]


def _texts(words: pa.Array, rng: np.random.Generator, p: np.ndarray, n: int, lo: int, hi: int) -> list[str]:
    """`n` texts of `lo`-`hi` words drawn with frequencies `p` (column-wise: one draw, one join)."""
    lengths = rng.integers(lo, hi + 1, n)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    tokens = words.take(pa.array(rng.choice(len(words), int(offsets[-1]), p=p)))
    lists = pl.from_arrow(pa.LargeListArray.from_arrays(pa.array(offsets), tokens))
    assert isinstance(lists, pl.Series)
    return lists.list.join(" ").to_list()


def _copy(rng: random.Random, kind: float, src: tuple[str, list[str], int], fresh: list[str], word: str) -> tuple:
    """A copy of question `src` (stem, options, answer index) of the kind `kind` draws (see the module docstring)."""
    stem, opts, label = src
    if kind < 0.01:
        return stem.upper(), opts, label
    toks = stem.split()
    if kind < 0.02:
        toks[rng.randrange(len(toks))] = word
        return " ".join(toks), opts, label
    if kind < 0.025:
        order = rng.sample(range(4), 4)
        return stem, [opts[k] for k in order], order.index(label)
    if kind < 0.03:
        return " ".join(toks[: max(3, len(toks) * 3 // 4)]), opts, label
    return stem, fresh, label


def generate(path: Path, rows: int, data: Path, seed: int = 0, traces: int = 1) -> None:
    """Write `rows` questions, each `traces` times (`sample_idx` 0, 1, ...), to one Parquet file."""
    from medr1_data.schema import OPTION, QUESTION_SCHEMA

    words, counts = word_frequencies(data / "benchmarks")
    nrng, rng = np.random.default_rng(seed), random.Random(seed)
    p = np.array(counts, dtype=np.float64) / sum(counts)
    vocab = pa.array(words)
    stems = [s.capitalize() + "?" for s in _texts(vocab, nrng, p, rows, 18, 40)]
    flat = _texts(vocab, nrng, p, 4 * rows, 1, 4)
    opts = [flat[4 * i : 4 * i + 4] for i in range(rows)]
    labels = nrng.integers(0, 4, rows).tolist()
    kinds = nrng.random(rows).tolist()
    base: list[int] = []
    for i in range(rows):
        if base and kinds[i] < 0.045:
            j = base[rng.randrange(len(base))]
            src = (stems[j], opts[j], labels[j])
            stems[i], opts[i], labels[i] = _copy(rng, kinds[i], src, opts[i], flat[i].split()[0])
        else:
            base.append(i)
    ids = [f"{i:08d}" for i in range(rows)]
    opt_type = pa.list_(OPTION)
    options = pa.array([[{"label": "ABCD"[k], "text": o} for k, o in enumerate(q)] for q in opts], opt_type)
    table = pa.table(
        {
            "id": pa.array([f"gen/train/{i}" for i in ids]),
            "source": pa.array(["gen"] * rows),
            "source_split": pa.array(["train"] * rows),
            "source_id": pa.array(ids),
            "question": pa.array(stems),
            "options": options,
            "answer_label": pa.array(["ABCD"[k] for k in labels]),
            "context": pa.nulls(rows, pa.string()),
            "meta": pa.array(["{}"] * rows),
            "license": pa.array(["CC0-1.0"] * rows),
        },
        schema=QUESTION_SCHEMA,
    )
    out = table.take(pa.array(np.repeat(np.arange(rows), traces)))
    out = out.append_column("sample_idx", pa.array(np.tile(np.arange(traces, dtype=np.int32), rows)))
    pq.write_table(out, path, compression="zstd", row_group_size=CHUNK)


OLD_MODULES = ("dedup", "index", "selfindex")  # the modules of the old dedup (older revisions have no selfindex)


def old_package(rev: str, folder: Path) -> None:
    """`medr1_data/dedup.py`, `index.py` and `selfindex.py` (where it has one) of git revision `rev` as the package
    `old_medr1` in `folder`; the modules they import besides these are this checkout's."""
    pkg = folder / "old_medr1"
    pkg.mkdir(parents=True, exist_ok=True)
    (pkg / "__init__.py").write_text("", encoding="utf-8")
    for name in OLD_MODULES:
        got = subprocess.run(["git", "show", f"{rev}:medr1_data/{name}.py"], cwd=ROOT, capture_output=True, text=True)
        if got.returncode:
            continue  # a revision before the module existed
        src = got.stdout
        for other in OLD_MODULES:
            src = src.replace(f"from medr1_data.{other} ", f"from old_medr1.{other} ")
        (pkg / f"{name}.py").write_text(src, encoding="utf-8")


CHILD = """
import sys, time
sys.path[:0] = [{root!r}, {tmp!r}]
import pyarrow.parquet as pq
from {module} import dedup
table = pq.read_table({data!r})
start = time.perf_counter()
out = dedup(table)
seconds = time.perf_counter() - start
pq.write_table(out.select(["id", "sample_idx", "dup_cluster", "dup_keep"]), {out!r})
hwm = [line.split()[1] for line in open("/proc/self/status") if line.startswith("VmHWM")][0]
print(seconds, int(hwm) / 1024**2)
"""


def run_child(module: str, data: Path, out: Path, tmp: Path) -> tuple[float, float]:
    """`dedup` of `module` in a fresh process: (seconds inside dedup, peak RSS of the process in GB)."""
    code = CHILD.format(root=str(ROOT), tmp=str(tmp), module=module, data=str(data), out=str(out))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"{module} failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
    seconds, peak_gb = done.stdout.strip().splitlines()[-1].split()
    return float(seconds), float(peak_gb)


def differences(a: Path, b: Path) -> int:
    """Rows whose `dup_cluster` or `dup_keep` differ between two outputs (same rows, same order)."""
    ta, tb = pq.read_table(a), pq.read_table(b)
    if ta.column("id") != tb.column("id"):
        return ta.num_rows
    ca, cb = ta.column("dup_cluster").to_pylist(), tb.column("dup_cluster").to_pylist()
    ka, kb = ta.column("dup_keep").to_pylist(), tb.column("dup_keep").to_pylist()
    return sum(x != y or u != v for x, y, u, v in zip(ca, cb, ka, kb, strict=True))


def main() -> None:
    """Generate each size, run the new and the old dedup, print the table."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, action="append", help="questions (repeatable); default 170000")
    p.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    p.add_argument("--old", default=OLD_REV, help="git revision of the old dedup (default %(default)s)")
    p.add_argument("--no-old", action="store_true", help="run only the current dedup")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--traces", type=int, default=1, help="rows per question (default 1, as in the build)")
    args = p.parse_args()
    sizes = args.rows or [170_000]
    results = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        old_package(args.old, tmp)
        for n in sizes:
            data = tmp / f"q{n}.parquet"
            t0 = time.perf_counter()
            generate(data, n, args.data, args.seed, args.traces)
            made = f"generated in {time.perf_counter() - t0:.0f}s"
            print(f"{n:,} questions ({args.traces * n:,} rows), {made}", flush=True)
            new_s, new_gb = run_child("medr1_data.dedup", data, tmp / "new.parquet", tmp)
            dups = pq.read_table(tmp / "new.parquet", columns=["dup_keep"]).column("dup_keep")
            n_dup = len(dups) - sum(dups.to_pylist())
            row = {"n": n, "new_s": new_s, "new_gb": new_gb, "dup_rows": n_dup}
            if not args.no_old:
                row["old_s"], row["old_gb"] = run_child("old_medr1.dedup", data, tmp / "old.parquet", tmp)
                row["diff"] = differences(tmp / "new.parquet", tmp / "old.parquet")
            print(row, flush=True)
            results.append(row)
            data.unlink()
    print(f"\n{'questions':>10}{'new s':>9}{'new RSS':>10}{'old s':>9}{'old RSS':>10}{'rows differing':>16}"
          f"{'dup rows':>10}")  # fmt: skip
    for r in results:
        old = f"{r['old_s']:9.1f}{r['old_gb']:8.2f}GB" if "old_s" in r else f"{'-':>9}{'-':>10}"
        diff = f"{r['diff']:>16,}" if "diff" in r else f"{'-':>16}"
        print(f"{r['n']:>10,}{r['new_s']:9.1f}{r['new_gb']:8.2f}GB{old}{diff}{r['dup_rows']:>10,}")


if __name__ == "__main__":
    main()
