"""The namespaces nsprov manages, as the namespace informer sees them, for the other informers.

The namespaced informers (watch.py) keep only objects in these namespaces: a label
is no proof of ownership, and labelled objects elsewhere once filled every
replica's memory. Two watches keep no order between them, though, so an object
may arrive before its namespace is known (the provisioner creates both within
milliseconds). The scope is where that is noticed and mended: an informer that
drops an object for that reason is noted against the namespace, under the same
lock that ``saw`` takes (so no appearance slips between the check and the note),
and when the namespace appears the scope's thread lists that namespace again for
each such informer (``Informer.catch_up``). Nothing is listed again when nothing
was dropped, so provisioning costs no extra call.
"""

from __future__ import annotations

import logging
import threading
from collections import deque

from nsprov.control.watch import Backoff, Informer

# Its name from before the folders: log filters and the tests select on it.
log = logging.getLogger("nsprov.namespacescope")

# Namespaces the scope remembers an object was dropped in (a name each).
_MISSED_MAX = 10_000


class NamespaceScope:
    """The namespaces whose objects the namespaced informers keep: those nsprov manages.

    Fed by the namespace informer's events (``saw``, ``lost``). What it holds for
    strangers: one name per namespace in which a labelled object was dropped, never
    an object, and at most ``_MISSED_MAX`` names, the oldest forgotten first. A
    namespace nsprov makes appears moments after its objects, so only names noted
    long ago are ever forgotten: those of strangers' namespaces, and of nsprov's own
    whose last events came after the namespace was gone.
    """

    def __init__(self, backoff: Backoff | None = None) -> None:
        self._lock = threading.Lock()
        self._known: set[str] = set()
        self._missed: dict[str, set[Informer]] = {}
        self._pending: deque[tuple[Informer, str]] = deque()
        self._wake = threading.Condition(self._lock)
        self._stopping = False
        self._backoff = backoff or Backoff()
        self._thread: threading.Thread | None = None

    def holds(self, namespace: str) -> bool:
        with self._lock:
            return namespace in self._known

    def admits(self, namespace: str, informer: Informer) -> bool:
        """Whether ``informer`` keeps an object of ``namespace``; if not, remember it asked."""
        with self._lock:
            if namespace in self._known:
                return True
            missed = self._missed.pop(namespace, None) or set()
            missed.add(informer)
            self._missed[namespace] = missed  # the newest last
            if len(self._missed) > _MISSED_MAX:
                del self._missed[next(iter(self._missed))]
            return False

    def saw(self, namespace: str) -> None:
        """The namespace informer holds ``namespace``: catch up on what was dropped there."""
        with self._lock:
            self._known.add(namespace)
            for informer in self._missed.pop(namespace, ()):
                self._pending.append((informer, namespace))
                self._wake.notify()

    def lost(self, namespace: str) -> None:
        """``namespace`` is gone, or no longer nsprov's: its objects' next events drop them."""
        with self._lock:
            self._known.discard(namespace)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="watch-catch-up", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        with self._lock:
            self._stopping = True
            self._wake.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            with self._lock:
                self._wake.wait_for(lambda: self._stopping or bool(self._pending))
                if self._stopping:
                    return
                informer, namespace = self._pending.popleft()
            try:
                informer.catch_up(namespace)
                self._backoff.reset()
            except Exception as exc:
                delay = self._backoff.next()
                log.warning("catching up on %s in namespace=%s failed (%s); again in %.1fs",
                            informer.resource.name, namespace, exc, delay)  # fmt: skip
                with self._lock:
                    self._pending.append((informer, namespace))
                    self._wake.wait_for(lambda: self._stopping, delay)
