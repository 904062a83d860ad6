"""The teacher client against a real HTTP server on 127.0.0.1 (tests/teacher_server.py), not a patched client:
scripted faults, every reasoning shape, kill -9 and rerun with exactly-once output, and a key that never leaks."""

from __future__ import annotations

import io
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from medr1_data import Medr1Error
from medr1_data.cli import main
from medr1_data.prompts import get_template
from medr1_data.schema import QUESTION_SCHEMA, TRACE_SCHEMA
from medr1_data.teacher import (
    CACHE_FILE,
    ERRORS_FILE,
    KEY_HEADER,
    ResponseCache,
    TeacherSettings,
    distill,
    lock_cache,
    plan_requests,
    retry_after,
    run_distill,
)
from medr1_data.teacher.prices import cost_usd, price_for, token_counts

from .teacher_server import Reply, TeacherServer

ROOT = Path(__file__).resolve().parents[1]


def questions(n: int) -> pa.Table:
    rows = [
        {
            "id": f"medqa/train/q{i:03d}",
            "source": "medqa",
            "source_split": "train",
            "source_id": f"q{i:03d}",
            "question": f"Case {i}: a {20 + i}-year-old with fever. Which organism is most likely?",
            "options": [{"label": "A", "text": "E. coli"}, {"label": "B", "text": f"Strep {i}"}],
            "answer_label": "A",
            "context": "An abstract." if i % 5 == 0 else None,
            "meta": "{}",
            "license": "mit",
        }
        for i in range(n)
    ]
    return pa.Table.from_pylist(rows, schema=QUESTION_SCHEMA)


def settings(cache: Path, url: str, **kw: object) -> TeacherSettings:
    base: dict[str, object] = {
        "model": "test/r1",
        "endpoint": "openai",
        "base_url": url,
        "api_key_env": None,
        "cache": str(cache),
        "concurrency": 4,
        "request_timeout": 1.0,
        "max_retries": 3,
        "backoff_s": 0.01,
        "backoff_max_s": 0.05,
        "price_input_cache_hit_per_m": 1.0,
        "price_input_per_m": 2.0,
        "price_output_per_m": 4.0,
    }
    return TeacherSettings(**{**base, **kw})


@pytest.fixture
def server() -> Iterator[TeacherServer]:
    with TeacherServer() as s:
        yield s


# ----------------------------------------------------------------------------------------------- faults and shapes


