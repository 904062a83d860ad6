"""Streaming mode: tokens as they come, stalls and cut streams retried, reasoning and usage from the stream,
time to first token and latency recorded apart."""

from __future__ import annotations

import time
from pathlib import Path

from medr1_data.teacher import ResponseCache, plan_requests, run_distill

from .teacher_server import Reply, TeacherServer, stream_events
from .test_distill_client import questions, settings


def test_stream_events_are_what_a_server_sends() -> None:
    """The stand-in's SSE: role, reasoning and content deltas, the finish chunk, usage on request, [DONE]."""
    from .teacher_server import completion_body

    body = completion_body(Reply(reasoning="abcdefghij", content="<answer>A</answer>"), "m")
    events = stream_events(body, include_usage=True, piece=4)
    assert events[0].startswith(b'data: {"id"') and b'"role": "assistant"' in events[0]
    assert [b'"reasoning_content": "abcd"' in e for e in events[1:4]] == [True, False, False]
    assert events[-1] == b"data: [DONE]\n\n" and b'"usage"' in events[-2] and b'"finish_reason": "stop"' in events[-3]
    assert len(stream_events(body, include_usage=False, piece=4)) == len(events) - 1


def test_streamed_responses_have_every_shape_usage_and_ttft(tmp_path: Path) -> None:
    table = questions(4)
    teacher = settings(tmp_path / "c", "", stream=True, stall_timeout=2.0)
    with TeacherServer() as server:
        teacher.base_url = server.url
        k = [key for _, _, key in plan_requests(table, teacher).requests]
        slow = {"chunk_delay": 0.02, "delay": 0.2}  # 0.2 s before the first token, then a chunk every 20 ms
        server.script = {
            k[0]: [Reply(shape="reasoning_content", reasoning="RC thinking " * 5, **slow)],
            k[1]: [Reply(shape="reasoning", reasoning="vLLM thinking", content="The answer is B.", **slow)],
            k[2]: [Reply(shape="inline", reasoning="Inline thinking", content="<answer>A</answer>", **slow)],
            k[3]: [Reply(finish_reason="length", content="", reasoning="cut at the limit", **slow)],
        }
        result = run_distill(table, teacher, quiet=True)
        assert all(c.body.get("stream") is True for c in server.calls)
        assert all(c.body["stream_options"] == {"include_usage": True} for c in server.calls)
    assert result.missing == 0 and result.stats.retries == {}
    rows = result.table.to_pylist()
    assert (rows[0]["reasoning"], rows[0]["response"]) == (("RC thinking " * 5).strip(), "<answer>A</answer>")
    assert (rows[1]["reasoning"], rows[1]["response"]) == ("vLLM thinking", "The answer is B.")
    assert (rows[2]["reasoning"], rows[2]["response"]) == ("Inline thinking", "<answer>A</answer>")
    assert (rows[3]["finish_reason"], rows[3]["reasoning"], rows[3]["response"]) == ("length", "cut at the limit", "")
    assert rows[0]["prompt_tokens"] == 100 and rows[0]["completion_tokens"] == 50  # from the usage chunk
    records = {r["key"]: r for r in ResponseCache(teacher.cache).records()}
    for key in k:
        r = records[key]
        assert 0.2 <= r["ttft_s"] < r["latency_s"] == r["wall_s"] and r["latency_from"] == "client"
        assert r["latency_s"] - r["ttft_s"] >= 0.02 * 2  # the rest of the stream came after the first token


def test_a_silent_stream_is_retried_after_stall_timeout_and_a_cut_one_too(tmp_path: Path) -> None:
    table = questions(3)
    teacher = settings(tmp_path / "c", "", stream=True, stall_timeout=0.5, request_timeout=30.0)
    with TeacherServer() as server:
        teacher.base_url = server.url
        k = [key for _, _, key in plan_requests(table, teacher).requests]
        server.script = {
            k[0]: [Reply(stall_after=3), Reply()],  # three chunks, then silence: a dead stream
            k[1]: [Reply(cut_after=3), Reply()],  # three chunks, then the connection closes: no finish_reason
            k[2]: [Reply(delay=5.0), Reply()],  # silent before the first byte (a proxy holding the request)
        }
        start = time.monotonic()
        result = run_distill(table, teacher, quiet=True)
        took = time.monotonic() - start
        assert server.replies(k[0]) == ["ok:reasoning_content:stop"] * 2
        assert server.paid[k[0]] == server.paid[k[1]] == server.paid[k[2]] == 1  # the cut streams never completed
    assert result.missing == 0 and took < 10  # the 30 s request timeout was not waited for
    assert result.stats.retries == {"stalled": 2, "stream_incomplete": 1}
    assert all(r["reasoning"] == "Reasoning about the question." for r in result.table.to_pylist())


def test_latency_is_the_servers_own_time_where_it_reports_one(tmp_path: Path) -> None:
    """llama.cpp reports `timings` (prompt and generation ms): that is latency_s; the wall time, which includes
    the wait in the server's queue, is wall_s."""
    timings = {"prompt_ms": 12.0, "predicted_ms": 88.0, "prompt_n": 40, "predicted_n": 50}
    with TeacherServer(default=Reply(delay=0.3, timings=timings)) as server:
        for stream in (False, True):
            cache = tmp_path / f"c{stream}"
            result = run_distill(questions(2), settings(cache, server.url, stream=stream), quiet=True)
            assert result.missing == 0
            for r in ResponseCache(cache).records():
                assert r["latency_s"] == 0.1 and r["latency_from"] == "server" and r["wall_s"] >= 0.3
                assert ("ttft_s" in r) is stream
