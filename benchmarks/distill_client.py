"""Requests/s of the distill client against a zero-latency local server, beside a bare AsyncOpenAI + semaphore loop.

Usage: python benchmarks/distill_client.py [--requests 1000] [--repeats 2] [--concurrency 1 16 64 256]

The server (tests/teacher_server.py --static) runs in its own process and answers every request at once with the
same completion (4,000 bytes of reasoning). Per concurrency, the same number of requests goes through:
  bare:   AsyncOpenAI(max_retries=0) + asyncio.Semaphore + gather of chat.completions.create (parsed responses),
  medr1:  run_distill: request keys, the retrying client, the response cache on (appended and fsynced, group
          commit) and the output table,
  no fsync: the same with os.fsync replaced by a no-op (what durability costs).
Each variant runs `--repeats` times, interleaved; the table shows the best run of each. Target: medr1 >= 70% of bare.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from medr1_data.schema import QUESTION_SCHEMA  # noqa: E402
from medr1_data.teacher import TeacherSettings, plan_requests, run_distill  # noqa: E402


def questions(n: int) -> pa.Table:
    """n distinct questions of a typical MedMCQA size."""
    rows = [
        {
            "id": f"bench/train/{i:06d}",
            "source": "bench",
            "source_split": "train",
            "source_id": f"{i:06d}",
            "question": f"Question {i}: a 45-year-old presents with crushing chest pain and ST elevation in II, "
            "III and aVF. Which artery is most likely occluded?",
            "options": [{"label": x, "text": f"{x} artery option {i}"} for x in "ABCD"],
            "answer_label": "A",
            "context": None,
            "meta": "{}",
            "license": "mit",
        }
        for i in range(n)
    ]
    return pa.Table.from_pylist(rows, schema=QUESTION_SCHEMA)


def bare(url: str, table: pa.Table, teacher: TeacherSettings) -> float:
    """Seconds for the bare loop to send every question once."""
    from openai import AsyncOpenAI

    messages = plan_requests(table, teacher).messages

    async def run() -> None:
        client = AsyncOpenAI(base_url=url, api_key="bench", max_retries=0)
        sem = asyncio.Semaphore(teacher.concurrency)

        async def one(msgs: list[dict]) -> object:
            async with sem:
                return await client.chat.completions.create(
                    model=teacher.model,
                    messages=msgs,
                    temperature=teacher.temperature,
                    top_p=teacher.top_p,
                    max_tokens=teacher.max_tokens,
                )

        await asyncio.gather(*(one(m) for m in messages))
        await client.close()

    start = time.perf_counter()
    asyncio.run(run())
    return time.perf_counter() - start


def medr1(url: str, table: pa.Table, teacher: TeacherSettings, fsync: bool) -> tuple[float, int]:
    """Seconds for run_distill with a fresh cache, and how many fsync batches it wrote."""
    real_fsync = os.fsync
    with tempfile.TemporaryDirectory() as tmp:
        teacher.cache = tmp
        if not fsync:
            os.fsync = lambda fd: None
        try:
            start = time.perf_counter()
            result = run_distill(table, teacher, quiet=True)
            seconds = time.perf_counter() - start
        finally:
            os.fsync = real_fsync
        assert result.missing == 0 and result.table.num_rows == table.num_rows
        return seconds, result.stats.cache_batches


def main() -> None:
    """Print one row per concurrency."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--requests", type=int, default=1000)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 64, 256])
    args = p.parse_args()
    server = subprocess.Popen(
        [sys.executable, "-m", "tests.teacher_server", "--static", "--reasoning-bytes", "4000"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        url = f"http://127.0.0.1:{int(server.stdout.readline().split()[1])}/v1"
        table = questions(args.requests)
        print(f"{args.requests} requests per run, best of {args.repeats}; {os.cpu_count()} CPUs")
        header = ("concurrency", "bare req/s", "medr1 req/s", "ratio", "no-fsync req/s", "fsyncs")
        widths = [len(h) for h in header]
        print("  ".join(header))
        for c in args.concurrency:
            teacher = TeacherSettings(model="bench/r1", endpoint="vllm", base_url=url, api_key_env=None, concurrency=c)
            teacher.max_retries = 0
            best = {"bare": 0.0, "medr1": 0.0, "nofsync": 0.0}
            fsyncs = 0
            for _ in range(args.repeats):
                best["bare"] = max(best["bare"], args.requests / bare(url, table, teacher))
                seconds, fsyncs = medr1(url, table, teacher, fsync=True)
                best["medr1"] = max(best["medr1"], args.requests / seconds)
                best["nofsync"] = max(best["nofsync"], args.requests / medr1(url, table, teacher, fsync=False)[0])
            ratio = best["medr1"] / best["bare"]
            cells = (c, f"{best['bare']:.0f}", f"{best['medr1']:.0f}", f"{ratio:.2f}", f"{best['nofsync']:.0f}", fsyncs)
            print("  ".join(f"{cell:>{w}}" for cell, w in zip(cells, widths, strict=True)))
    finally:
        server.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            server.wait(5)


if __name__ == "__main__":
    main()
