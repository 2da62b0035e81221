"""Leadership through a coordination.k8s.io/v1 Lease, so one replica's controller acts.

Every replica serves the API and keeps its caches warm; only the holder of the
Lease deletes and repairs. The rules follow client-go's: a lease held by
someone else is taken over only when its record has not changed for a whole
lease duration *as observed by this replica's monotonic clock* (the holder's
renewTime is another machine's clock and cannot be trusted to compare with
ours); every write carries the resourceVersion we read, so two candidates
cannot both win; a leader that fails to renew for ``renew_deadline`` steps
down before its lease could have been taken over, and no lease call of a leader
may run past that deadline (a hung call must not keep a stale leader acting);
a leader that stops releases the lease so a successor need not wait.

A replica's identity is stable across restarts of its container when it can be
(:func:`identity_for`: the pod's name), and a replica that finds the lease held
by its own identity renews it at once, as client-go does: the holder that
wrote it is this pod's previous container, which is dead (the kubelet ends a
container before it starts the next one), so waiting out its lease would only
stop expiries for a lease duration after every crash.

A replica that may not use its Lease at all (403 for a wrong
``--leader-elect-namespace``, 404 for a namespace that does not exist) never
leads, and if every replica is in that state nothing expires. That must not be
a quiet state: ``problem`` names it (for /readyz), every failed call is counted
by reason (for a metric), and the log says it when it starts, once a minute
while it lasts, and when it ends, not on every retry.
"""

from __future__ import annotations

import datetime
import logging
import secrets
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from nsprov.core.errors import NsprovError
from nsprov.core.kube import Kube, KubeError

# Its name from before the folders: log filters and the tests select on it.
log = logging.getLogger("nsprov.leader")

# How often a lasting lease problem is logged again.
REPEAT_LOG_SECONDS = 60.0
_HINTS = {
    "forbidden": "nsprov's identity may not use this Lease: is --leader-elect-namespace the "
    "namespace its RBAC allows (k8s/: nsprov's own)?",
    "unauthorized": "the API server does not accept nsprov's credentials",
    "not_found": "does the namespace of --leader-elect-namespace exist?",
}


def error_reason(exc: Exception) -> str:
    """A short, bounded name for why a lease call failed (a metric label)."""
    if isinstance(exc, KubeError):
        return {401: "unauthorized", 403: "forbidden", 404: "not_found"}.get(exc.status, "rejected")
    if isinstance(exc, NsprovError):
        return "unavailable"
    return "unexpected"


@dataclass
class LeaseProblem:
    """Why lease calls fail, since when (monotonic) and when we last said so."""

    reason: str
    detail: str
    since: float
    logged: float


def identity_for(pod_name: str | None) -> str:
    """The Lease holder identity: the pod's name when known, else hostname + random.

    Pod names are unique among live pods and survive container restarts, so a
    restarted container takes its own lease back at once. Without one (run
    outside Kubernetes), two processes on one host must not share an identity,
    so a random suffix tells them apart, and a restart waits out the lease.
    """
    if pod_name:
        return pod_name
    return f"{socket.gethostname()}_{secrets.token_hex(4)}"


