"""Release shard write and read throughput on ~170K real-size traces, beside `datasets` in the same run.

Usage: python benchmarks/shards.py [--copies 200] [--repeat 3] [--levels 3,9] [--data ../shared/data] [--tmp DIR]
The rows are the 862 real DeepSeek-R1 completions in ../shared/data/traces, repeated with fresh ids (mean reasoning
~6.9K characters), in the canonical trace columns, from nine sources; each copy's letters go through their own
substitution, so that no copy can be stored as a repeat of another.
MedR1 write: `write_shards` (sort by id, one source per shard, zstd, content-defined chunking, page index, sha256
of every file) plus the manifest, at the default zstd level 3 (also without content-defined chunking) and at 9.
Baseline: `datasets.Dataset.to_parquet` of the same table (one file, its defaults: snappy, content-defined chunking).
Read: `read_release` (every file's sha256 checked) against `pyarrow.parquet.read_table` of the baseline's file and
`datasets.Dataset.from_parquet` (what `load_dataset` does: into an Arrow cache).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from medr1_data.schema import TRACE_SCHEMA
from medr1_data.shards import ShardSettings, read_release, write_manifest, write_shards
from tests.real_traces import load_real_traces


def release_like(real: pa.Table, copies: int) -> pa.Table:
    """`copies` copies of the real traces with unique ids `<source>/train/<copy>-<i>`, shuffled."""
    real = real.select(TRACE_SCHEMA.names)
    source = pc.replace_substring_regex(real["source"], r"^deepseek_r1_(.*)_hard$", r"\1")
    real = real.set_column(real.schema.get_field_index("source"), "source", source)
    parts = []
    for c in range(copies):
        ids = [f"{s}/train/{c:04d}-{i:04d}" for i, s in enumerate(source.to_pylist())]
        part = real.set_column(0, "id", pa.array(ids))
        # Each copy's letters go through its own substitution (copy 0: none), so copies keep the statistics of the
        # real text but share no string a compressor could find again: the release order puts copies ~700 KB apart.
        letters = bytes(range(97, 123)) + bytes(range(65, 91))
        perm = np.random.default_rng(c).permutation(26) if c else np.arange(26)
        mapping = bytes.maketrans(letters, bytes([97 + int(i) for i in perm] + [65 + int(i) for i in perm]))
        for col in ("question", "reasoning", "response"):
            text = [None if t is None else t.encode().translate(mapping).decode() for t in part[col].to_pylist()]
            part = part.set_column(part.schema.get_field_index(col), col, pa.array(text, pa.string()))
        parts.append(part)
    table = pa.concat_tables(parts)
    return table.take(np.random.default_rng(0).permutation(table.num_rows)).combine_chunks()


BASE_WRITE = "write: datasets Dataset.to_parquet (1 file)"
BASE_READ = "read: pyarrow read_table of the datasets file"


def timed(fn: Callable[[], object]) -> tuple[float, object]:
    t0 = time.perf_counter()
    result = fn()
    return time.perf_counter() - t0, result


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*.parquet"))


def main() -> None:
    """Print write and read seconds, MB/s of Arrow data, file bytes and ratios to the `datasets` baseline."""
    import datasets
    from datasets.table import InMemoryTable

    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--copies", type=int, default=200)
    p.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[1].parent / "shared" / "data")
    p.add_argument("--tmp", type=Path, default=None, help="scratch folder (default: a temporary one)")
    p.add_argument("--repeat", type=int, default=3, help="best of this many interleaved runs (%(default)s)")
    p.add_argument("--levels", type=lambda s: [int(x) for x in s.split(",")], default=[3, 9], help="zstd levels")
    args = p.parse_args()
    if not (args.data / "traces").is_dir():
        sys.exit(f"benchmarks/shards.py: real traces not found in {args.data / 'traces'} (pass --data)")
    real = load_real_traces(args.data / "traces")
    table = release_like(real, args.copies)
    arrow_mb = table.nbytes / 1e6
    mean_chars = pc.mean(pc.utf8_length(table["reasoning"])).as_py()
    scratch = Path(tempfile.mkdtemp(dir=args.tmp))
    datasets.disable_progress_bars()
    best: dict[str, tuple[float, int | None]] = {}

    def record(name: str, seconds: float, size: int | None = None) -> None:
        if name not in best or seconds < best[name][0]:
            best[name] = (seconds, size)

    base_file = scratch / "datasets" / "train.parquet"
    base_file.parent.mkdir()
    ds = datasets.Dataset(InMemoryTable(table))
    try:
        # Variants run interleaved, best of --repeat: on a shared machine each sees the same background load.
        for r in range(args.repeat):
            for level in args.levels:
                for cdc in (True, False) if level == args.levels[0] else (True,):
                    out = scratch / f"medr1-zstd{level}-{cdc}"

                    def write(out: Path = out, level: int = level, cdc: bool = cdc) -> list:
                        settings = ShardSettings(compression_level=level, content_defined_chunking=cdc)
                        files = write_shards(table, out, settings)
                        write_manifest(out, files, pq.read_schema(out / files[0]["path"]), {"version": "0.0.0"}, "0")
                        return files

                    seconds, files = timed(write)
                    what = f"zstd {level}" + ("" if cdc else ", no content-defined chunking")
                    record(f"write: MedR1 write_shards, {what} ({len(files)} shards)", seconds, folder_bytes(out))
            seconds, _ = timed(lambda: ds.to_parquet(str(base_file)))
            record(BASE_WRITE, seconds, base_file.stat().st_size)

            seconds, back = timed(lambda: read_release(scratch / f"medr1-zstd{args.levels[0]}-True"))
            assert back.num_rows == table.num_rows
            record(f"read: MedR1 read_release, zstd {args.levels[0]} (sha256 checked)", seconds)
            seconds, back = timed(lambda: pq.read_table(base_file))
            assert back.num_rows == table.num_rows
            record(BASE_READ, seconds)
            cache = scratch / f"hf-cache-{r}"
            seconds, back = timed(lambda c=cache: datasets.Dataset.from_parquet(str(base_file), cache_dir=str(c)))
            assert back.num_rows == table.num_rows
            record("read: datasets Dataset.from_parquet (into an Arrow cache)", seconds)
            del back
            shutil.rmtree(cache, ignore_errors=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    print(f"{table.num_rows:,} traces, mean reasoning {mean_chars:,.0f} characters, {arrow_mb:,.0f} MB of Arrow data")
    print(f"best of {args.repeat}; baseline: {BASE_WRITE[7:]} for writes, {BASE_READ[6:]} for reads\n")
    print("| step | seconds | Arrow MB/s | file MB | time / baseline |")
    print("|---|---:|---:|---:|---:|")
    for name, (seconds, size) in best.items():
        base = best[BASE_WRITE if name.startswith("write") else BASE_READ][0]
        mb = f"{size / 1e6:,.0f}" if size is not None else ""
        print(f"| {name} | {seconds:.2f} | {arrow_mb / seconds:,.0f} | {mb} | {seconds / base:.2f}× |")


if __name__ == "__main__":
    main()
