"""`medr1-data audit` at scale: a generated `messages` dataset (II-Medical's layout) of N rows, time and peak memory.

Usage: python benchmarks/audit.py --rows 2200000 [--keep DIR] [--data ../shared/data]

Generates N rows as Parquet: a user turn with a question of 18-40 words drawn from the vocabulary of the real
MedMCQA validation stems and four lettered options, and an assistant turn `<think>…</think>` + answer taken from
the 851 real DeepSeek-R1 completions in `../shared/data/traces` (cycled; real lengths, mean about 5K characters of
thinking); 1% are re-cased copies of other rows (near-duplicates) and 20 are real MedQA test items (planted
leaks). Then it runs `medr1-data audit messages=FILE --benchmark-dir …/benchmarks` in a
fresh process and prints its wall time and peak RSS (the child's `ru_maxrss`) beside two baselines measured in the
same run: the I/O floor (pyarrow scanning the same file in batches) and the layout mapping alone (every row
parsed into a question and a trace, nothing checked).
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
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from medr1_data.streaming import row_group_batches  # noqa: E402

CHUNK = 50_000
PLANTED = 20


def vocabulary(bench_dir: Path) -> list[str]:
    """Words of the real MedMCQA validation stems (lower case, alphabetic, 3+ letters)."""
    words: set[str] = set()
    for line in (bench_dir / "medmcqa_validation.jsonl").read_text(encoding="utf-8").splitlines():
        words.update(w for w in json.loads(line)["question"].lower().split() if w.isalpha() and len(w) > 2)
    return sorted(words)


def _chat(prompt: str, reasoning: str, answer: str) -> list[dict[str, str]]:
    assistant = {"role": "assistant", "content": f"<think>{reasoning}</think>{answer}"}
    return [{"role": "user", "content": prompt}, assistant]


def real_completions(traces_dir: Path) -> list[tuple[str, str]]:
    """(reasoning, response) of the real R1 completions that closed their thinking."""
    from tests.real_traces import load_real_traces

    t = load_real_traces(traces_dir)
    pairs = zip(t.column("reasoning").to_pylist(), t.column("response").to_pylist(), strict=True)
    return [(r, a) for r, a in pairs if r and a]


def generate(path: Path, rows: int, data: Path, seed: int) -> None:
    """Write the dataset, CHUNK rows per row group."""
    rng = random.Random(seed)
    bench_dir = data / "benchmarks"
    words = vocabulary(bench_dir)
    traces = real_completions(data / "traces")
    medqa = (bench_dir / "medqa_us_4options_test.jsonl").read_text(encoding="utf-8").splitlines()
    plant_at = set(rng.sample(range(rows), PLANTED))
    schema = pa.schema([("messages", pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())])))])
    with pq.ParquetWriter(path, schema, compression="zstd") as writer:
        for start in range(0, rows, CHUNK):
            batch, recent = [], []
            for i in range(start, min(rows, start + CHUNK)):
                if i in plant_at:
                    item = json.loads(medqa[i % len(medqa)])
                    prompt = item["question"] + "\n" + "\n".join(f"{k}. {v}" for k, v in item["options"].items())
                elif recent and rng.random() < 0.01:
                    prompt = rng.choice(recent).upper()
                else:
                    stem = " ".join(rng.choice(words) for _ in range(rng.randint(18, 40))).capitalize() + "?"
                    opts = [" ".join(rng.choice(words) for _ in range(rng.randint(1, 4))) for _ in range(4)]
                    prompt = stem + "\n" + "\n".join(f"{'ABCD'[k]}. {o}" for k, o in enumerate(opts))
                    recent = [*recent, prompt][-100:]
                reasoning, answer = traces[i % len(traces)]
                batch.append({"messages": _chat(prompt, reasoning, answer)})
            writer.write_table(pa.Table.from_pylist(batch, schema=schema))


def io_floor(path: Path) -> float:
    """Seconds to scan the file in batches (reading and decoding every value)."""
    start = time.perf_counter()
    for batch in row_group_batches(pq.ParquetFile(path), 50_000):
        batch.column(0).flatten()
    return time.perf_counter() - start


def mapping_only(path: Path) -> float:
    """Seconds to map every row to a canonical question and trace (the audit's own parsing, nothing checked)."""
    from medr1_data.layouts import Layout, map_rows

    start, offset = time.perf_counter(), 0
    for batch in row_group_batches(pq.ParquetFile(path), 50_000):
        map_rows(batch, Layout("messages"), "train", offset)
        offset += batch.num_rows
    return time.perf_counter() - start


def run_audit(path: Path, bench_dir: Path, out: Path) -> tuple[float, float, str]:
    """`medr1-data audit` in a child process: (seconds, peak RSS in GB, its summary line)."""
    cmd = [sys.executable, "-m", "medr1_data.cli", "audit", f"messages={path}", "--benchmark-dir", str(bench_dir)]
    cmd += ["--out", str(out)]
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode:
        sys.exit(f"audit failed ({done.returncode}): {done.stderr.strip()}")
    peak_gb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024**2
    return seconds, peak_gb, done.stdout.strip()


def main() -> None:
    """Generate the dataset, time the baselines and the audit, print the table."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, default=2_200_000)
    p.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    p.add_argument("--keep", type=Path, help="generate into this folder and keep it (default: a temporary one)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    bench_dir = args.data / "benchmarks"
    with tempfile.TemporaryDirectory() as tmp:
        work = args.keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        data = work / "messages.parquet"
        t0 = time.perf_counter()
        if not (args.keep and data.exists() and pq.ParquetFile(data).metadata.num_rows == args.rows):
            generate(data, args.rows, args.data, args.seed)  # a kept dataset of the same size is reused
        print(f"{args.rows:,} rows ({data.stat().st_size / 1e6:,.0f} MB), ready in {time.perf_counter() - t0:.0f}s")
        seconds, peak, line = run_audit(data, bench_dir, work / "audit")  # first: this process is still small
        floor, mapping = io_floor(data), mapping_only(data)
        report = json.loads((work / "audit" / "report.json").read_text())
    print(f"\n{'':38}{'wall s':>9}{'x floor':>9}{'rows/s':>11}{'peak RSS':>10}")
    for name, s, rss in (("I/O floor (scan the Parquet file)", floor, None), ("layout mapping only", mapping, None),
                         ("medr1-data audit (all checks)", seconds, peak)):  # fmt: skip
        mem = f"{rss:.2f} GB" if rss is not None else "-"
        print(f"{name:38}{s:9.1f}{s / floor:9.1f}{args.rows / s:11,.0f}{mem:>10}")
    flagged = report["contamination"]["rows_flagged"]
    print(f"\n{line}\nplanted test items: {PLANTED}, rows flagged: {flagged}; near-duplicate rows: "
          f"{report['duplicates']['duplicate_rows']:,} (about 1% generated)")  # fmt: skip


if __name__ == "__main__":
    main()