def _now_micro() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaderElector:
    def __init__(
        self,
        kube: Kube,
        *,
        namespace: str,
        name: str,
        identity: str,
        on_started_leading: Callable[[], None],
        on_stopped_leading: Callable[[], None],
        lease_duration: float = 15.0,
        renew_deadline: float = 10.0,
        retry_period: float = 2.0,
        on_error: Callable[[str], None] = lambda reason: None,
    ) -> None:
        if not retry_period < renew_deadline < lease_duration:
            raise ValueError("need retry_period < renew_deadline < lease_duration")
        self.kube = kube
        self.path = f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases/{name}"
        self.collection = f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases"
        self.name = name
        self.namespace = namespace
        self.identity = identity
        self._on_error = on_error
        self._problem: LeaseProblem | None = None
        self.lease_duration = lease_duration
        self.renew_deadline = renew_deadline
        self.retry_period = retry_period
        self._on_started = on_started_leading
        self._on_stopped = on_stopped_leading
        self._leading = threading.Event()
        self._stopping = threading.Event()
        self._observed: tuple[Any, ...] | None = None
        self._observed_at = 0.0
        self._last_renew = 0.0
        self._thread: threading.Thread | None = None

    @property
    def is_leader(self) -> bool:
        return self._leading.is_set()

    @property
    def problem(self) -> str | None:
        """Why this replica cannot take part in the election now; None while lease calls work."""
        problem = self._problem
        if problem is None:
            return None
        hint = _HINTS.get(problem.reason, "")
        return (
            f"lease {self.namespace}/{self.name}: {problem.reason} for "
            f"{time.monotonic() - problem.since:.0f}s ({problem.detail})"
            + (f"; {hint}" if hint else "")
            + "; this replica cannot lead, so it expires and repairs nothing"
        )

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="leader-election", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop campaigning; a leader stops leading first, then releases the lease."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=self.renew_deadline + 5)
        if self._leading.is_set():
            self._step_down()
            self._release()

    def _call_timeout(self) -> float:
        """A lease call may take a retry period, and a leader's never past its renew deadline."""
        if not self._leading.is_set():
            return self.retry_period
        left = self._last_renew + self.renew_deadline - time.monotonic()
        return max(0.2, min(self.retry_period, left))

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                held = self._try_acquire_or_renew()
            except Exception as exc:
                # Never let the thread die: a replica that silently stops campaigning
                # would keep leading on a lease it no longer renews.
                self._failed(exc)
                held = False
            else:
                self._worked()
            now = time.monotonic()
            if held:
                self._last_renew = now
                if not self._leading.is_set():
                    log.info("lease %s acquired by %s", self.name, self.identity)
                    self._leading.set()
                    try:
                        self._on_started()
                    except Exception:
                        log.exception("lease %s: starting to lead failed", self.name)
                        self._step_down()
            elif self._leading.is_set() and now - self._last_renew >= self.renew_deadline:
                log.warning("lease %s not renewed for %.0fs; stepping down", self.name,
                            now - self._last_renew)  # fmt: skip
                self._step_down()
            self._stopping.wait(self.retry_period)

    def _failed(self, exc: Exception) -> None:
        reason = error_reason(exc)
        detail = exc.detail if isinstance(exc, NsprovError) else str(exc)
        self._on_error(reason)
        now = time.monotonic()
        problem = self._problem
        if problem is None or problem.reason != reason:
            self._problem = LeaseProblem(reason, detail, since=now, logged=now)
            log.warning("%s", self.problem, exc_info=reason == "unexpected")
        else:
            problem.detail = detail
            if now - problem.logged >= REPEAT_LOG_SECONDS:
                problem.logged = now
                log.warning("%s (still)", self.problem)

    def _worked(self) -> None:
        problem, self._problem = self._problem, None
        if problem is not None:
            log.info("lease %s/%s: calls work again after %.0fs of %s", self.namespace,
                     self.name, time.monotonic() - problem.since, problem.reason)  # fmt: skip

    def _step_down(self) -> None:
        if self._leading.is_set():
            self._leading.clear()
            self._on_stopped()

    def _spec(self, previous: dict[str, Any] | None) -> dict[str, Any]:
        now = _now_micro()
        spec = dict(previous or {})
        if spec.get("holderIdentity") != self.identity:
            spec["acquireTime"] = now
            spec["leaseTransitions"] = int(spec.get("leaseTransitions") or 0) + (
                1 if previous else 0
            )
        spec.update(
            holderIdentity=self.identity,
            leaseDurationSeconds=max(1, round(self.lease_duration)),
            renewTime=now,
        )
        return spec

    def _try_acquire_or_renew(self) -> bool:
        try:
            lease = self.kube.get(self.path, timeout=self._call_timeout())
        except KubeError as exc:
            if exc.status != 404:
                raise
            body = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": self.name},
                "spec": self._spec(None),
            }
            try:
                self.kube.post(self.collection, body, timeout=self._call_timeout())
            except KubeError as conflict:
                if conflict.status == 409:  # another replica created it first
                    return False
                raise
            return True
        spec = lease.get("spec", {})
        record = (
            spec.get("holderIdentity"),
            spec.get("renewTime"),
            spec.get("leaseDurationSeconds"),
        )
        now = time.monotonic()
        if record != self._observed:
            self._observed, self._observed_at = record, now
        holder = spec.get("holderIdentity")
        # Held by our own identity: our own earlier life (see the module docstring), renewed
        # at once rather than waited out.
        duration = float(spec.get("leaseDurationSeconds") or self.lease_duration)
        if holder and holder != self.identity and now - self._observed_at < duration:
            return False
        lease["spec"] = self._spec(spec)
        try:
            # The resourceVersion from our read makes this a compare-and-swap.
            self.kube.request("PUT", self.path, body=lease, timeout=self._call_timeout())
        except KubeError as exc:
            if exc.status == 409:
                return False
            raise
        return True

    def _release(self) -> None:
        try:
            lease = self.kube.get(self.path)
            if lease.get("spec", {}).get("holderIdentity") != self.identity:
                return
            lease["spec"].update(holderIdentity="", leaseDurationSeconds=1, renewTime=_now_micro())
            self.kube.request("PUT", self.path, body=lease)
            log.info("lease %s released by %s", self.name, self.identity)
        except (NsprovError, KubeError) as exc:
            log.warning("lease %s not released: %s", self.name, exc)