def test_scripted_faults_and_every_reasoning_shape(tmp_path: Path, server: TeacherServer) -> None:
    table = questions(15)
    teacher = settings(tmp_path / "cache", server.url, request_timeout=2.0)
    k = [key for _, _, key in plan_requests(table, teacher).requests]
    ok = Reply()
    server.script = {
        k[0]: [Reply(kind="status", status=429, headers={"Retry-After": "1"}), ok],
        k[1]: [Reply(kind="status", status=500), Reply(kind="status", status=503), ok],
        k[2]: [Reply(kind="reset"), ok],
        k[3]: [Reply(delay=5.0), ok],  # hangs past the 2 s request timeout
        k[4]: [Reply(content="", reasoning=""), ok],  # DeepSeek's empty 200 under load
        k[5]: [Reply(finish_reason="length", content="", reasoning="Thinking until the limit")],
        k[6]: [Reply(shape="reasoning_content", reasoning="RC thinking", content="<answer>B</answer>")],
        k[7]: [Reply(shape="reasoning", reasoning="vLLM thinking", content="The answer is B.")],
        k[8]: [Reply(shape="inline", reasoning="Inline thinking", content="<answer>A</answer>")],
        k[9]: [Reply(shape="prefilled", reasoning="Prefilled thinking", content="Answer: A")],
        k[10]: [Reply(kind="status", status=400, body='{"error": {"message": "prompt too long"}}')],
        k[11]: [Reply(kind="status", status=500)] * 4,  # max_retries + 1 attempts, then the next run succeeds
        k[12]: [Reply(kind="invalid"), ok],
        k[13]: [Reply(finish_reason="insufficient_system_resource", content="partial"), ok],
        k[14]: [Reply(kind="close"), ok],
    }
    start = time.monotonic()
    result = run_distill(table, teacher, quiet=True)
    assert time.monotonic() - start < 20

    out = result.table
    assert out.select(TRACE_SCHEMA.names).schema.equals(TRACE_SCHEMA)
    rows = {r["id"]: r for r in out.to_pylist()}
    row = [rows[f"medqa/train/q{i:03d}"] for i in range(15)]
    assert out.num_rows == 15 and result.missing == 2

    # 429: one retry, after at least the Retry-After second.
    calls0 = [c for c in server.calls if c.key == k[0]]
    assert [c.reply for c in calls0] == ["status", "ok:reasoning_content:stop"]
    assert calls0[1].t - calls0[0].t >= 0.95
    # 5xx, reset, hang, empty, invalid body, insufficient resources, closed connection: retried until success.
    assert server.replies(k[1]) == ["status", "status", "ok:reasoning_content:stop"]
    for i, first in ((2, "reset"), (3, "ok:reasoning_content:stop"), (4, "empty"), (12, "invalid"), (14, "close")):
        assert server.replies(k[i]) == [first, "ok:reasoning_content:stop"], i
    assert server.replies(k[13])[0] == "ok:reasoning_content:insufficient_system_resource"
    for i in (0, 1, 2, 3, 4, 12, 13, 14):
        assert row[i]["error"] is None and row[i]["reasoning"] == "Reasoning about the question.", i
        assert row[i]["response"] == "<answer>A</answer>" and row[i]["finish_reason"] == "stop"
    assert result.stats.retries == {
        "http_429": 1,
        "http_500": 1 + 3,  # k1 once, k11 three times
        "http_503": 1,
        "connection_error": 2,  # reset, closed
        "timeout": 1,
        "empty_response": 1,
        "invalid_body": 1,
        "finish_insufficient_system_resource": 1,
    }

    # length: kept and marked, asked once.
    assert server.replies(k[5]) == ["ok:reasoning_content:length"]
    assert (row[5]["finish_reason"], row[5]["reasoning"], row[5]["response"]) == (
        "length",
        "Thinking until the limit",
        "",
    )
    # The reasoning shapes.
    assert (row[6]["reasoning"], row[6]["response"]) == ("RC thinking", "<answer>B</answer>")
    assert (row[7]["reasoning"], row[7]["response"]) == ("vLLM thinking", "The answer is B.")
    assert (row[8]["reasoning"], row[8]["response"]) == ("Inline thinking", "<answer>A</answer>")
    assert (row[9]["reasoning"], row[9]["response"]) == ("Prefilled thinking", "Answer: A")
    # 400: not retried; 500 forever: max_retries + 1 attempts. Both are rows with `error`, and not cached.
    assert server.replies(k[10]) == ["status"]
    assert row[10]["error"].startswith("http_400: ") and "prompt too long" in row[10]["error"]
    assert row[10]["error"].endswith("after 1 attempt") and row[10]["reasoning"] is None
    assert server.replies(k[11]) == ["status"] * 4 and row[11]["error"] == "http_500 after 4 attempts"
    assert result.stats.failures == {"http_400": 1, "http_500": 1}
    cached = ResponseCache(teacher.cache).load()
    assert set(cached) == set(k) - {k[10], k[11]}
    errors = [json.loads(line) for line in (tmp_path / "cache" / ERRORS_FILE).read_text().splitlines()]
    assert {(e["key"], e["id"]) for e in errors} == {(k[10], row[10]["id"]), (k[11], row[11]["id"])}

    # What was sent: the template's messages, the sampling parameters, the key header, no API key.
    q = table.slice(6, 1).to_pylist()[0]
    sent = next(c for c in server.calls if c.key == k[6])
    assert sent.body["messages"] == get_template("medr1-mcq-v1").messages(q["question"], q["options"], q["context"])
    sampling = (sent.body["model"], sent.body["temperature"], sent.body["top_p"], sent.body["max_tokens"])
    assert sampling == ("test/r1", 0.6, 0.95, 32768)
    assert sent.headers[KEY_HEADER.lower()] == k[6] and sent.headers["authorization"] == "Bearer EMPTY"
    # Usage, cost (64 cache-hit + 36 miss input tokens, 50 output), latency, teacher columns.
    assert row[6]["prompt_tokens"] == 100 and row[6]["completion_tokens"] == 50
    assert row[6]["cost_usd"] == pytest.approx((64 * 1 + 36 * 2 + 50 * 4) / 1e6)
    assert result.stats.cost_usd == pytest.approx(13 * (64 * 1 + 36 * 2 + 50 * 4) / 1e6)
    assert 0 < row[6]["latency_s"] < 2 and row[6]["teacher_model"] == "test/r1"
    assert row[6]["prompt_template"] == "medr1-mcq-v1" and row[0]["context"] == "An abstract."

    # The next run asks only for what is missing: the server now answers both.
    before = len(server.calls)
    again = run_distill(table, teacher, quiet=True)
    assert again.missing == 0 and again.stats.fetched == 2 and again.stats.cached_before == 13
    assert sorted(c.key for c in server.calls[before:]) == sorted([k[10], k[11]])
    assert again.table.column("error").null_count == 15


