"""`workers.thread_map`: results in order, a bounded number of items in flight, errors raised where they are read."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from medr1_data.workers import thread_map


def test_results_come_in_order_with_at_most_threads_items_in_flight() -> None:
    lock, running, most = threading.Lock(), [0], [0]
    pulled: list[int] = []

    def items() -> Iterator[int]:
        for i in range(12):
            pulled.append(i)
            yield i

    def slow(i: int) -> int:
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        time.sleep(0.05 * (i % 3))  # later items often finish first
        with lock:
            running[0] -= 1
        return i * i

    out = thread_map(slow, items(), threads=3)
    assert next(out) == 0
    assert len(pulled) <= 4  # the items are taken as they are needed, not all at once
    assert [0, *out] == [i * i for i in range(12)]
    assert 2 <= most[0] <= 3  # in parallel, never more than `threads` at once


def test_an_error_is_raised_where_its_result_is_read() -> None:
    def fail_on_five(i: int) -> int:
        if i == 5:
            raise ValueError("five")
        return i

    out = thread_map(fail_on_five, range(10), threads=2)
    assert [next(out) for _ in range(5)] == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError, match="five"):
        next(out)


def test_one_thread_runs_in_the_caller() -> None:
    seen = list(thread_map(lambda _: threading.get_ident(), range(3), threads=1))
    assert seen == [threading.get_ident()] * 3
