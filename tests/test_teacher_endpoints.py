"""Many endpoints in one run: least-outstanding routing, the circuit breaker, an endpoint dying midway, one cache."""

from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from medr1_data import Medr1Error, config
from medr1_data.teacher import ResponseCache, TeacherSettings, plan_requests, run_distill
from medr1_data.teacher.settings import EndpointSpec

from .teacher_server import Reply, TeacherServer
from .test_distill_client import questions, settings


def keys_of(n: int, teacher: TeacherSettings) -> set[str]:
    return {k for _, _, k in plan_requests(questions(n), teacher).requests}


def test_base_url_list_and_endpoints_are_read_and_checked() -> None:
    t = config.build(TeacherSettings, {"base_url": ["http://a:1/v1", "http://b:2/v1"]}, "r")
    assert [e.url for e in t.urls()] == ["http://a:1/v1", "http://b:2/v1"] and t.url() == "http://a:1/v1"
    raw = {"endpoints": [{"url": "http://a:1/v1", "weight": 2}, {"url": "http://b:2/v1", "max_concurrency": 8}]}
    t = config.build(TeacherSettings, raw, "r")
    assert t.urls() == [EndpointSpec("http://a:1/v1", 2.0, None), EndpointSpec("http://b:2/v1", 1.0, 8)]
    with pytest.raises(Medr1Error, match=r"r: endpoints\[0\].weight: expected a value at least 0.001"):
        config.build(TeacherSettings, {"endpoints": [{"url": "http://a/v1", "weight": 0}]}, "r")
    with pytest.raises(Medr1Error, match=r"max_concurrency: expected a value at least 1"):
        config.build(TeacherSettings, {"endpoints": [{"url": "http://a/v1", "max_concurrency": 0}]}, "r")
    with pytest.raises(Medr1Error, match="unknown key 'wieght'"):
        config.build(TeacherSettings, {"endpoints": [{"url": "http://a/v1", "wieght": 1}]}, "r")
    both = TeacherSettings(base_url="http://a/v1", endpoints=[EndpointSpec("http://b/v1")])
    with pytest.raises(Medr1Error, match="either base_url or endpoints"):
        both.check()
    # credentials in a URL never reach a card
    t = TeacherSettings(base_url=["http://user:pw@h:8000/v1?token=x"])
    assert t.public()["base_url"] == ["http://h:8000/v1"]


def test_requests_go_to_the_endpoint_with_the_fewest_in_flight(tmp_path: Path) -> None:
    """A fast and a slow server: the fast one frees its slots sooner and so gets most of the requests; both are
    used, and every response arrives once, in one cache."""
    with TeacherServer(default=Reply(delay=0.02)) as fast, TeacherServer(default=Reply(delay=0.3)) as slow:
        teacher = settings(tmp_path / "cache", fast.url, base_url=[fast.url, slow.url], concurrency=4)
        result = run_distill(questions(40), teacher, quiet=True)
        assert result.missing == 0
        assert sum(fast.paid.values()) + sum(slow.paid.values()) == 40
        assert sum(fast.paid.values()) >= 3 * sum(slow.paid.values()) > 0
        by_url = {e["url"]: e for e in result.stats.endpoints}
        assert by_url[fast.url]["ok"] == sum(fast.paid.values()) and by_url[slow.url]["ok"] == sum(slow.paid.values())
    records = list(ResponseCache(tmp_path / "cache").records())
    assert len(records) == 40 and len({r["key"] for r in records}) == 40
    assert Counter(r["endpoint"] for r in records) == {
        fast.url: sum(fast.paid.values()),
        slow.url: 40 - sum(fast.paid.values()),
    }


def test_max_concurrency_caps_each_endpoint_and_weights_split_the_load(tmp_path: Path) -> None:
    with TeacherServer(default=Reply(delay=0.05)) as a, TeacherServer(default=Reply(delay=0.05)) as b:
        specs = [EndpointSpec(a.url, weight=3.0, max_concurrency=3), EndpointSpec(b.url, weight=1.0, max_concurrency=1)]
        teacher = settings(tmp_path / "c", a.url, base_url=None, endpoints=specs, concurrency=8)
        result = run_distill(questions(40), teacher, quiet=True)
    assert result.missing == 0
    assert a.peak_busy <= 3 and b.peak_busy <= 1
    na, nb = sum(a.paid.values()), sum(b.paid.values())
    assert na + nb == 40 and 2.0 <= na / nb <= 4.5  # 3:1 by weight and by slots


def test_a_failing_endpoint_is_paused_and_its_requests_rerouted(tmp_path: Path) -> None:
    """One server answers only 500s: after `breaker_failures` in a row it rests, its requests go to the healthy
    one, and after the cooldown one probe at a time is let through (none succeeds, so it keeps resting)."""
    with (
        TeacherServer(default=Reply(kind="status", status=500)) as bad,
        TeacherServer(default=Reply(delay=0.01)) as good,
    ):
        teacher = settings(
            tmp_path / "c", good.url, base_url=[bad.url, good.url], concurrency=4, max_retries=6,
            breaker_failures=3, breaker_cooldown_s=0.3,
        )  # fmt: skip
        start = time.monotonic()
        result = run_distill(questions(60), teacher, quiet=True)
        took = time.monotonic() - start
    assert result.missing == 0 and sum(good.paid.values()) == 60 and set(good.paid.values()) == {1}
    bad_calls = len(bad.calls)
    ep = {e["url"]: e for e in result.stats.endpoints}
    assert ep[bad.url]["trips"] >= 1 and ep[bad.url]["ok"] == 0 and ep[bad.url]["failed"] == bad_calls
    # without the breaker about half of the first tries would hit the bad server: 30 or more calls
    probes = int(took / 0.3) + 1
    assert bad_calls <= 3 + 4 + probes, (bad_calls, took)
    assert result.stats.retries["http_500"] == bad_calls


def test_an_endpoint_killed_midway_loses_nothing_and_nothing_is_paid_twice(tmp_path: Path) -> None:
    """Two servers; one is stopped after it has answered 10 requests, with requests in flight there. Those are
    rerouted; every key is answered exactly once over both servers and is in the cache once."""
    teacher_kw = {"concurrency": 6, "max_retries": 6, "breaker_failures": 2, "breaker_cooldown_s": 30.0}
    victim = TeacherServer(default=Reply(delay=0.05)).start()
    try:
        with TeacherServer(default=Reply(delay=0.05)) as survivor:
            teacher = settings(tmp_path / "c", survivor.url, base_url=[victim.url, survivor.url], **teacher_kw)

            def kill_when_busy() -> None:
                deadline = time.monotonic() + 20
                while sum(victim.paid.values()) < 10 and time.monotonic() < deadline:
                    time.sleep(0.005)
                victim.stop()

            killer = threading.Thread(target=kill_when_busy)
            killer.start()
            result = run_distill(questions(80), teacher, quiet=True)
            killer.join()
            answered = victim.paid + survivor.paid
    finally:
        victim.stop()
    keys = keys_of(80, teacher)
    assert result.missing == 0 and set(answered) == keys and set(answered.values()) == {1}
    assert sum(victim.paid.values()) >= 10 and sum(survivor.paid.values()) >= 60
    assert result.stats.retries["connection_error"] >= 1  # requests were in flight at the victim
    records = list(ResponseCache(tmp_path / "c").records())
    assert len(records) == 80 and {r["key"] for r in records} == keys
