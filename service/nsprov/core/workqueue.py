"""A deduplicating work queue with deadlines, keyed by namespace name.

Watch events, the periodic resync and expiry instants all say the same thing:
"look at namespace X again". Many such signals for one key collapse into one
pending item, and a key is never handed to two workers at once (a key added
while it is being processed is queued again when the worker is done), so
reconciles of one namespace never race each other.

Deadlines live in a heap and wake the queue at the exact instant, so a
namespace is looked at when it expires rather than at the next poll.

Failed reconciles come back through ``retry_delay`` and ``RetryBucket``: after
an outage every namespace fails at once, and identical per-key backoffs would
bring them all back in lock-step, again and again. Jitter spreads each key's
retries, and one token bucket bounds how fast retries of all keys together
reach the API server (as client-go's default controller rate limiter does).
"""

from __future__ import annotations

import heapq
import random
import threading
import time
from collections import deque
from collections.abc import Callable


class WorkQueue:
    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._ready: deque[str] = deque()
        self._queued: set[str] = set()
        self._processing: set[str] = set()
        self._dirty: set[str] = set()
        self._deadlines: list[tuple[float, str]] = []
        self._deadline_of: dict[str, float] = {}  # the one live heap entry per key
        self._closed = False
        self._cond = threading.Condition()

    def __len__(self) -> int:
        """Keys waiting to be processed now (not counting future deadlines)."""
        with self._cond:
            return len(self._ready)

    @property
    def scheduled(self) -> int:
        """Keys with a pending deadline."""
        with self._cond:
            return len(self._deadline_of)

    def add(self, key: str) -> None:
        with self._cond:
            self._add_locked(key)

    def _add_locked(self, key: str) -> None:
        if self._closed or key in self._queued:
            return
        if key in self._processing:
            self._dirty.add(key)
            return
        self._queued.add(key)
        self._ready.append(key)
        self._cond.notify()

    def add_at(self, key: str, when: float) -> None:
        """Queue ``key`` at wall-clock time ``when`` (unix seconds); now if it has passed.

        A key keeps only its earliest pending deadline: every reconcile schedules its
        namespace's expiry again, and the heap must not grow with each of them.
        """
        with self._cond:
            if when <= self._clock():
                self._add_locked(key)
                return
            pending = self._deadline_of.get(key)
            if pending is not None and pending <= when:
                return
            self._deadline_of[key] = when
            heapq.heappush(self._deadlines, (when, key))
            self._cond.notify()

    def _release_due_locked(self) -> float | None:
        """Move due deadlines to the ready list; return seconds until the next one."""
        now = self._clock()
        while self._deadlines and self._deadlines[0][0] <= now:
            when, key = heapq.heappop(self._deadlines)
            if self._deadline_of.get(key) != when:
                continue  # superseded by an earlier deadline that already fired
            del self._deadline_of[key]
            self._add_locked(key)
        return self._deadlines[0][0] - now if self._deadlines else None

    def get(self, timeout: float | None = None) -> str | None:
        """The next key to process, or None on timeout or after shutdown."""
        give_up = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while True:
                if self._closed:
                    return None
                until_deadline = self._release_due_locked()
                if self._ready:
                    key = self._ready.popleft()
                    self._queued.discard(key)
                    self._processing.add(key)
                    return key
                waits = [w for w in (until_deadline,) if w is not None]
                if give_up is not None:
                    left = give_up - time.monotonic()
                    if left <= 0:
                        return None
                    waits.append(left)
                self._cond.wait(min(waits) if waits else None)

    def done(self, key: str) -> None:
        with self._cond:
            self._processing.discard(key)
            if key in self._dirty:
                self._dirty.discard(key)
                self._add_locked(key)

    def shutdown(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()


def retry_delay(
    attempts: int,
    *,
    first: float,
    maximum: float,
    rand: Callable[[], float] = random.random,
) -> float:
    """Seconds before retry number ``attempts`` of one key: exponential, capped, jittered.

    The jitter keeps at least half of the exponential step, so backoff still backs
    off, and draws the rest at random, so keys that failed together drift apart.
    """
    step = min(maximum, first * 2.0 ** max(0, attempts - 1))
    return step * (0.5 + 0.5 * rand())


class RetryBucket:
    """A token bucket shared by every key's retries: ``burst`` at once, then ``rate`` a second.

    ``reserve`` never refuses: it hands out a place in line (the bucket may go into
    debt), and says how long that place is from now.
    """

    def __init__(
        self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._tokens = float(burst)
        self._last = clock()
        self._lock = threading.Lock()

    def reserve(self) -> float:
        """Take one token; the seconds until it is really there (0 when it is now)."""
        with self._lock:
            now = self._clock()
            self._tokens = min(float(self.burst), self._tokens + (now - self._last) * self.rate)
            self._last = now
            self._tokens -= 1
            return 0.0 if self._tokens >= 0 else -self._tokens / self.rate