def test_samples_are_separate_requests_and_equal_questions_share_them(tmp_path: Path, server: TeacherServer) -> None:
    table = pa.concat_tables([questions(3), questions(3).slice(1, 1)])
    table = table.set_column(0, "id", pa.array(["a", "b", "c", "d"]))  # d repeats b's content
    teacher = settings(tmp_path / "cache", server.url, samples=2)
    result = run_distill(table, teacher, quiet=True)
    assert result.stats.total == 6 and len(server.calls) == 6 and result.missing == 0
    assert result.table.num_rows == 8
    d = result.table.to_pydict()
    assert list(zip(d["id"], d["sample_idx"], strict=True)) == [(x, s) for x in "abcd" for s in (0, 1)]
    assert d["reasoning"][2:4] == d["reasoning"][6:8]


def test_a_run_of_failures_stops_early(tmp_path: Path, server: TeacherServer) -> None:
    server.default = Reply(kind="status", status=500)
    teacher = settings(tmp_path / "cache", server.url, max_retries=0, concurrency=2)
    result = run_distill(questions(60), teacher, quiet=True)
    assert result.missing == 60 and result.stats.stopped and "requests all failed" in result.stats.stopped
    assert 20 <= len(server.calls) < 30
    errors = result.table.column("error").to_pylist()
    assert sum(e.startswith("not requested: the run stopped") for e in errors) == 60 - result.stats.failed
    with pytest.raises(Medr1Error, match=r"60 of 60 teacher responses are still missing.*stopped early"):
        distill(questions(60), teacher, quiet=True)


@pytest.mark.parametrize(("status", "what"), [(401, "authentication failed"), (402, "insufficient balance")])
def test_errors_every_request_would_hit_stop_the_run(
    tmp_path: Path, server: TeacherServer, monkeypatch: pytest.MonkeyPatch, status: int, what: str
) -> None:
    key = "sk-" + secrets.token_hex(16)
    monkeypatch.setenv("MEDR1_TEST_KEY", key)
    echo = json.dumps({"error": {"message": f"Incorrect API key provided: {key}"}})  # servers echo keys back
    server.default = Reply(kind="status", status=status, body=echo)
    teacher = settings(tmp_path / "cache", server.url, api_key_env="MEDR1_TEST_KEY")
    result = run_distill(questions(30), teacher, quiet=True)
    assert result.missing == 30 and len(server.calls) <= 4
    assert f"HTTP {status} ({what})" in result.stats.stopped and key not in result.stats.stopped
    assert "***" in result.stats.stopped
    assert all(key not in e for e in result.table.column("error").to_pylist())


def test_missing_key_variable_is_an_error_before_any_request(tmp_path: Path, server: TeacherServer) -> None:
    teacher = settings(tmp_path / "cache", server.url, api_key_env="MEDR1_NO_SUCH_VARIABLE")
    with pytest.raises(Medr1Error, match="environment variable MEDR1_NO_SUCH_VARIABLE is not set"):
        run_distill(questions(2), teacher, quiet=True)
    assert server.calls == []


def test_progress_line_on_stderr(tmp_path: Path, server: TeacherServer) -> None:
    server.default = Reply(delay=0.05)
    stream = io.StringIO()
    run_distill(questions(12), settings(tmp_path / "c", server.url), progress_stream=stream, progress_interval=0.05)
    lines = stream.getvalue().splitlines()
    assert len(lines) >= 2
    assert lines[-1].startswith("distill 12/12 (100.0%) | ")
    for part in ("req/s", "tok/s", "$0.00 spent", "ETA 0s", "0 retries, 0 failed"):
        assert part in lines[-1]


def test_distill_stage_requests_online_and_offline_does_not(tmp_path: Path, server: TeacherServer) -> None:
    table = questions(4)
    with pytest.raises(Medr1Error, match=r"4 of 4 teacher responses are not in the cache"):
        distill(table, settings(tmp_path / "cache", server.url, offline=True))
    assert server.calls == []
    out = distill(table, settings(tmp_path / "cache", server.url), quiet=True)
    assert out.num_rows == 4 and out.column("error").null_count == 4 and len(server.calls) == 4
    assert distill(table, settings(tmp_path / "cache", server.url, offline=True)).equals(out)


