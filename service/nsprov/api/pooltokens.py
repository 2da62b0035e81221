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
- It never outlives its namespace by more than a token minted at the claim would. A
  token's lifetime is fixed when it is minted, before anyone asks, so it is minted for
  the ttl claims of its pool are expected to ask (the tenant's default ttl, what a POST
  without ``?ttl=`` gets) and handed out only if it expires no earlier than the claimed
  namespace and no later than a token minted at that moment would (``fits``): within
  60 s of the namespace's expiry, which holds with the controller down too. That is true
  for about a minute after it is minted, so each held token is minted again about every
  45 s (``FIT_MARGIN_SECONDS`` before it would stop fitting); a claim for another ttl
  mints its token alongside, as without tokens ahead. Its end is judged by this
  process's clock, the one the namespace's expiry is kept by: the lifetime the API
  server gave it, counted from when it was asked for (``MintedToken.ends``). The API
  server's expirationTimestamp is in the API server's clock; a few seconds of skew
  between the two would move it past either bound, where a token minted at the claim
  lives its lifetime from the claim whatever the clocks say.

The cost is one TokenRequest per ready pooled namespace per replica about every 45 s
(0.9 a second for a pool of 40), and none once pools are off.
"""

from __future__ import annotations

import logging
import math
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
"""A pass without an event: a token that failed to mint, or aged, is minted again."""
FIT_MARGIN_SECONDS = 15.0
"""A held token is minted again once it would fit claims for less than this much longer,
so a claim always finds one that fits (a TokenRequest takes milliseconds)."""
_RETRY_SECONDS = 15.0
"""A TokenRequest that failed (an outage, load shed with 429) is tried again after this
long, not on the next pass: retries of a whole pool every pass would add to the load."""
_CLOCK_TOLERANCE_SECONDS = 1
"""The API server states expiry in whole seconds, from its own clock."""


def fits(ends: tuple[float, float], expires_at: int, now: float) -> bool:
    """Whether a token minted earlier may go out with a namespace expiring at
    ``expires_at``: it lasts that long, and it ends no later than a token minted ``now``
    for that namespace would (bundle.token_seconds). ``ends``: the earliest and the
    latest it may stop working, by the clock ``expires_at`` and ``now`` are read from."""
    earliest, latest = ends
    fresh = now + bundle.token_seconds(expires_at - now) + _CLOCK_TOLERANCE_SECONDS
    return expires_at <= earliest and latest <= fresh


@dataclass(frozen=True)
class MintedToken:
    token: str
    expires_at: int | None
    """When it expires, as the API server said, by its clock (None: not said)."""
    ends: tuple[float, float] | None = None
    """When it stops working by this process's clock, earliest and latest: its lifetime
    (the TokenRequest answer's spec.expirationSeconds, capped or not) from when it was
    asked for to when the answer came, less the second the token's exp is truncated to.
    None: not known (then it is not handed out)."""
    asked: int | None = None
    """The lifetime asked for, in seconds (None: minted at a claim)."""
    given: int | None = None
    """The lifetime the API server gave: less than ``asked`` where it caps lifetimes
    (--service-account-max-token-expiration). None: not said."""

    def no_better_again(self, asked: int) -> bool:
        """Whether a token minted again, asking ``asked``, would be no better: this one was
        asked the same and given less, or its lifetime was not said."""
        return self.asked == asked and (self.given is None or self.given < asked)


class PoolTokens:
    """Keeps one token ready for each ready pooled namespace in ``namespaces``."""

    def __init__(
        self,
        kube: Kube,
        namespaces: ReadYourWrites,
        *,
        ttls: Callable[[], dict[str, float]],
        pooling: Callable[[], bool] = lambda: True,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.kube = kube
        self.namespaces = namespaces
        self.pooling = pooling
        """Whether any profile keeps a pool now: without one, no pass scans the namespaces."""
        self.ttls = ttls
        """Pool hash -> the ttl its claims are expected to ask (its tenant's default), for
        the pools kept now: a namespace of another hash (stale) gets no token."""
        self.clock = clock
        self._tokens: dict[str, MintedToken] = {}
        self._taken: set[str] = set()  # names a claim took a token of: never minted again
        self._retry_at: dict[str, float] = {}  # names whose last mint failed: not before
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
        """The token minted ahead for ``name``, if it ``fits`` a namespace expiring at
        ``expires_at``; either way none is held for ``name`` afterwards. Call it before the
        claim's write."""
        with self._lock:
            minted = self._tokens.pop(name, None)
            self._taken.add(name)
        if minted is None or minted.ends is None:
            return None
        return minted if fits(minted.ends, expires_at, self.clock()) else None

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
        """Drop the tokens of namespaces no longer ready and pooled; mint the missing ones,
        and again those that would soon fit no claim of their pool's ttl."""
        if not self.namespaces.synced():
            return
        ready: dict[str, float] = {}  # name -> the ttl its token is minted for
        ttls = self.ttls() if self.pooling() else {}
        for pool, ttl in ttls.items():
            # From the informer's index of each pool (the pool's size at most), not a pass
            # over every cached namespace: this runs on each namespace event, a claim's too.
            for ns in self.namespaces.ready_pooled(pool):
                if bundle.ready_pool_of(ns) == pool and not bundle.is_terminating(ns):
                    ready[ns["metadata"]["name"]] = ttl
        now = self.clock()
        with self._lock:
            for name in [n for n in self._tokens if n not in ready]:
                del self._tokens[name]
            self._taken &= set(ready)  # gone from the pool: its name is never seen again
            self._retry_at = {n: t for n, t in self._retry_at.items() if n in ready and t > now}
            due = [
                name
                for name, ttl in ready.items()
                if name not in self._taken
                and name not in self._retry_at
                and self._due(self._tokens.get(name), ttl, now)
            ]
        for name in due:
            if self._stopping.is_set():
                return
            self._mint(name, ready[name])

    @classmethod
    def _due(cls, minted: MintedToken | None, ttl: float, now: float) -> bool:
        """Whether a token is to be minted (again) for a namespace of ``ttl``'s pool. Not
        when the API server shortened the one held and would the next: each pass (every
        2 s, and on every namespace event) would mint one more for nothing."""
        if minted is None:
            return True
        if minted.no_better_again(bundle.token_seconds(ttl)):
            return False
        return not cls._fresh(minted, ttl, now)

    @staticmethod
    def _fresh(minted: MintedToken | None, ttl: float, now: float) -> bool:
        """Whether ``minted`` fits a claim of ``ttl`` for FIT_MARGIN_SECONDS more."""
        if minted is None or minted.ends is None:
            return False
        later = now + FIT_MARGIN_SECONDS
        return fits(minted.ends, math.ceil(later + ttl), later)

    def _mint(self, name: str, ttl: float) -> None:
        seconds = bundle.token_seconds(ttl)  # as a claim of ttl now would ask
        asked = self.clock()
        try:
            answer = self.kube.post(bundle.token_path(name), bundle.token_request(seconds))
        except (KubeError, NsprovError) as exc:
            log.debug("namespace=%s no token minted ahead: %s", name, exc)
            with self._lock:
                self._retry_at[name] = self.clock() + _RETRY_SECONDS
            return
        answered = self.clock()
        status = answer.get("status") or {}
        # The lifetime it was given: the API server answers with the request, its
        # expirationSeconds shortened if it caps them (--service-account-max-token-expiration).
        lifetime = (answer.get("spec") or {}).get("expirationSeconds")
        given = None
        if isinstance(lifetime, int) and not isinstance(lifetime, bool) and lifetime > 0:
            given = lifetime
        ends = None if given is None else (asked + given - _CLOCK_TOLERANCE_SECONDS,
                                           answered + given)  # fmt: skip
        minted = MintedToken(
            str(status["token"]),
            bundle.unix_time(status.get("expirationTimestamp")),
            ends,
            asked=seconds,
            given=given,
        )
        with self._lock:
            if name not in self._taken:  # claimed while the token was being minted
                self._tokens[name] = minted
