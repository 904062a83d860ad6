"""Requests/s of the distill client: against a zero-latency local server beside a bare AsyncOpenAI + semaphore loop,
and over 1, 2 and 4 local endpoints with a fixed latency and capacity each, plus a run that kills one endpoint.

Usage: python benchmarks/distill_client.py [--requests 1000] [--repeats 2] [--concurrency 1 16 64 256]
       python benchmarks/distill_client.py --endpoints-only [--endpoints 1 2 4] [--latency 0.5] [--slots 8]

The server (tests/teacher_server.py --static) runs in its own process and answers every request at once with the
same completion (4,000 bytes of reasoning). Per concurrency, the same number of requests goes through:
  bare:   AsyncOpenAI(max_retries=0) + asyncio.Semaphore + gather of chat.completions.create (parsed responses),
  medr1:  run_distill: request keys, the retrying client, the response cache on (appended and fsynced, group
          commit) and the output table,
  no fsync: the same with os.fsync replaced by a no-op (what durability costs).
Each variant runs `--repeats` times, interleaved; the table shows the best run of each. Target: medr1 >= 70% of bare.

Endpoints: each stand-in server (its own process) works on at most `--slots` requests at once and takes `--latency`
seconds for each (the rest wait in its queue, as in vLLM's scheduler), so one serves at most slots / latency
requests/s and N of them N times that; the client (run_distill, cache on) runs `--endpoint-requests` requests with
concurrency 16 x N. Target: >= 3.5x requests/s from 1 to 4 endpoints. Then the kill run: 3 endpoints, one SIGKILLed
once it has answered a sixth of the requests; every server logs each key it answered, and the run must end with every
key answered exactly once over all servers and written to the cache once.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import pyarrow as pa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from medr1_data.schema import QUESTION_SCHEMA  # noqa: E402
from medr1_data.teacher import ResponseCache, TeacherSettings, plan_requests, run_distill  # noqa: E402


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


def start_server(*extra: str) -> tuple[subprocess.Popen, str]:
    """A stand-in teacher in its own process; (the process, its base URL)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.teacher_server", "--static", *extra], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    return proc, f"http://127.0.0.1:{int(proc.stdout.readline().split()[1])}/v1"


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(5)


def endpoints_run(n: int, args: argparse.Namespace, table: pa.Table, logs: Path) -> tuple[float, Counter[str]]:
    """Seconds for run_distill over n fresh endpoints, and how many times each key was answered."""
    opts = ["--latency", str(args.latency), "--max-concurrency", str(args.slots)]
    servers = [start_server(*opts, "--log", str(logs / f"{n}-{i}.log")) for i in range(n)]
    try:
        with tempfile.TemporaryDirectory() as tmp:
            teacher = TeacherSettings(
                model="bench/r1", endpoint="vllm", base_url=[u for _, u in servers], api_key_env=None,
                concurrency=16 * n, cache=tmp,
            )  # fmt: skip
            start = time.perf_counter()
            result = run_distill(table, teacher, quiet=True)
            seconds = time.perf_counter() - start
            assert result.missing == 0
    finally:
        for proc, _ in servers:
            stop(proc)
    return seconds, answered(logs.glob(f"{n}-*.log"))


def answered(files: object) -> Counter[str]:
    """Keys answered, counted over the servers' logs."""
    return Counter(line for f in files for line in Path(f).read_text().split())


def kill_run(args: argparse.Namespace, table: pa.Table, logs: Path) -> None:
    """3 endpoints; the first is SIGKILLed once it has answered a sixth of the requests. Prints what happened."""
    import threading

    opts = ["--latency", str(args.latency), "--max-concurrency", str(args.slots)]
    servers = [start_server(*opts, "--log", str(logs / f"kill-{i}.log")) for i in range(3)]
    victim, victim_log = servers[0][0], logs / "kill-0.log"

    def kill() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if victim_log.exists() and victim_log.read_bytes().count(b"\n") >= table.num_rows // 6:
                victim.send_signal(signal.SIGKILL)
                return
            time.sleep(0.01)

    killer = threading.Thread(target=kill)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            teacher = TeacherSettings(
                model="bench/r1", endpoint="vllm", base_url=[u for _, u in servers], api_key_env=None,
                concurrency=48, cache=tmp, breaker_failures=3,
            )  # fmt: skip
            killer.start()
            start = time.perf_counter()
            result = run_distill(table, teacher, quiet=True)
            seconds = time.perf_counter() - start
            killer.join()
            cached = Counter(r["key"] for r in ResponseCache(tmp).records())
    finally:
        for proc, _ in servers:
            stop(proc)
    keys = {k for _, _, k in plan_requests(table, teacher).requests}
    got = answered(logs.glob("kill-*.log"))
    per_server = [answered([logs / f"kill-{i}.log"]).total() for i in range(3)]
    st = result.stats
    print(f"\nkill run: 3 endpoints, endpoint 1 SIGKILLed after {per_server[0]} responses; {seconds:.1f}s")
    print(f"  responses per endpoint: {per_server[0]} (killed) / {per_server[1]} / {per_server[2]}")
    print(f"  tries that failed at the killed endpoint, retried elsewhere: {st.retries.get('connection_error', 0)}")
    print(f"  breaker opened on the killed endpoint: {st.endpoints[0]['trips']}x")
    print(f"  keys: {len(keys)} planned, {len(got)} answered, {sum(v > 1 for v in got.values())} answered twice")
    print(f"  cache: {len(cached)} keys, {sum(v > 1 for v in cached.values())} written twice, missing {result.missing}")
    assert set(got) == keys and set(got.values()) == {1} and set(cached) == keys and set(cached.values()) == {1}
    print("  every response arrived once; none was requested again after it arrived")


def endpoints_table(args: argparse.Namespace) -> None:
    """requests/s over 1, 2, 4 endpoints side by side, then the kill run."""
    table = questions(args.endpoint_requests)
    cap = args.slots / args.latency
    print(
        f"\n{args.endpoint_requests} requests per run; each endpoint: {args.slots} slots x {args.latency}s latency "
        f"= at most {cap:.0f} req/s; client concurrency 16 x endpoints; {os.cpu_count()} CPUs"
    )
    print("endpoints  req/s  x vs 1  ideal  answered twice")
    base = None
    with tempfile.TemporaryDirectory() as logs:
        for n in args.endpoints:
            seconds, got = endpoints_run(n, args, table, Path(logs))
            rate = args.endpoint_requests / seconds
            base = base or rate / n
            twice = sum(v > 1 for v in got.values())
            print(f"{n:>9}  {rate:5.1f}  {rate / base / 1:6.2f}x  {cap * n:5.0f}  {twice:>14}")
        kill_run(args, table, Path(logs))


def main() -> None:
    """Print one row per concurrency."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--requests", type=int, default=1000)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 64, 256])
    p.add_argument("--endpoints", type=int, nargs="+", default=[1, 2, 4])
    p.add_argument("--endpoint-requests", type=int, default=384)
    p.add_argument("--latency", type=float, default=0.5, help="seconds per request at each endpoint")
    p.add_argument("--slots", type=int, default=8, help="requests each endpoint works on at once")
    p.add_argument("--endpoints-only", action="store_true", help="only the endpoints table and the kill run")
    args = p.parse_args()
    if args.endpoints_only:
        endpoints_table(args)
        return
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
        stop(server)
    endpoints_table(args)


if __name__ == "__main__":
    main()
