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
"""

from __future__ import annotations

import datetime
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from nsprov.errors import NsprovError
from nsprov.kube import Kube, KubeError

log = logging.getLogger(__name__)


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
    ) -> None:
        if not retry_period < renew_deadline < lease_duration:
            raise ValueError("need retry_period < renew_deadline < lease_duration")
        self.kube = kube
        self.path = f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases/{name}"
        self.collection = f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases"
        self.name = name
        self.identity = identity
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
            except (NsprovError, KubeError) as exc:
                log.warning("lease %s: %s", self.name, exc)
                held = False
            except Exception:
                # Never let the thread die: a replica that silently stops campaigning
                # would keep leading on a lease it no longer renews.
                log.exception("lease %s: unexpected error", self.name)
                held = False
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
