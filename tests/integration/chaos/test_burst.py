"""The leader SIGKILLed during a burst of 100 expiries: exactly one audited DELETE each."""

from __future__ import annotations

import math
import random
import secrets
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.integration.chaos.audit import Deletes, audited_deletes, deleted_once
from tests.integration.chaos.clients import (
    Outcomes,
    RoundRobin,
    create_until_answered,
)
from tests.integration.chaos.kills import (
    LEASE,
    Chaos,
)
from tests.integration.chaos.observe import LeaderTracker, Observer
from tests.integration.chaos.timing import (
    CHAOS_SECONDS,
    LEASE_SECONDS,
)
from tests.integration.conftest import Cluster
from tests.integration.service import RunningService
from tests.support import wait_until

BURST = 100
BURST_WINDOW = 5  # the burst's namespaces expire within this many seconds


pytestmark = pytest.mark.timeout(CHAOS_SECONDS + 240)


def test_a_burst_of_expiries_is_deleted_exactly_once_while_the_leader_is_killed(
    cluster: Cluster,
    seed: int,
    rng: random.Random,
    observer: Observer,
    replicas: dict[str, RunningService],
    tracker: LeaderTracker,
) -> None:
    """Counted in the API server's audit log: one successful DELETE per expired namespace.

    The leader is SIGKILLed a random moment into the burst; either it restarts at once
    (and takes its own Lease back) or the other replica takes over first.
    """
    try:
        outcomes = Outcomes()
        turn = RoundRobin(list(replicas))
        # Creating them takes a few seconds: the burst starts well after.
        first = math.ceil(time.time()) + 10

        def create(index: int) -> str:
            with httpx.Client(timeout=15) as http:
                ttl = f"{first + index % BURST_WINDOW - time.time():.3f}s"
                response = create_until_answered(
                    replicas, turn, http, ttl, f"burst-{secrets.token_hex(6)}", outcomes
                )
            assert response is not None, "a create unanswered"
            assert response.status_code == 201, response.text
            return str(response.json()["namespace"])

        with ThreadPoolExecutor(8) as pool:
            names = list(pool.map(create, range(BURST)))
        assert time.time() < first, "the burst's creates took too long"
        chaos = Chaos(cluster, LEASE, replicas, tracker, rng)
        time.sleep(first - time.time() + rng.uniform(0.3, BURST_WINDOW - 1))
        killed_at = time.time()
        rng.choice([chaos.kill_leader_and_restart_now,
                    chaos.kill_leader_and_restart_later])()  # fmt: skip

        def all_deleted() -> bool:
            return all(observer.seen[n].deletion_seen_at is not None for n in names)

        wait_until(all_deleted, timeout=BURST_WINDOW + LEASE_SECONDS * 4 + 20,
                   interval=0.2, message="the burst deleted")  # fmt: skip
    finally:
        tracker.stop()
    deletes = audited_deletes(cluster)
    seen = [observer.seen[name] for name in names]
    before = sum(1 for s in seen if (s.deletion_seen_at or 0) < killed_at)
    lags = [(s.deletion_seen_at or 0) - (s.expires_at or 0) for s in seen]
    print(f"seed {seed}: {chaos.done}; {before} of {BURST} deleted before the kill; "
          f"expiry lag max {max(lags):.1f}s, "
          f"{tracker.outage(first, time.time()):.1f}s without a working leader; "
          f"{sum(deletes[n].conflicts for n in names if n in deletes)} DELETEs "
          f"answered 409")  # fmt: skip
    # The killed leader's DELETE in flight is audited 504 or 500 (its caller gone);
    # it may or may not have taken effect, so its successor's one 200 (or, when
    # it did, nothing more) is still "deleted once". Any other answer is a problem.
    problems = [
        f"{name}: {deletes.get(name, Deletes())} successful DELETEs from nsprov"
        for name in names
        if not deleted_once(deletes.get(name, Deletes()))
    ]
    assert not problems, f"seed {seed}:\n" + "\n".join(problems[:40])
    assert not outcomes.problems, outcomes.problems[:20]
