"""What must hold after the chaos, checked against what the watch and the logs saw."""

from __future__ import annotations

import re
import time
from collections import Counter

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from nsprov.provision import bundle
from tests.integration.chaos.clients import (
    Outcomes,
)
from tests.integration.chaos.observe import LeaderTracker, Observer
from tests.integration.chaos.timing import (
    EXPIRY_SLACK,
    STILL_THERE_SLACK,
)
from tests.integration.conftest import SELECTOR
from tests.integration.service import RunningService


def without_bundle(core: client.CoreV1Api, observer: Observer) -> list[str]:
    missing = []
    for seen in list(observer.seen.values()):
        if seen.deletion_seen_at is not None or seen.gone:
            continue
        for kind, read in (("ServiceAccount", core.read_namespaced_service_account),
                           ("RoleBinding", client.RbacAuthorizationV1Api(core.api_client)
                            .read_namespaced_role_binding)):  # fmt: skip
            try:
                read(bundle.SERVICE_ACCOUNT if kind == "ServiceAccount" else bundle.ROLE_BINDING,
                     seen.name)  # fmt: skip
            except ApiException as exc:
                if exc.status != 404:
                    raise
                if observer.seen[seen.name].deletion_seen_at is None:
                    missing.append(f"{seen.name} has no {kind}")
    return missing


def beyond_outage(observer: Observer, tracker: LeaderTracker) -> list[float]:
    """For each expiry deleted: how much later than the time without a working leader."""
    beyond = []
    for seen in observer.seen.values():
        if seen.deletion_seen_at is None or seen.expires_at is None:
            continue
        if seen.deletion_timestamp is None or seen.deletion_timestamp >= seen.expires_at:
            lag = seen.deletion_seen_at - seen.expires_at  # not rolled back
            beyond.append(lag - tracker.outage(seen.expires_at, seen.deletion_seen_at))
    return beyond


def check_outcomes(
    observer: Observer,
    tracker: LeaderTracker,
    outcomes: Outcomes,
    replicas: dict[str, RunningService],
    slack: float = EXPIRY_SLACK,
) -> None:
    now = time.time()
    problems = list(outcomes.problems)
    seen = observer.seen
    for created in outcomes.created:
        found = seen.get(created.name)
        if found is None:
            problems.append(f"{created.name}: a 201, never seen by the watch")
            continue
        assert found.expires_at is not None
        if found.deletion_seen_at is None and found.expires_at <= now - STILL_THERE_SLACK:
            problems.append(f"{created.name}: expired at {found.expires_at}, still there")
        if found.deletion_timestamp is not None and found.deletion_timestamp < found.expires_at:
            problems.append(f"{created.name}: a 201, deleted at {found.deletion_timestamp:.0f} "
                            f"before its expiry {found.expires_at}")  # fmt: skip
        if found.gone and found.name in observer.vanished and found.expires_at > now:
            problems.append(f"{created.name}: a 201, gone before its expiry")
    for item in seen.values():
        if item.without_expiry:
            problems.append(f"{item.name}: managed, without an expiry label")
        if item.expires_at is None:
            continue
        if item.deletion_seen_at is None:
            if item.expires_at <= now - STILL_THERE_SLACK:
                problems.append(f"{item.name}: expired at {item.expires_at}, not deleted")
            continue
        if item.deletion_timestamp is not None and item.deletion_timestamp < item.expires_at:
            continue  # rolled back (no client got it; the 201s are checked above)
        outage = tracker.outage(item.expires_at, item.deletion_seen_at)
        lag = item.deletion_seen_at - item.expires_at
        if lag > outage + slack:
            problems.append(f"{item.name}: deleted {lag:.1f}s after its expiry, with only "
                            f"{outage:.1f}s without a working leader")  # fmt: skip
    for key, names in outcomes.names_by_key.items():
        if len(names) != 1:
            problems.append(f"Idempotency-Key {key}: 201s named {sorted(names)}")
    per_key = Counter(item.idempotency for item in seen.values() if item.idempotency)
    problems += [f"{n} namespaces for one key digest {k}" for k, n in per_key.items() if n > 1]
    deletions = logged(replicas, EXPIRED_LINE)
    problems += [f"{name}: deleted as expired {n} times" for name, n in deletions.items() if n > 1]
    problems += _survivors_without_bundle(observer)
    assert not problems, "\n".join(problems[:40])


EXPIRED_LINE = re.compile(r"deleted namespace=(\S+) .*reason=expired")
REPAIRED_LINE = re.compile(r"repaired namespace=(\S+) kind=(\S+)")


def logged(replicas: dict[str, RunningService], line: re.Pattern[str]) -> Counter[str]:
    """How often each namespace is named in lines like ``line``, over every replica's log."""
    found: Counter[str] = Counter()
    for replica in replicas.values():
        found.update(match.group(1) for match in line.finditer(replica.log()))
    return found


def _survivors_without_bundle(observer: Observer) -> list[str]:
    core = client.CoreV1Api(observer.api)
    missing = without_bundle(core, observer)
    live = [s for s in observer.seen.values() if s.deletion_seen_at is None and not s.gone]
    print(f"{len(live)} namespaces live at the end, {len(missing)} bundle objects missing")
    return missing


def orphans(core: client.CoreV1Api) -> list[str]:
    """nsprov's ServiceAccounts and RoleBindings outside a managed namespace.

    One in a namespace being deleted is not orphaned: it goes with its namespace.
    """
    managed = {ns.metadata.name for ns in core.list_namespace(label_selector=SELECTOR).items}
    # Any namespace being deleted takes its objects with it (an earlier test's, say, whose
    # labelled objects stood in an unmanaged namespace on purpose).
    going = {
        ns.metadata.name for ns in core.list_namespace().items if ns.metadata.deletion_timestamp
    }
    rbac = client.RbacAuthorizationV1Api(core.api_client)
    found = []
    for kind, items, name in (
        ("ServiceAccount", core.list_service_account_for_all_namespaces().items,
         bundle.SERVICE_ACCOUNT),
        ("RoleBinding", rbac.list_role_binding_for_all_namespaces().items, bundle.ROLE_BINDING),
    ):  # fmt: skip
        for item in items:
            labels = item.metadata.labels or {}
            ours = item.metadata.name == name or SELECTOR.split("=")[0] in labels
            if ours and item.metadata.namespace not in managed | going:
                found.append(f"{kind} {item.metadata.namespace}/{item.metadata.name} orphaned")
    return found
