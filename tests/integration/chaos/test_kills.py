"""Chaos: nsprov loses nothing while its replicas and the API server are killed.

Two replicas (leader election on, a 3 s lease, exactly the RBAC k8s/ gives
nsprov) serve a stream of creates, short and longer TTLs, some with an
Idempotency-Key retried until it is answered, while the leader is SIGKILLed
again and again (restarted at once, taking its own Lease back, or later, after
the other replica took over), and the follower and kube-apiserver now and then
(each kind at least once; kube-apiserver three times in a long run). What must
hold afterwards:

- every namespace whose TTL ran out is deleted, late by no more than the time
  without a working leader (no leader, or no API server) plus ``EXPIRY_SLACK``
  (1 s);
- after each API server return, nsprov creates a namespace again within
  ``RECOVERY_SECONDS`` of its /readyz;
- no namespace a client got a 201 for is lost, or deleted before its expiry;
- one Idempotency-Key, one namespace; every kubeconfig handed out worked;
- every surviving namespace has its ServiceAccount and RoleBinding (the
  controller repairs what a kill left half-made), every managed namespace ever
  seen carried an expiry label, and the API server's audit log shows at most one
  successful DELETE from nsprov per namespace, exactly one per expiry;
- the API answered 201, 409 (a key's namespace expired) or 503 + Retry-After.
"""

from __future__ import annotations

import contextlib
import random
import time
from collections import Counter

import pytest
from kubernetes import client

from tests.integration.chaos.audit import Deletes, audited_deletes
from tests.integration.chaos.checks import (
    REPAIRED_LINE,
    beyond_outage,
    check_outcomes,
    logged,
    orphans,
    without_bundle,
)
from tests.integration.chaos.clients import (
    Driver,
    Outcomes,
)
from tests.integration.chaos.kills import (
    LEASE,
    Chaos,
    wait_for_leader,
)
from tests.integration.chaos.observe import LeaderTracker, Observer
from tests.integration.chaos.timing import (
    CHAOS_SECONDS,
    RECOVERY_SECONDS,
    SHORT_TTL,
    STILL_THERE_SLACK,
)
from tests.integration.conftest import Cluster
from tests.integration.service import RunningService
from tests.support import wait_until

pytestmark = pytest.mark.timeout(CHAOS_SECONDS + 240)


def test_nothing_is_lost_while_leaders_and_the_api_server_are_killed(
    cluster: Cluster,
    core: client.CoreV1Api,
    seed: int,
    rng: random.Random,
    observer: Observer,
    replicas: dict[str, RunningService],
    tracker: LeaderTracker,
) -> None:
    try:
        _chaos(cluster, core, seed, rng, observer, replicas, tracker)
    except BaseException as exc:
        exc.add_note(f"chaos seed {seed}: rerun with NSPROV_CHAOS_SEED={seed}")
        raise


def _chaos(
    cluster: Cluster,
    core: client.CoreV1Api,
    seed: int,
    rng: random.Random,
    observer: Observer,
    replicas: dict[str, RunningService],
    tracker: LeaderTracker,
) -> None:
    try:
        began = time.time()
        until = began + CHAOS_SECONDS
        ca_file = str(cluster.api.configuration.ssl_ca_cert)
        driver = Driver(replicas, tracker, seed, ca_file, until)
        driver.start()
        chaos = Chaos(cluster, LEASE, replicas, tracker, rng, driver=driver)
        chaos.run(until)
        driver.join()
        calm = time.time()
        wait_for_leader(cluster, LEASE, replicas)
        _converges(core, observer, tracker, driver.outcomes, calm)
    finally:
        tracker.stop()
    _report(seed, began, calm, chaos, driver.outcomes, observer, tracker)
    print(f"repairs logged: {sum(logged(replicas, REPAIRED_LINE).values())}")
    driver.outcomes.problems += _recovered_in_time(chaos)
    driver.outcomes.problems += _each_expiry_deleted_once(cluster, observer, chaos)
    driver.outcomes.problems += orphans(core)
    check_outcomes(observer, tracker, driver.outcomes, replicas)


def _converges(
    core: client.CoreV1Api,
    observer: Observer,
    tracker: LeaderTracker,
    outcomes: Outcomes,
    calm: float,
) -> None:
    """Wait until everything due by then has gone and every survivor has its bundle."""
    due = calm + max(SHORT_TTL)

    def expired_gone() -> bool:
        return time.time() >= due and all(
            seen.deletion_seen_at is not None
            for seen in list(observer.seen.values())
            if seen.expires_at is not None and seen.expires_at <= due
        )

    wait_until(expired_gone, timeout=max(SHORT_TTL) + STILL_THERE_SLACK + 5, interval=0.2,
               message="every namespace due is deleted")  # fmt: skip

    def bundles_complete() -> list[str] | None:
        missing = without_bundle(core, observer)
        return None if missing else ["complete"]

    # The controller repairs half-made bundles a moment after a leader sees them.
    with contextlib.suppress(AssertionError):
        wait_until(bundles_complete, timeout=10, interval=0.5, message="bundles complete")


