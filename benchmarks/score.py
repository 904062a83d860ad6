"""Verify + score throughput on ~170K real-length traces, in-process and through the CLI, beside baselines in one run.

Usage: python benchmarks/score.py [--copies 200] [--data ../shared/data] [--against 5cc7d70] [--no-m1] [--tagged]
The rows are the 862 real DeepSeek-R1 completions in ../shared/data/traces, repeated (mean reasoning ~6.9K chars).
--tagged: each response that is a label alone becomes `<answer>X</answer>`, the form the teacher prompt asks for.
Baselines in the same run: the m1-style check (a Python loop reading the last \\boxed{} / "answer is X" of each
completion); the library at git revision --against (in-process, and its CLI, whose verbs read and write whole
tables), whose outputs must equal this checkout's; and the I/O floor (the verbs' own streaming of the table, twice,
nothing computed).
CLI: `medr1-data verify IN --out V` then `medr1-data score V --out S`, two processes, as a user runs them.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from revision import old_tree  # noqa: E402

from medr1_data.contracts import TRACES  # noqa: E402
from medr1_data.parts import writer_options  # noqa: E402
from medr1_data.score import score  # noqa: E402
from medr1_data.streaming import stream_table  # noqa: E402
from medr1_data.verify import verify  # noqa: E402
from tests.real_traces import load_real_traces  # noqa: E402

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


def tagged(table: pa.Table) -> pa.Table:
    """`table` with each response that is a bare option label written as `<answer>X</answer>`."""
    responses = []
    for response, options in zip(table["response"].to_pylist(), table["options"].to_pylist(), strict=True):
        label = (response or "").strip()
        known = label in {o["label"] for o in options}
        responses.append(f"<answer>{label}</answer>" if known else response)
    return table.set_column(table.schema.get_field_index("response"), "response", pa.array(responses, pa.string()))


def old_modules(tree: Path) -> tuple[types.ModuleType, types.ModuleType]:
    """verify and score of the old tree as throwaway modules, bound to the old answers module."""

    def load(name: str) -> types.ModuleType:
        module = types.ModuleType(f"old_{name}")
        sys.modules[module.__name__] = module  # dataclasses look their module up
        exec(compile((tree / "medr1_data" / f"{name}.py").read_text(), module.__name__, "exec"), module.__dict__)
        return module

    answers, saved = load("answers"), sys.modules["medr1_data.answers"]
    sys.modules["medr1_data.answers"] = answers
    try:
        return load("verify"), load("score")
    finally:
        sys.modules["medr1_data.answers"] = saved


def cpu_seconds() -> float:
    """User + system seconds of this process and of its finished children so far."""
    return sum(os.times()[:4])


def timed(fn: object, *args: object) -> tuple[float, float, object]:
    """(seconds, CPU seconds, result) of one call; CPU: user + system of all threads and finished children."""
    t0, c0 = time.perf_counter(), cpu_seconds()
    out = fn(*args)  # type: ignore[operator]
    return time.perf_counter() - t0, cpu_seconds() - c0, out


def cli(folder: Path, pythonpath: Path | None) -> tuple[float, float]:
    """(seconds, CPU seconds) for verify then score through the CLI, as two processes."""
    env = {**os.environ, "PYTHONPATH": str(pythonpath or ROOT)}

    def run() -> None:
        for verb, src, dst in (("verify", "in.parquet", "v.parquet"), ("score", "v.parquet", "s.parquet")):
            cmd = [sys.executable, "-m", "medr1_data.cli", verb, str(folder / src), "--out", str(folder / dst)]
            subprocess.run(cmd, check=True, env=env, capture_output=True)

    return timed(run)[:2]


def io_floor(folder: Path) -> None:
    """What the two verbs do with nothing computed: stream the table through (read a row group at a time, check at
    the door, write with the verbs' settings) twice, in this process."""

    def same_table(batch: pa.Table) -> pa.Table:
        return batch

    for src, dst in (("in.parquet", "f1.parquet"), ("f1.parquet", "f2.parquet")):
        for _ in stream_table(folder / src, folder / dst, TRACES, same_table):
            pass


def same(a: pa.Table, b: pa.Table) -> bool:
    """Equal column names and values (types compared as values: the old verbs wrote large strings)."""
    return a.column_names == b.column_names and all(
        a.column(c).to_pylist() == b.column(c).to_pylist() if c in ("quality",) else a.column(c).equals(b.column(c))
        for c in a.column_names
    )


def main() -> None:
    """Print seconds and rows/s of each way, with the baselines, and whether the outputs are identical."""
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--copies", type=int, default=200)
    p.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    p.add_argument("--against", default="5cc7d70", help="git revision of the baseline library (%(default)s)")
    p.add_argument("--no-m1", action="store_true", help="leave out the m1 regex baseline (about 40 s)")
    p.add_argument("--tagged", action="store_true", help="label-alone responses as <answer>X</answer>")
    args = p.parse_args()
    real = load_real_traces(args.data / "traces")
    if not real.num_rows:
        sys.exit(f"no traces in {args.data / 'traces'}: pass --data DIR (the folder holding traces/)")
    if args.tagged:
        real = tagged(real)
    table = pa.concat_tables([real] * args.copies).combine_chunks()
    n = table.num_rows
    mean_chars = sum(len(r or "") for r in real.column("reasoning").to_pylist()) / real.num_rows
    rows: list[tuple[str, float, float]] = []
    if not args.no_m1:
        rows.append(("baseline: last-match regex per row (m1)", *timed(baseline, table)[:2]))
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        tree = old_tree(args.against, folder / "old")
        t_v, c_v, verified = timed(verify, table)
        t_s, c_s, scored = timed(score, verified)
        rows += [("medr1 verify (in-process)", t_v, c_v), ("medr1 score (in-process)", t_s, c_s)]
        rows.append(("medr1 verify + score (in-process)", t_v + t_s, c_v + c_s))
        identical = {}
        if tree:
            old_v, old_s = old_modules(tree)
            t_ov, c_ov, old_verified = timed(old_v.verify, table)
            t_os, c_os, old_scored = timed(old_s.score, old_verified)
            rows.append((f"  baseline @ {args.against} (in-process)", t_ov + t_os, c_ov + c_os))
            identical["in-process"] = old_scored.equals(scored)  # type: ignore[union-attr]
        pq.write_table(table, folder / "in.parquet", row_group_size=8192, **writer_options(table.schema))
        del verified
        rows.append(("medr1 verify + score (CLI, 2 processes)", *cli(folder, None)))
        new_cli = pq.read_table(folder / "s.parquet")
        identical["CLI vs in-process"] = same(new_cli, scored)  # type: ignore[arg-type]
        if tree:
            rows.append((f"  baseline @ {args.against} (CLI)", *cli(folder, tree)))
            identical["CLI vs baseline CLI"] = same(new_cli, pq.read_table(folder / "s.parquet"))
        rows.append(("  I/O floor: the verbs' streaming, no compute", *timed(io_floor, folder)[:2]))
    form = "; label-alone responses as <answer>X</answer>" if args.tagged else ""
    print(f"{n:,} traces, mean reasoning {mean_chars:,.0f} characters{form}; load average {os.getloadavg()[0]:.1f}\n")
    print(f"{'step':46} {'seconds':>8} {'rows/s':>10} {'CPU s':>7}")
    for name, secs, cpu in rows:
        print(f"{name:46} {secs:>8.2f} {n / secs:>10,.0f} {cpu:>7.2f}")
    cpus = os.cpu_count() or 1
    print(f"(CPU s: user + system of all threads and child processes; {cpus} CPUs here)")
    for rate in (20_000, 50_000):
        print(f"{rate:,} rows/s leaves {n / rate:.2f} s: at most {n / rate * cpus:.1f} CPU s on {cpus} CPUs")
    for what, ok in identical.items():
        print(f"outputs identical ({what}): {'yes' if ok else 'NO'}")


if __name__ == "__main__":
    main()
