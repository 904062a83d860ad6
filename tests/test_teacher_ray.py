"""`teacher.engine: ray` in Ray's local mode against local servers: ray.data.llm's HTTP processor (it needs no vLLM),
every result into the same response cache as the plain client, and a SIGKILLed Ray job that resumes like it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from medr1_data.teacher import CACHE_FILE, ResponseCache, plan_requests, run_distill
from medr1_data.teacher.ray_engine import http_payload, split_by_weight, vllm_body
from medr1_data.teacher.settings import RaySettings

from .teacher_server import Reply, TeacherServer, messages_key
from .test_distill_client import ROOT, questions, settings, write_questions

RAY_OPTS = {"num_cpus": 2, "batch_size": 2}


def require_ray() -> None:
    pytest.importorskip("ray.data.llm", reason="Ray Data LLM is the optional extra: pip install 'medr1[ray]'")


def message_keys(n: int, teacher: object) -> dict[str, str]:
    """request key -> the key the stand-in server counts a header-less request under (its messages' hash)."""
    plan = plan_requests(questions(n), teacher)
    return {key: messages_key(plan.messages[i]) for i, _, key in plan.requests}


def test_rows_are_split_by_weight_and_bodies_are_the_clients() -> None:
    rows = [{"key": str(i)} for i in range(12)]
    parts = split_by_weight(rows, [2.0, 1.0])
    assert [len(p) for p in parts] == [8, 4]
    assert sorted(r["key"] for p in parts for r in p) == sorted(map(str, range(12)))
    teacher = settings(Path("c"), "http://x/v1", extra={"top_k": 20})
    body = http_payload(teacher, [{"role": "user", "content": "q"}])
    assert body == {"model": "test/r1", "messages": [{"role": "user", "content": "q"}], "temperature": 0.6,
                    "top_p": 0.95, "max_tokens": 32768, "top_k": 20}  # fmt: skip
    out = vllm_body({"generated_text": "thought</think>A", "num_generated_tokens": 7, "num_input_tokens": 30}, "m", 7)
    assert out["choices"][0]["finish_reason"] == "length"
    assert out["usage"] == {"prompt_tokens": 30, "completion_tokens": 7}
    assert vllm_body({"__inference_error__": "OOM"}, "m", 7) == {"error": "OOM"}


def test_ray_engine_fills_the_same_cache_as_the_client(tmp_path: Path) -> None:
    require_ray()
    with TeacherServer(default=Reply(delay=0.02)) as a, TeacherServer(default=Reply(delay=0.02)) as b:
        teacher = settings(tmp_path / "c", a.url, base_url=[a.url, b.url], engine="ray", ray=RaySettings(**RAY_OPTS))
        result = run_distill(questions(12), teacher, quiet=True)
        answered = a.paid + b.paid
    assert result.missing == 0 and result.stats.fetched == 12 and result.stats.stopped is None
    assert sum(a.paid.values()) == sum(b.paid.values()) == 6  # equal weights: half each
    assert set(answered.values()) == {1} and set(answered) == set(message_keys(12, teacher).values())
    records = list(ResponseCache(teacher.cache).records())
    assert {r["key"] for r in records} == set(message_keys(12, teacher)) and len(records) == 12
    assert {r["endpoint"] for r in records} == {a.url, b.url}
    assert all(r["message"]["reasoning_content"] == "Reasoning about the question." for r in records)
    # the plain client reads what Ray wrote: nothing is asked again
    with TeacherServer() as c:
        again = run_distill(questions(12), settings(tmp_path / "c", c.url), quiet=True)
        assert again.stats.cached_before == 12 and c.calls == []
    assert again.table.column("error").null_count == 12


def _cached_lines(cache: Path) -> int:
    """Complete lines in the response cache file so far (0 before it exists)."""
    path = cache / CACHE_FILE
    return path.read_bytes().count(b"\n") if path.exists() else 0


@pytest.mark.slow
def test_a_sigkilled_ray_job_resumes_without_asking_twice(tmp_path: Path) -> None:
    """`kill -9` of the driver while requests are in flight. What reached the cache is never asked again; what
    the servers answered but was still at a Ray worker (its batch unfinished) is lost and asked again: at most the
    answered-but-not-cached ones, and each key ends in the cache exactly once."""
    require_ray()
    inp = write_questions(tmp_path / "q.parquet", 16)
    cache = tmp_path / "cache"
    with TeacherServer(default=Reply(delay=0.02)) as server:
        server.hold_after = 8  # 8 responses, then every request hangs: the job is killed with requests in flight
        args = [sys.executable, "-m", "medr1_data.cli", "distill", str(inp), "--out", str(tmp_path / "t.parquet")]
        args += ["--model", "test/r1", "--base-url", server.url, "--engine", "ray", "--cache", str(cache)]
        args += ["--set", "ray.num_cpus=2", "--set", "ray.batch_size=2", "--max-retries", "0", "--quiet"]
        first = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
        deadline = time.monotonic() + 90
        while sum(server.paid.values()) < 8 and time.monotonic() < deadline and first.poll() is None:
            time.sleep(0.05)
        while _cached_lines(cache) < 2 and time.monotonic() < deadline and first.poll() is None:
            time.sleep(0.05)  # the finished batches reach the driver and the cache (slower under load)
        try:
            os.killpg(first.pid, signal.SIGKILL)  # the driver and the local Ray it started (its process group)
        finally:
            first.communicate(timeout=30)
        assert first.returncode == -signal.SIGKILL
        before = {r["key"] for r in ResponseCache(cache).records()}
        assert 2 <= len(before) <= 8 and sum(server.paid.values()) == 8
        server.hold_after = None
        second = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert second.returncode == 0, second.stderr[-2000:]
        answered = dict(server.paid)
    keys = message_keys(16, settings(cache, server.url))
    assert set(answered) == set(keys.values())
    assert all(answered[keys[k]] == 1 for k in before)  # cached before the kill: never asked again
    assert sum(answered.values()) - 16 <= 8 - len(before)  # asked twice: only answers lost at the workers
    records = [json.loads(line) for line in (cache / CACHE_FILE).read_text().splitlines()]
    assert sorted(r["key"] for r in records) == sorted(keys)