def _report(
    seed: int,
    began: float,
    calm: float,
    chaos: Chaos,
    outcomes: Outcomes,
    observer: Observer,
    tracker: LeaderTracker,
) -> None:
    lags = [
        seen.deletion_seen_at - seen.expires_at
        for seen in observer.seen.values()
        if seen.deletion_seen_at is not None and seen.expires_at is not None
    ]
    beyond = beyond_outage(observer, tracker)
    print(f"seed {seed}: {calm - began:.0f}s of chaos; {len(chaos.done)} kills:")
    for line in chaos.done:
        print(f"  {line}")
    print(f"takeovers after a kill: {[round(t, 1) for t in chaos.takeovers]} s; own lease back "
          f"after a restart: {[round(t, 1) for t in chaos.own_lease_back]} s")  # fmt: skip
    print(f"statuses {dict(outcomes.statuses)}; {len(outcomes.created)} created, "
          f"{len(outcomes.names_by_key)} keys, {outcomes.unknown} unknown outcomes, "
          f"{outcomes.kubeconfigs_checked} kubeconfigs used, {len(outcomes.rbac_lags)} of them "
          f"forbidden at first (for up to {max(outcomes.rbac_lags, default=0):.2f}s; "
          f"{outcomes.rbac_lags_after_restart} after an API server restart)")  # fmt: skip
    print(f"{len(observer.seen)} namespaces seen, {len(lags)} deleted; expiry lag (as watched) "
          f"max {max(lags, default=0):.1f}s, beyond the outage max {max(beyond, default=0):.1f}s; "
          f"{tracker.outage(began, time.time()):.1f}s without "
          f"a working leader; {observer.relists} relists")  # fmt: skip


def _recovered_in_time(chaos: Chaos) -> list[str]:
    print(f"a create succeeded after the API server's /readyz within "
          f"{[round(r, 2) for r in chaos.recoveries]} s")  # fmt: skip
    return [
        f"the first create after the API server's return took {r:.1f}s"
        for r in chaos.recoveries
        if r > RECOVERY_SECONDS
    ]


def _each_expiry_deleted_once(cluster: Cluster, observer: Observer, chaos: Chaos) -> list[str]:
    """By the audit log: no namespace deleted twice by nsprov, each expiry deleted once.

    A DELETE in flight when kube-apiserver is SIGKILLed may be done in etcd without its
    audit event (the event is written after the storage call): an expiry deleted within
    a few seconds of a kill may show no DELETE. One whose caller (the leader) was killed
    mid-call is recorded as 504 or 500 though it took effect: one call, so it counts.
    """
    deletes = audited_deletes(cluster)
    problems, unaudited, answer_lost = [], 0, 0
    for seen in observer.seen.values():
        found = deletes.get(seen.name, Deletes())
        if found.succeeded > 1:
            problems.append(f"{seen.name}: DELETEs from nsprov {found}")
        expired = seen.expires_at is not None and (
            seen.deletion_timestamp is not None and seen.deletion_timestamp >= seen.expires_at
        )
        if not expired or found.succeeded == 1:
            continue
        at = seen.deletion_seen_at or 0.0
        if any(code >= 500 for code in found.other):
            # The caller was killed (or timed out) mid-DELETE: the API server records
            # 504 or 500, yet the delete took effect (its successor found it terminating).
            answer_lost += 1
        elif any(down - 3 <= at <= up + 3 for down, up in chaos.api_server_outages):
            unaudited += 1
        else:
            problems.append(f"{seen.name}: expired, yet nsprov's audited calls include no 200")
    conflicts = sum(found.conflicts for found in deletes.values())
    # A restarted API server answers 403 until its RBAC caches sync: retried, not a problem.
    other = Counter(code for found in deletes.values() for code in found.other)
    print(f"audit log: {sum(f.succeeded for f in deletes.values())} successful DELETEs from "
          f"nsprov, {conflicts} answered 409, others {dict(other)}; {answer_lost} expiries "
          f"deleted by a DELETE answered 5xx (its caller killed), {unaudited} around an "
          f"API server kill without an audited DELETE")  # fmt: skip
    return problems
