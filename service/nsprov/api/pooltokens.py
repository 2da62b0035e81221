"""Tokens minted ahead for ready pooled namespaces: a claim is then one write, not two.

A claim needs the conditional write that hands the namespace over and a TokenRequest.
Sent side by side they still cost about their sum, not the longer of the two: both are
CPU on the API server's cores (on the 2-core bench machine a PATCH took 2.7 ms and a
TokenRequest 3.6 ms alone, 6.1-6.7 ms together). So every replica mints, in the
background, a token for each ready pooled namespace its informer shows, and a claim it
wins hands out that token instead of asking for one (docs/pools.md has the figures).

Why holding them is safe:

- A token minted ahead leaves the process only with the namespace this replica's own
  conditional claim won, the same rule as for a token minted alongside a claim. One
  whose namespace was claimed elsewhere, or is gone or going, is dropped as soon as the
  informer says so; a restart drops them all. A claim takes the token out before its
  write, so a lost claim never puts it back.
- It is bound to the namespace's ServiceAccount, which nothing but an admin can touch in
  a pooled namespace (k8s/'s admission policies): deleting the namespace, at expiry or on
  DELETE, deletes the ServiceAccount and the token stops working, as every nsprov token.
- Its lifetime cannot fit a request not yet made: it is minted for the pooled
  namespace's remaining life plus the longest ttl (--max-ttl), and a claim uses it only
  if it lasts at least until the claimed namespace's expiry (else mints one, as before).
  So its ``exp`` is later than the namespace's expiry, which a fresh token passes by
  only 60 s: what ends it is the namespace's deletion. With the controller down past an
  expiry, such a kubeconfig works until the controller is back and deletes it.

The cost is one TokenRequest per pooled namespace per replica: the pool sizes bound it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from nsprov.core.errors import NsprovError
from nsprov.core.kube import Kube, KubeError
from nsprov.core.namespacecache import ReadYourWrites
from nsprov.provision import bundle

# Named as the other modules' loggers are (before the folders): log filters select on it.
log = logging.getLogger("nsprov.pooltokens")

_TICK_SECONDS = 2.0
"""A pass without an event: a token that failed to mint is asked for again."""


@dataclass(frozen=True)
class MintedToken:
    token: str
    expires_at: int | None
    """When it expires, as the API server said (None: not said)."""


class PoolTokens:
    """Keeps one token ready for each ready pooled namespace in ``namespaces``."""

    def __init__(
        self,
        kube: Kube,
        namespaces: ReadYourWrites,
        *,
        max_ttl: float,
        pooling: Callable[[], bool] = lambda: True,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.kube = kube
        self.namespaces = namespaces
        self.pooling = pooling
        """Whether any profile keeps a pool now: without one, no pass scans the namespaces."""
        self.max_ttl = max_ttl
        self.clock = clock
        self._tokens: dict[str, MintedToken] = {}
        self._taken: set[str] = set()  # names a claim took a token of: never minted again
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="pool-tokens", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def wake(self) -> None:
        """Look again now (a namespace event: one may have become ready, or been claimed)."""
        self._wake.set()

    def held(self) -> int:
        with self._lock:
            return len(self._tokens)

    def take(self, name: str, expires_at: int) -> MintedToken | None:
        """The token minted ahead for ``name``, if it lasts until ``expires_at``; either way
        none is held for ``name`` afterwards. Call it before the claim's write."""
        with self._lock:
            minted = self._tokens.pop(name, None)
            self._taken.add(name)
        if minted is None or (minted.expires_at is not None and minted.expires_at < expires_at):
            return None
        return minted

    def _run(self) -> None:
        while not self._stopping.is_set():
            self._wake.wait(_TICK_SECONDS)
            self._wake.clear()
            if self._stopping.is_set():
                return
            try:
                self.refresh()
            except Exception:
                log.exception("minting tokens ahead failed; again in %.0fs", _TICK_SECONDS)

    def refresh(self) -> None:
        """Drop the tokens of namespaces no longer ready and pooled; mint the missing ones."""
        if not self.namespaces.synced():
            return
        ready: dict[str, int] = {}
        for ns in self.namespaces.items() if self.pooling() else []:
            metadata = ns["metadata"]
            if (
                bundle.is_pooled(metadata)
                and bundle.is_pool_ready(metadata)
                and not bundle.is_terminating(ns)
            ):
                ready[metadata["name"]] = bundle.expires_at_of(metadata) or 0
        with self._lock:
            for name in [n for n in self._tokens if n not in ready]:
                del self._tokens[name]
            self._taken &= set(ready)  # gone from the pool: its name is never seen again
            missing = [n for n in ready if n not in self._tokens and n not in self._taken]
        for name in missing:
            if self._stopping.is_set():
                return
            self._mint(name, ready[name])

    def _mint(self, name: str, pool_expires_at: int) -> None:
        now = self.clock()
        if pool_expires_at <= now:
            return
        seconds = bundle.token_seconds(pool_expires_at - now + self.max_ttl)
        try:
            answer = self.kube.post(bundle.token_path(name), bundle.token_request(seconds))
        except (KubeError, NsprovError) as exc:
            log.debug("namespace=%s no token minted ahead: %s", name, exc)
            return
        status = answer.get("status") or {}
        minted = MintedToken(
            str(status["token"]), bundle.unix_time(status.get("expirationTimestamp"))
        )
        with self._lock:
            if name not in self._taken:  # claimed while the token was being minted
                self._tokens[name] = minted