def test_one_run_per_cache_at_a_time(tmp_path: Path) -> None:
    cache = ResponseCache(tmp_path)
    lock = lock_cache(cache)
    try:
        with pytest.raises(Medr1Error, match="another distill run is using this cache"):
            lock_cache(cache)
    finally:
        lock.release()
    lock_cache(cache).release()


def test_retry_after_forms() -> None:
    assert retry_after({"retry-after": "7"}) == 7.0
    assert retry_after({"retry-after-ms": "1500", "retry-after": "9"}) == 1.5
    when = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 30))
    assert 25 < retry_after({"retry-after": when}) <= 31
    assert retry_after({"retry-after": "soon"}) is None and retry_after({}) is None


def test_prices_and_token_counts() -> None:
    r1 = price_for("deepseek", "deepseek-reasoner")
    assert (r1.input_cache_hit, r1.input_cache_miss, r1.output) == (0.14, 0.55, 2.19)
    assert price_for("deepseek", "deepseek-reasoner", input_cache_miss=0.28).input_cache_hit == 0.14
    assert price_for("vllm", "deepseek-ai/DeepSeek-R1").output == 0.0
    unknown = price_for("openai", "some/model", input_cache_miss=2.0)
    assert unknown.input_cache_hit == 2.0 and unknown.output == 0.0
    assert token_counts(
        {"prompt_tokens": 10, "prompt_tokens_details": {"cached_tokens": 4}, "completion_tokens": 3}
    ) == (
        4,
        6,
        3,
    )
    assert token_counts({"prompt_tokens": 10, "completion_tokens": 3}) == (0, 10, 3)
    usage = {"prompt_tokens": 1000, "prompt_cache_hit_tokens": 600, "completion_tokens": 2000}
    assert cost_usd(usage, r1) == pytest.approx((600 * 0.14 + 400 * 0.55 + 2000 * 2.19) / 1e6)


# ----------------------------------------------------------------------------------------------- the CLI


def write_questions(path: Path, n: int) -> Path:
    pq.write_table(questions(n), path)
    return path


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "medr1_data.cli", "distill", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
    )


