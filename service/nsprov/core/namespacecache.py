"""Reading managed Namespaces from a watch cache, with this replica's own writes on top.

Every replica already keeps the managed Namespaces in an informer (the controller
wing). Answering GET, the list and the caps from it instead of listing every
managed namespace from the API server per request is what lets one replica serve
thousands of namespaces. The API wing must not import the controller wing, so it
sees the informer only through ``NamespaceSource``, which the top (app.py) adapts.

A cache lags the API server by one watch event. A client that creates a namespace
and at once lists or reads it must see it (read your writes), so the provisioner
records each object its own writes returned, and ``ReadYourWrites`` shows that
object until the cache holds the same version or a newer one. Versions are
compared as integers: resourceVersion is formally opaque, but every etcd-backed API
server hands out etcd revisions; one that does not parse lets the cache win. A
recorded write is dropped after ``hold_seconds`` even if the cache never shows it
(the namespace may have been created and deleted between two relists), so the
overlay stays small and can mislead for that long at most.

A recorded deletion (the namespace, Terminating, as our DELETE returned it) is shown
only over a cached version of that namespace. Once the cache holds none, the
namespace is gone (or was never seen here), and the cache speaks: a namespace being
deleted holds a cap slot until it is gone, and a deletion remembered past that
would hold the slot of a namespace that no longer exists, for up to ``hold_seconds``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

_PRUNE_AT = 256  # recorded writes before record() drops those the cache has caught up with


class NamespaceSource(Protocol):
    """A read-only, label-filtered cache of managed Namespaces kept current by a watch."""

    def synced(self) -> bool:
        """True once the first full list has landed (it stays true through outages)."""
        ...

    def get(self, name: str) -> dict[str, Any] | None: ...

    def items(self) -> list[dict[str, Any]]: ...

    def ready_pooled(self, pool: str) -> list[dict[str, Any]]:
        """The ready pooled namespaces waiting for the profile hash ``pool``."""
        ...

    def version(self) -> int | None:
        """The newest resourceVersion the cache has applied (an event's, a bookmark's, a
        list's), or None when it cannot say."""
        ...


class QuotaSource(Protocol):
    """A read-only cache of nsprov's ResourceQuotas (selector-labelled) kept current by a watch.

    Only GET of one namespace reads it, to show the quota's status; a miss there is
    asked of the API server (the quota may be a moment younger than the cache), so
    no read-your-writes overlay is needed here.
    """

    def synced(self) -> bool: ...

    def get(self, namespace: str, name: str) -> dict[str, Any] | None: ...


def _version(obj: dict[str, Any]) -> int | None:
    try:
        return int(obj.get("metadata", {}).get("resourceVersion", ""))
    except ValueError:
        return None


def _caught_up(cached: dict[str, Any], written: dict[str, Any]) -> bool:
    seen, ours = _version(cached), _version(written)
    return seen is None or ours is None or seen >= ours


def _deletion(written: dict[str, Any]) -> bool:
    return bool(written.get("metadata", {}).get("deletionTimestamp"))


class ReadYourWrites:
    """A ``NamespaceSource`` showing this replica's writes until the cache has them."""

    def __init__(
        self,
        source: NamespaceSource,
        *,
        hold_seconds: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.source = source
        self.hold_seconds = hold_seconds
        self.clock = clock
        self._written: dict[str, tuple[float, dict[str, Any]]] = {}
        self._lock = threading.Lock()

    def record(self, obj: dict[str, Any]) -> None:
        """Remember a Namespace as one of our writes (create, patch, delete) returned it."""
        metadata = obj.get("metadata") or {}
        name = metadata.get("name")
        if not name or "resourceVersion" not in metadata:
            return
        with self._lock:
            self._written[name] = (self.clock() + self.hold_seconds, obj)
            if len(self._written) >= _PRUNE_AT:
                # Reads forget what they pass over; a replica that only creates must too.
                for pending in list(self._written):
                    self._pending(pending, self.source.get(pending))

    def synced(self) -> bool:
        return self.source.synced()

    def get(self, name: str) -> dict[str, Any] | None:
        cached = self.source.get(name)
        with self._lock:
            written = self._pending(name, cached)
        return written if written is not None else cached

    def items(self) -> list[dict[str, Any]]:
        merged = {obj["metadata"]["name"]: obj for obj in self.source.items()}
        with self._lock:
            for name in list(self._written):
                written = self._pending(name, merged.get(name))
                if written is not None:
                    merged[name] = written
        return list(merged.values())

    def ready_pooled(self, pool: str) -> list[dict[str, Any]]:
        """The source's ready pooled namespaces of ``pool``, each as our own write shows it if
        the cache has not caught up with that (a claim: then no longer pooled, and the
        caller, which checks what it gets, passes it over). Only the source makes pooled
        namespaces ready, so our writes can take one out of a pool, never add one."""
        found = []
        ready = self.source.ready_pooled(pool)
        with self._lock:  # once for them all, as items() does
            for cached in ready:
                written = self._pending(cached["metadata"]["name"], cached)
                found.append(written if written is not None else cached)
        return found

    def _pending(self, name: str, cached: dict[str, Any] | None) -> dict[str, Any] | None:
        """Our write of ``name`` if the cache has not caught up with it; forgets stale ones."""
        entry = self._written.get(name)
        if entry is None:
            return None
        until, written = entry
        if cached is not None:
            caught_up = _caught_up(cached, written)
        else:
            # Not cached: either the cache has not seen our write yet, or it saw the
            # namespace come and go (expired, rolled back) before anything read it. Only
            # the cache's own version tells which; without one, the hold decides.
            seen, ours = self.source.version(), _version(written)
            gone_since = seen is not None and ours is not None and seen >= ours
            caught_up = _deletion(written) or gone_since
        if self.clock() >= until or caught_up:
            del self._written[name]
            return None
        return written
