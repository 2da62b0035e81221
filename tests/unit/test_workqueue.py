from __future__ import annotations

import threading
import time

import pytest

from nsprov.core.workqueue import RetryBucket, WorkQueue, retry_delay


def test_keys_are_deduplicated_and_fifo() -> None:
    queue = WorkQueue()
    for key in ["a", "b", "a", "c", "b"]:
        queue.add(key)
    assert len(queue) == 3
    assert [queue.get(0), queue.get(0), queue.get(0)] == ["a", "b", "c"]
    assert queue.get(0) is None


def test_a_key_is_never_processed_twice_at_once() -> None:
    queue = WorkQueue()
    queue.add("a")
    assert queue.get(0) == "a"
    queue.add("a")  # an event arrives while "a" is being processed
    assert queue.get(0) is None, "must not hand out 'a' to a second worker"
    queue.done("a")
    assert queue.get(0) == "a"
    queue.done("a")
    assert queue.get(0) is None


def test_deadlines_fire_in_order_at_their_instant() -> None:
    now = [1000.0]
    queue = WorkQueue(clock=lambda: now[0])
    queue.add_at("late", 1010.0)
    queue.add_at("soon", 1005.0)
    queue.add_at("past", 999.0)
    assert queue.scheduled == 2
    assert queue.get(0) == "past"
    assert queue.get(0) is None
    now[0] = 1005.0
    assert queue.get(0) == "soon"
    now[0] = 1011.0
    assert queue.get(0) == "late"


def test_a_blocked_get_wakes_at_the_deadline() -> None:
    queue = WorkQueue()
    due = time.time() + 0.2
    queue.add_at("ns", due)
    key = queue.get(timeout=5)
    assert key == "ns"
    assert time.time() >= due


def test_shutdown_releases_waiting_workers() -> None:
    queue = WorkQueue()
    results: list[str | None] = []
    worker = threading.Thread(target=lambda: results.append(queue.get()))
    worker.start()
    queue.shutdown()
    worker.join(timeout=5)
    assert not worker.is_alive()
    assert results == [None]
    queue.add("after")
    assert queue.get(0) is None


def test_a_key_keeps_only_its_earliest_deadline() -> None:
    now = [1000.0]
    queue = WorkQueue(clock=lambda: now[0])
    for _ in range(100):  # every reconcile schedules the same expiry again
        queue.add_at("ns", 1010.0)
    queue.add_at("ns", 1020.0)  # a later one is covered by the pending earlier one
    assert queue.scheduled == 1
    queue.add_at("ns", 1005.0)  # an earlier one replaces it
    assert queue.scheduled == 1
    now[0] = 1006.0
    assert queue.get(0) == "ns"
    queue.done("ns")
    now[0] = 1030.0
    assert queue.get(0) is None, "the superseded deadline must not fire again"
    assert queue.scheduled == 0


def test_retry_delays_back_off_with_jitter() -> None:
    assert retry_delay(1, first=1, maximum=30, rand=lambda: 0.0) == 0.5
    assert retry_delay(1, first=1, maximum=30, rand=lambda: 1.0) == 1.0
    assert retry_delay(3, first=1, maximum=30, rand=lambda: 1.0) == 4.0
    assert retry_delay(10, first=1, maximum=30, rand=lambda: 1.0) == 30.0
    draws = {retry_delay(4, first=1, maximum=30) for _ in range(50)}
    assert len(draws) > 40
    assert all(4.0 <= d <= 8.0 for d in draws)


def test_retry_bucket_allows_a_burst_then_a_rate() -> None:
    now = [100.0]
    bucket = RetryBucket(rate=10, burst=100, clock=lambda: now[0])
    assert [bucket.reserve() for _ in range(100)] == [0.0] * 100
    assert bucket.reserve() == pytest.approx(0.1)
    assert bucket.reserve() == pytest.approx(0.2)
    now[0] += 0.2  # two tokens refilled, both already promised
    assert bucket.reserve() == pytest.approx(0.1)
    now[0] += 60  # refills up to the burst, no further
    assert [bucket.reserve() for _ in range(100)] == [0.0] * 100
    assert bucket.reserve() > 0