def cache_lines(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.exists() else 0


def test_cli_kill9_mid_run_then_rerun_is_exactly_once_and_never_leaks_the_key(
    tmp_path: Path, server: TeacherServer
) -> None:
    key = "sk-medr1-" + secrets.token_hex(20)
    env = {"MEDR1_TEST_KEY": key}
    inp = write_questions(tmp_path / "q.parquet", 40)
    out, cache = tmp_path / "traces.parquet", tmp_path / "cache"
    args = [str(inp), "--out", str(out), "--model", "test/r1", "--base-url", server.url]
    args += ["--api-key-env", "MEDR1_TEST_KEY", "--samples", "2", "--concurrency", "8", "--cache", str(cache)]
    args += ["--request-timeout", "20", "--price-input", "2", "--price-output", "4"]
    server.default = Reply(delay=0.01)
    server.hold_after = 25  # 25 responses, then every further request hangs: the kill lands mid-run

    first = cli(*args, env=env)
    deadline = time.monotonic() + 30
    while cache_lines(cache / CACHE_FILE) < 25 and time.monotonic() < deadline and first.poll() is None:
        time.sleep(0.02)
    time.sleep(0.2)  # requests are in flight (held by the server)
    first.send_signal(signal.SIGKILL)
    out1, err1 = first.communicate(timeout=10)
    assert first.returncode == -signal.SIGKILL
    assert cache_lines(cache / CACHE_FILE) == 25 and not out.exists()
    assert sum(server.paid.values()) == 25 and any(c.reply == "held" for c in server.calls)
    with (cache / CACHE_FILE).open("ab") as f:  # as if the kill had cut a record in half
        f.write(b'{"finish_reason": "stop", "key": "0123abc", "message": {"content": "half')

    server.hold_after = None
    second = cli(*args, env=env)
    out2, err2 = second.communicate(timeout=60)
    assert second.returncode == 0, err2
    table = pq.read_table(out)
    pairs = list(zip(table.column("id").to_pylist(), table.column("sample_idx").to_pylist(), strict=True))
    assert len(pairs) == 80 and len(set(pairs)) == 80 and table.column("error").null_count == 80
    keys = {k for _, _, k in plan_requests(questions(40), TeacherSettings(model="test/r1", samples=2)).requests}
    assert set(server.paid) == keys and set(server.paid.values()) == {1}  # every key paid exactly once
    assert len(ResponseCache(cache).load()) == 80
    assert re.search(r"served from the cache +25\n", out2) and re.search(r"fetched now +55\n", out2)
    assert "cost of all rows (USD)" in out2

    # The key was sent, and appears nowhere else.
    assert all(c.headers.get("authorization") == f"Bearer {key}" for c in server.calls)
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert {p.name for p in files} >= {CACHE_FILE, "traces.parquet"}
    for text in (out1, err1, out2, err2):
        assert key not in text
    for p in files:
        assert key.encode() not in p.read_bytes(), p
    assert key not in json.dumps(table.to_pylist(), default=str)


def test_cli_exit_code_and_message_when_responses_stay_missing(
    tmp_path: Path, server: TeacherServer, capsys: pytest.CaptureFixture[str]
) -> None:
    inp = write_questions(tmp_path / "q.parquet", 5)
    teacher = TeacherSettings(model="test/r1")
    bad = plan_requests(questions(5), teacher).requests[2][2]
    server.script = {bad: [Reply(kind="status", status=500)] * 3}
    out = tmp_path / "t.parquet"
    args = ["distill", str(inp), "--out", str(out), "--model", "test/r1", "--base-url", server.url]
    args += ["--cache", str(tmp_path / "c"), "--max-retries", "2", "--quiet"]
    assert main(args) == 3
    captured = capsys.readouterr()
    assert captured.err.startswith("medr1-data: error: 1 of 5 teacher responses are missing (http_500 1)")
    assert "rerun the same command" in captured.err and captured.err.count("\n") == 1
    assert re.search(r"still missing +1\n", captured.out)
    assert pq.read_table(out).column("error").to_pylist()[2] == "http_500 after 3 attempts"
    before = len(server.calls)
    assert main(args) == 0
    assert [c.key for c in server.calls[before:]] == [bad]


def test_cli_estimate_spends_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    inp = write_questions(tmp_path / "q.parquet", 10)
    args = ["distill", str(inp), "--model", "deepseek-reasoner", "--samples", "2", "--cache", str(tmp_path / "c")]
    assert main([*args, "--estimate"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"requests to make \(not in the cache\) +20\n", out)
    assert re.search(r"estimated cost \(USD\) +0\.07\n", out)  # 32,000 x 2.19 / 1M + 1,853 prompt tokens x 0.55 / 1M
    assert "32,000 (1,600 each: mean of 862 real DeepSeek-R1 completions)" in out
    assert "0.14 / 0.55 / 2.19" in out and "DeepSeek-R1 list price" in out
    assert not (tmp_path / "c").exists()


def test_cli_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    inp = write_questions(tmp_path / "q.parquet", 2)
    assert main(["distill", str(inp), "--model", "m", "--base-url", "http://127.0.0.1:9/v1"]) == 2
    assert capsys.readouterr().err == "medr1-data: error: --out is required (only --estimate runs without it)\n"
    args = ["distill", str(inp), "--out", str(tmp_path / "o.parquet"), "--model", "m", "--endpoint", "vllm"]
    args += ["--cache", str(tmp_path / "c")]
    assert main(args) == 2
    assert "needs a base_url" in capsys.readouterr().err
    assert main(["distill", str(tmp_path / "nope.parquet"), "--model", "m", "--estimate"]) == 2
    assert "nope.parquet: no such file" in capsys.readouterr().err


def test_cli_sigterm_stops_gracefully_and_keeps_what_succeeded(tmp_path: Path, server: TeacherServer) -> None:
    inp = write_questions(tmp_path / "q.parquet", 12)
    cache = tmp_path / "cache"
    args = [str(inp), "--out", str(tmp_path / "t.parquet"), "--model", "test/r1", "--base-url", server.url]
    args += ["--cache", str(cache), "--concurrency", "4"]
    server.hold_after = 5
    proc = cli(*args)
    deadline = time.monotonic() + 30
    while cache_lines(cache / CACHE_FILE) < 5 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.02)
    time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 130 and err.rstrip().endswith("medr1-data: interrupted")
    assert len(ResponseCache(cache).load()) == 5 and cache.joinpath(CACHE_FILE).read_bytes().endswith(b"\n")
