"""A real OpenAI-compatible server: llama-cpp-python's `llama_cpp.server` serving SmolLM2-135M-Instruct.

Distill against it (plain and streamed), `kill -9` mid-run and resume with zero duplicates, a whole demo build with it
as the teacher, and `medr1-eval --model local-chat-completions` against it. Skipped, with the reason, where
llama_cpp or the model package is not installed (tests/run.sh installs both).
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from medr1_data.teacher import CACHE_FILE, ResponseCache, plan_requests, run_distill

from .conftest import require_shared
from .llama_server import llama_server
from .smollm2 import GGUF_FILE as MODEL_FILE
from .test_distill_client import ROOT, cache_lines, questions, settings, write_questions

MODEL = "smollm2-135m-instruct"  # the name the requests ask for; llama.cpp echoes it and lists the GGUF file
N = 8  # questions of the kill-and-resume run


@pytest.fixture(scope="module")
def llama(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with llama_server(log=tmp_path_factory.mktemp("llama") / "server.log") as url:
        yield url


def distill_args(inp: Path, out: Path, cache: Path, url: str, *more: str) -> list[str]:
    args = [sys.executable, "-m", "medr1_data.cli", "distill", str(inp), "--out", str(out), "--model", MODEL]
    args += ["--base-url", url, "--cache", str(cache), "--max-tokens", "32", "--concurrency", "2", "--quiet"]
    return [*args, "--request-timeout", "120", *more]


def test_distill_against_llama_cpp_then_kill9_and_resume_with_zero_duplicates(tmp_path: Path, llama: str) -> None:
    inp = write_questions(tmp_path / "q.parquet", N)
    cache, out = tmp_path / "cache", tmp_path / "t.parquet"
    args = distill_args(inp, out, cache, llama)
    first = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while cache_lines(cache / CACHE_FILE) < 3 and time.monotonic() < deadline and first.poll() is None:
        time.sleep(0.02)
    first.send_signal(signal.SIGKILL)
    first.communicate(timeout=30)
    assert first.returncode == -signal.SIGKILL, "the run ended before the kill: make the requests longer"
    before = {r["key"] for r in ResponseCache(cache).records()}
    assert 3 <= len(before) < N

    second = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr[-2000:]
    assert re.search(rf"served from the cache +{len(before)}\n", second.stdout)
    assert re.search(rf"fetched now +{N - len(before)}\n", second.stdout)
    assert re.search(rf"model reported: \S*{re.escape(MODEL_FILE)} +{N}\n", second.stdout)
    records = list(ResponseCache(cache).records())
    teacher = settings(cache, llama, model=MODEL, max_tokens=32)
    keys = {k for _, _, k in plan_requests(questions(N), teacher).requests}
    counts = Counter(r["key"] for r in records)
    assert set(counts) == keys and set(counts.values()) == {1}  # zero duplicates, nothing missing
    for r in records:
        assert r["served_model"] == MODEL and r["listed_model"].endswith(MODEL_FILE)  # echoed vs listed
        assert r["usage"]["completion_tokens"] > 0 and r["message"]["content"].strip()
    table = pq.read_table(out)
    assert table.num_rows == N and table.column("error").null_count == N
    assert table.column("reasoning").null_count == N  # SmolLM2 writes no thinking


def test_streaming_against_llama_cpp_records_time_to_first_token(tmp_path: Path, llama: str) -> None:
    teacher = settings(tmp_path / "c", llama, model=MODEL, max_tokens=32, stream=True, stall_timeout=60.0)
    teacher.request_timeout, teacher.concurrency = 120.0, 1
    result = run_distill(questions(3), teacher, quiet=True)
    assert result.missing == 0 and result.stats.retries == {}
    for r in ResponseCache(teacher.cache).records():
        assert 0 < r["ttft_s"] < r["latency_s"] and r["finish_reason"] in ("stop", "length")
        assert r["message"]["content"].strip()
    assert all(row["response"] for row in result.table.to_pylist())


@pytest.mark.slow
def test_a_demo_build_with_llama_cpp_as_the_teacher(tmp_path: Path, llama: str) -> None:
    """The whole chain with a real teacher that writes no thinking: its traces are kept (no_thinking: keep) when
    right; the card names the model the server reported beside the requested one."""
    out = tmp_path / "release"
    sets = [
        "teacher.endpoint=openai", f"teacher.base_url={llama}", "teacher.offline=false",
        f"teacher.cache={tmp_path / 'c'}", "teacher.api_key_env=null", f"teacher.model={MODEL}", "teacher.samples=1",
        "teacher.max_tokens=64",
        "teacher.temperature=0.0", "teacher.extra={seed: 7}", "teacher.concurrency=2", "teacher.request_timeout=120",
        "select.no_thinking=keep", "select.reject_flags=[truncated, no_answer]", "select.min_quality=0",
    ]  # fmt: skip
    cmd = [sys.executable, "-m", "medr1_data.cli", "build", "--out", str(out), "--quiet"]
    done = subprocess.run([*cmd, *(a for s in sets for a in ("--set", s))], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert re.search(r"teacher traces +27\n", done.stdout)  # 28 demo questions, 1 contaminated, 1 sample each
    kept = int(re.search(r"traces kept +(\d+)\n", done.stdout).group(1))
    assert kept >= 1
    card = (out / "README.md").read_text()
    reported = re.search(r"\| model reported by the server \| `([^`]+)` \(27 traces\) — requested `(\S+)` \|", card)
    assert reported and reported.group(1).endswith(MODEL_FILE) and reported.group(2) == MODEL
    assert len(list(ResponseCache(tmp_path / "c").records())) == 27


def test_medr1_eval_local_chat_completions_against_llama_cpp(tmp_path: Path, llama: str) -> None:
    pytest.importorskip("lm_eval", reason="lm-eval is in the eval extra")
    bench = require_shared("benchmarks")
    cmd = [sys.executable, "-m", "medr1_data.lm_eval_tasks.cli", "--model", "local-chat-completions"]
    cmd += ["--model_args", f"base_url={llama}/chat/completions,model={MODEL},max_retries=1,num_concurrent=1"]
    cmd += ["--tasks", "medr1_medqa", "--limit", "2", "--apply_chat_template", "--gen_kwargs", "max_gen_toks=48"]
    cmd += ["--metadata", json.dumps({"benchmark_dir": str(bench)}), "--output_path", str(tmp_path / "out")]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    files = sorted((tmp_path / "out").rglob("results_*.json"))
    assert len(files) == 1
    res = json.loads(files[0].read_text())["results"]["medr1_medqa"]
    assert res["sample_len"] == 2 and 0.0 <= res["acc,committed"] <= 1.0 and "truncated,committed" in res
