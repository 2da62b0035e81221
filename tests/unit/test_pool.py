"""Warm pools without a cluster: the policy keys, the shapes in bundle.py, the keeper's
decisions and the first-call check's choice of rule (tests/integration/test_pool.py
runs them against a real API server)."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from typing import Any, cast

import pytest

from nsprov.api.pooltokens import PoolTokens, fits
from nsprov.api.provisioner import Provisioner
from nsprov.control.controller import Controller
from nsprov.control.pool import PoolKeeper, profile_hash
from nsprov.control.watch import Informer
from nsprov.core.errors import ClusterUnavailable
from nsprov.core.kube import Kube, KubeError
from nsprov.core.namespacecache import ReadYourWrites
from nsprov.core.settings import Settings
from nsprov.policy.file import PolicyError, parse_policy
from nsprov.policy.model import Pool, flags_profile
from nsprov.provision import bundle, firstcall
from nsprov.provision.grant import GrantGuard
from nsprov.provision.metrics import Metrics
from nsprov.provision.template import Template

SELECTOR = bundle.Selector.parse("controller.observatorium.io=namespace-provisioner")
TENANTS = """
defaults:
  pool: {size: 2}
tenants:
  - name: web
    match: {token: web}
    pool: {size: 5, maxAge: 30m}
  - name: batch
    match: {token: batch}
  - name: quiet
    match: {token: quiet}
    pool: {size: 0}
"""


def test_a_pool_on_a_tenant_or_the_defaults_resolves_per_tenant() -> None:
    base = flags_profile(Settings(tokens={"x": "y"}))
    pooled = parse_policy(TENANTS).pooled_profiles(base)
    assert [(p.tenant, p.pool) for p in pooled] == [
        ("web", Pool(5, 1800.0)),
        ("batch", Pool(2, 3600.0)),
    ]


def test_the_flags_give_a_pool_without_a_policy_file() -> None:
    assert flags_profile(Settings(tokens={"x": "y"})).pool is None
    profile = flags_profile(Settings(tokens={"x": "y"}, pool_size=3, pool_max_age=600.0))
    assert profile.pool == Pool(3, 600.0)


@pytest.mark.parametrize(
    ("pool", "message"),
    [
        ("{size: 101}", "at most 100"),
        ("{maxAge: 1h}", "size: required"),
        ("{size: 2, maxAge: 10s}", "maxAge: at least 1m"),
        ("{size: -1}", "whole number"),
        ("{size: 2, max: 1h}", "unknown key 'max'"),
    ],
)
def test_bad_pools_are_refused_with_where_and_why(pool: str, message: str) -> None:
    with pytest.raises(PolicyError, match=message):
        parse_policy(f"tenants:\n  - name: web\n    match: {{token: web}}\n    pool: {pool}\n")


def test_a_pooled_namespace_has_no_owner_no_tenant_label_and_its_profiles_hash() -> None:
    template = Template(("grant",), pod_security="baseline")
    manifest = bundle.pooled_namespace(
        "np-abc", selector=SELECTOR, template=template, tenant="web", expires_at=99, pool="h1"
    )
    metadata = manifest["metadata"]
    assert bundle.owner_of(metadata) is None
    assert bundle.tenant_of(metadata) is None
    assert bundle.TENANT_LABEL not in metadata["labels"]
    assert bundle.OWNER_HASH_LABEL not in metadata["labels"]
    assert bundle.is_managed(metadata, SELECTOR)
    assert bundle.expires_at_of(metadata) == 99
    assert bundle.pool_of(metadata) == "h1"
    assert bundle.pool_tenant_of(metadata) == "web"
    assert not bundle.is_pool_ready(metadata)
    assert bundle.template_of(metadata) == template
    # Nobody sees it: no owner is its owner.
    assert not bundle.belongs_to(metadata, "", None)


def test_a_claim_is_one_conditional_write_that_makes_it_the_callers() -> None:
    metadata = {"resourceVersion": "42", "labels": {bundle.POOL_LABEL: "h1"}}
    patch = bundle.claim_patch(
        metadata, owner="alice", tenant="web", expires_at=123, requested_ttl=600.0,
        idempotency="k" * 40,
    )  # fmt: skip
    meta = patch["metadata"]
    assert meta["resourceVersion"] == "42"
    assert meta["labels"][bundle.POOL_LABEL] is None
    assert meta["labels"][bundle.POOL_READY_LABEL] is None
    assert meta["labels"][bundle.EXPIRES_AT_LABEL] == "123"
    assert meta["labels"][bundle.OWNER_HASH_LABEL] == bundle.owner_hash("alice")
    assert meta["labels"][bundle.TENANT_LABEL] == "web"
    assert meta["labels"][bundle.IDEMPOTENCY_LABEL] == "k" * 40
    assert meta["annotations"][bundle.OWNER_ANNOTATION] == "alice"
    assert meta["annotations"][bundle.TENANT_ANNOTATION] == "web"
    assert meta["annotations"][bundle.POOL_TENANT_ANNOTATION] is None


def test_the_hash_changes_with_the_tenant_the_template_and_the_grants_rules() -> None:
    template = Template(("grant",))
    first = bundle.pool_hash("web", template, ["r1"])
    assert first == bundle.pool_hash("web", template, ["r1"])
    assert len(first) <= 63
    assert first != bundle.pool_hash("batch", template, ["r1"])
    assert first != bundle.pool_hash("web", Template(("grant",), labels={"a": "b"}), ["r1"])
    assert first != bundle.pool_hash("web", template, ["r2"])


def test_the_first_call_check_asks_about_the_first_resource_rule() -> None:
    role = {
        "rules": [
            {"nonResourceURLs": ["/healthz"], "verbs": ["get"]},
            {"apiGroups": ["apps"], "resources": ["deployments/scale"], "verbs": ["update", "get"],
             "resourceNames": ["web"]},
        ]
    }  # fmt: skip
    access = firstcall.representative_access(role)
    assert access == {
        "verb": "update", "group": "apps", "resource": "deployments", "subresource": "scale",
        "name": "web",
    }  # fmt: skip
    assert firstcall.representative_access({"rules": []}) is None
    assert firstcall.representative_access({"rules": None}) is None
    review = firstcall.service_account_review("np-x", {"verb": "get", "group": "", "resource": "p"})
    assert review["spec"]["user"] == "system:serviceaccount:np-x:namespace-provisioner"
    assert "system:serviceaccounts:np-x" in review["spec"]["groups"]
    assert review["spec"]["resourceAttributes"]["namespace"] == "np-x"


class _Authorizer:
    """A Kube that allows an access only from its ``lag``-th review on."""

    def __init__(self, lag: int, status: int = 0) -> None:
        self.lag, self.status, self.reviews = lag, status, 0

    def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        assert path == firstcall.SUBJECT_ACCESS_REVIEWS
        if self.status:
            raise KubeError(self.status, "Forbidden", "no")
        self.reviews += 1
        return {"status": {"allowed": self.reviews >= self.lag}}


ACCESS = {"verb": "get", "group": "", "resource": "configmaps"}


def test_the_first_call_check_asks_again_until_allowed_within_a_deadline() -> None:
    slept: list[float] = []
    kube = _Authorizer(lag=3)
    assert firstcall.wait_until_allowed(cast(Kube, kube), "np-x", [ACCESS], sleep=slept.append)
    assert kube.reviews == 3
    assert slept == [0.01, 0.015]
    never = _Authorizer(lag=10**6)
    assert not firstcall.wait_until_allowed(
        cast(Kube, never), "np-x", [ACCESS], deadline_seconds=0.0, sleep=slept.append
    )
    refused = _Authorizer(lag=1, status=403)
    assert not firstcall.wait_until_allowed(cast(Kube, refused), "np-x", [ACCESS])


class _Cache:
    def __init__(self, items: list[dict[str, Any]]) -> None:
        self._items = items
        self.synced = type("E", (), {"is_set": lambda self: True})()

    def items(self) -> list[dict[str, Any]]:
        return self._items


class _Recorder:
    def __init__(self) -> None:
        self.deleted: list[tuple[str, dict[str, Any] | None]] = []

    def delete(self, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        self.deleted.append((path, body))
        return {}


def _pooled(name: str, pool: str, *, ready: bool = True, created: str = "2026-01-01T00:00:00Z"):  # type: ignore[no-untyped-def]
    ns = bundle.pooled_namespace(
        name, selector=SELECTOR, template=Template(("g",)), tenant="web", expires_at=10**10,
        pool=pool,
    )  # fmt: skip
    metadata = ns["metadata"]
    metadata.update(uid=f"uid-{name}", resourceVersion="7", creationTimestamp=created)
    if ready:
        metadata["labels"][bundle.POOL_READY_LABEL] = "true"
    return ns


def test_the_keeper_deletes_stale_and_abandoned_pooled_namespaces_exactly_and_fills_the_rest() -> (
    None
):
    base = flags_profile(Settings(tokens={"x": "y"}, pool_size=3))
    current = profile_hash(base, None)
    cache = _Cache([
        _pooled("np-old", "stale-hash"),
        _pooled("np-half", current, ready=False),
        _pooled("np-ok", current),
        bundle.namespace("np-claimed", selector=SELECTOR, owner="a", template=Template(("g",)),
                         expires_at=10**10),
    ])  # fmt: skip
    kube = _Recorder()
    keeper = PoolKeeper(
        cast(Kube, kube), selector=SELECTOR, prefix="np", namespaces=cast(Informer, cache),
        profiles=lambda: [base], metrics=Metrics(), clock=lambda: 1.9e9,
    )  # fmt: skip
    started: list[str] = []
    keeper._start_making = lambda profile, pool: started.append(pool)  # type: ignore[method-assign]
    keeper.keep()
    assert [path for path, _ in kube.deleted] == [
        bundle.namespace_path("np-old"),
        bundle.namespace_path("np-half"),
    ]
    # Exactly the version seen: one claimed since is not deleted (409).
    assert kube.deleted[0][1] == bundle.delete_exactly("uid-np-old", "7")
    assert started == [current, current]  # 3 wanted, np-ok is there
    keeper.stop()


def test_a_keeper_makes_nothing_with_a_grant_it_may_not_hand_out() -> None:
    base = flags_profile(Settings(tokens={"x": "y"}, pool_size=3))
    grants = GrantGuard(lambda: [*base.cluster_roles])
    keeper = PoolKeeper(
        cast(Kube, _Recorder()), selector=SELECTOR, prefix="np",
        namespaces=cast(Informer, _Cache([])), profiles=lambda: [base], metrics=Metrics(),
        grants=grants,
    )  # fmt: skip
    assert keeper.wanted() == {}
    grants.listed([{"metadata": {"name": base.cluster_roles[0]}, "rules": []}])
    assert list(keeper.wanted()) == [profile_hash(base, grants)]
    keeper.stop()


class _Writes:
    """A Kube that records what the controller writes."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def create(self, path: str, body: dict[str, Any]) -> bool:
        self.calls.append(("create", path))
        return True

    def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        self.calls.append(("post", path))
        return body

    def merge_patch(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        self.calls.append(("patch", path))
        return {}

    def delete(self, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        self.calls.append(("delete", path))
        return {}


def _reconciled(expires_at: int) -> list[tuple[str, str]]:
    """What the controller writes for one pooled namespace (its objects all missing)."""
    kube = _Writes()
    controller = Controller(
        cast(Kube, kube), selector=SELECTOR, cluster_role="g", metrics=Metrics(),
        clock=lambda: 1000.0,
    )  # fmt: skip
    ns = bundle.pooled_namespace(
        "np-p", selector=SELECTOR, template=Template(("g",)), tenant="web",
        expires_at=expires_at, pool="h",
    )  # fmt: skip
    ns["metadata"].update(uid="u", resourceVersion="1", creationTimestamp="1970-01-01T00:00:00Z")
    controller.namespaces._store[("", "np-p")] = ns
    try:
        controller.reconcile("np-p")
    finally:
        for informer in controller.informers:
            informer.synced.set()
        controller.stop()
    return kube.calls


def test_the_controller_repairs_a_pooled_namespace_rather_than_adopting_it() -> None:
    calls = _reconciled(expires_at=5000)
    assert ("create", bundle.service_accounts_path("np-p")) in calls
    assert ("create", bundle.role_bindings_path("np-p")) in calls
    assert not [c for c in calls if c[0] in ("patch", "delete")]


def test_the_controller_deletes_a_pooled_namespace_at_its_max_age() -> None:
    assert _reconciled(expires_at=900) == [("delete", bundle.namespace_path("np-p"))]


class _Namespaces:
    """A synced NamespaceSource holding ``items``."""

    def __init__(self, items: list[dict[str, Any]]) -> None:
        self._items = {i["metadata"]["name"]: i for i in items}

    def synced(self) -> bool:
        return True

    def get(self, name: str) -> dict[str, Any] | None:
        return self._items.get(name)

    def items(self) -> list[dict[str, Any]]:
        return list(self._items.values())

    def ready_pooled(self, pool: str) -> list[dict[str, Any]]:
        return [i for i in self._items.values() if bundle.ready_pool_of(i) == pool]

    def version(self) -> int | None:
        return None


class _Claims(_Writes):
    def merge_patch(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        self.calls.append(("patch", path))
        return {"metadata": {"name": path.rsplit("/", 1)[1], "resourceVersion": "9"}}

    def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        self.calls.append(("post", path))
        return {"status": {"token": "t", "expirationTimestamp": "2030-01-01T00:00:00Z"}}


def _claim(items: list[dict[str, Any]], profile_pool: int = 3) -> list[tuple[str, str]]:
    kube = _Claims()
    provisioner = Provisioner(
        kube=cast(Kube, kube), selector=SELECTOR, prefix="np", default_server="https://k",
        ca_data=None, metrics=Metrics(), cache=ReadYourWrites(_Namespaces(items)),
    )  # fmt: skip
    profile = flags_profile(Settings(tokens={"x": "y"}, pool_size=profile_pool))
    won = asyncio.run(
        provisioner._claim(
            "alice", 600.0, profile, expires_at=10**9 + 600, idempotency=None, requested_by=None
        )
    )
    return kube.calls if won else []


def test_a_stale_profiles_pooled_namespace_is_never_claimed() -> None:
    base = flags_profile(Settings(tokens={"x": "y"}, pool_size=3))
    current = profile_hash(base, None)
    stale = _pooled("np-stale", "not-" + current)
    half = _pooled("np-half", current, ready=False)
    assert _claim([stale, half]) == []
    fresh = _pooled("np-fresh", current)
    assert ("patch", bundle.namespace_path("np-fresh")) in _claim([stale, half, fresh])


# ---- tokens minted ahead (pooltokens.py) -----------------------------------------------------


NOW = 10**9
"""The tokens' clock in these tests (unix seconds)."""


def _iso(unix: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(unix))


class _Tokens(_Claims):
    """A Kube whose TokenRequests answer a token named after its namespace, for the lifetime
    asked from ``now()`` (as the API server does), or until ``expires_at`` when given; it
    records each request's lifetime."""

    def __init__(
        self, expires_at: str | None = None, now: Callable[[], float] = lambda: NOW
    ) -> None:
        super().__init__()
        self.expires_at = expires_at
        self.now = now
        self.lifetimes: dict[str, int] = {}

    def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        self.calls.append(("post", path))
        name = path.split("/")[4]
        seconds = body["spec"]["expirationSeconds"]
        self.lifetimes[name] = seconds
        expires_at = self.expires_at or _iso(self.now() + seconds)
        return {  # as the API server answers: the request, and its status
            "spec": body["spec"],
            "status": {"token": f"token-{name}@{self.now()}", "expirationTimestamp": expires_at},
        }


def _pool_tokens(
    kube: _Tokens,
    items: list[dict[str, Any]],
    pooling: bool = True,
    ttls: dict[str, float] | None = None,
    clock: Callable[[], float] = lambda: NOW,
) -> PoolTokens:
    return PoolTokens(
        cast(Kube, kube), ReadYourWrites(_Namespaces(items)),
        ttls=lambda: {"h": 3600.0} if ttls is None else ttls,
        pooling=lambda: pooling, clock=clock,
    )  # fmt: skip


def test_a_token_is_minted_ahead_for_each_ready_pooled_namespace_only() -> None:
    claimed = bundle.namespace("np-claimed", selector=SELECTOR, owner="a",
                               template=Template(("g",)), expires_at=10**10)  # fmt: skip
    going = _pooled("np-going", "h")
    going["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    stale = _pooled("np-stale", "an-old-hash")  # its pool is not kept now
    kube = _Tokens()
    tokens = _pool_tokens(kube, [_pooled("np-a", "h"), _pooled("np-half", "h", ready=False),
                                 claimed, going, stale])  # fmt: skip
    tokens.refresh()
    assert kube.calls == [("post", bundle.token_path("np-a"))]
    # For the pool's expected ttl (its tenant's default), as a claim asking it would mint:
    # 60 s past the namespace's expiry.
    assert kube.lifetimes == {"np-a": 3600 + 60}
    assert tokens.held() == 1
    tokens.refresh()  # held already: not minted again
    assert len(kube.calls) == 1


def test_a_token_minted_ahead_goes_out_only_if_a_token_minted_at_the_claim_would_end_as_late() -> (
    None
):
    kube = _Tokens()
    tokens = _pool_tokens(kube, [_pooled("np-a", "h"), _pooled("np-b", "h"), _pooled("np-c", "h")])
    tokens.refresh()  # each ends at NOW + 3660
    minted = tokens.take("np-a", NOW + 3600)  # a claim of the default ttl: it fits
    assert minted is not None
    assert minted.token == f"token-np-a@{NOW}"
    assert tokens.take("np-a", NOW + 3600) is None  # taken once
    # A longer ttl: the token would end before the namespace.
    assert tokens.take("np-b", NOW + 3601 + 60) is None
    # A shorter one: it would outlive the namespace by more than a fresh token does.
    assert tokens.take("np-c", NOW + 600) is None
    tokens.refresh()  # a name a claim took a token of is never minted for again
    assert tokens.held() == 0
    assert len(kube.calls) == 3


def test_held_tokens_are_minted_again_before_they_stop_fitting() -> None:
    now = [float(NOW)]
    kube = _Tokens(now=lambda: now[0])
    tokens = _pool_tokens(kube, [_pooled("np-a", "h")], clock=lambda: now[0])
    tokens.refresh()
    now[0] = NOW + 30
    tokens.refresh()
    assert len(kube.calls) == 1  # fits a claim for the next 15 s and more: kept
    now[0] = NOW + 46
    tokens.refresh()
    assert len(kube.calls) == 2  # would not fit a claim 15 s from now: minted again
    now[0] = NOW + 59
    minted = tokens.take("np-a", math.ceil(now[0] + 3600))
    assert minted is not None
    assert minted.token == f"token-np-a@{NOW + 46}"
    assert minted.ends is not None
    assert fits(minted.ends, math.ceil(now[0] + 3600), now[0])


@pytest.mark.parametrize("skew", [-50, 50])
def test_a_token_minted_ahead_is_judged_by_this_clock_not_the_api_servers(skew: int) -> None:
    """The API server's clock ``skew`` seconds off this one's: its expirationTimestamp is
    in its own clock, but the namespace is deleted by this one's. A token handed out ends,
    by this clock, no earlier than the namespace and no later than a token minted at the
    claim (which lives its lifetime from the claim whatever the clocks say)."""
    handed_out = []
    for expires_at in range(NOW + 600, NOW + 3600 + 200):  # claims of every ttl, at NOW
        kube = _Tokens(now=lambda: NOW + skew)  # the API server's clock
        tokens = _pool_tokens(kube, [_pooled("np-a", "h")])  # this one's: NOW
        tokens.refresh()
        ends = NOW + kube.lifetimes["np-a"]  # when it stops working, by this clock
        if tokens.take("np-a", expires_at) is not None:
            handed_out.append(expires_at)
            fresh_ends = NOW + bundle.token_seconds(expires_at - NOW)
            assert expires_at <= ends <= fresh_ends + 1, (expires_at, ends, fresh_ends)
    assert NOW + 3600 in handed_out  # a claim of the default ttl still gets it


class _Capping(_Tokens):
    """An API server with --service-account-max-token-expiration: it shortens longer
    lifetimes to ``cap``, and answers with the lifetime it gave."""

    def __init__(self, cap: int, now: Callable[[], float] = lambda: NOW) -> None:
        super().__init__(now=now)
        self.cap = cap

    def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        spec = {"expirationSeconds": min(self.cap, body["spec"]["expirationSeconds"])}
        return super().post(path, {"spec": spec})


def test_a_token_the_api_server_shortened_is_not_minted_again_and_again() -> None:
    """A tenant's default ttl past the API server's cap: every token comes back too short
    to fit a claim, and one minted again would too. Minting again each pass (every 2 s and
    on every namespace event) would be a TokenRequest stream per ready pooled namespace for
    nothing; claims mint alongside, as without tokens ahead."""
    now = [float(NOW)]
    kube = _Capping(3600, now=lambda: now[0])
    tokens = _pool_tokens(kube, [_pooled("np-a", "h"), _pooled("np-b", "h")],
                          ttls={"h": 7200.0}, clock=lambda: now[0])  # fmt: skip
    for _ in range(30):  # a minute of passes
        tokens.refresh()
        now[0] += 2
    assert len(kube.calls) == 2  # one each
    assert tokens.take("np-b", math.ceil(now[0] + 7200)) is None  # too short to fit
    # The tenant's ttl changes (a policy reload) to one the cap allows: minted again.
    tokens.ttls = lambda: {"h": 1800.0}
    tokens.refresh()
    assert len(kube.calls) == 3
    assert tokens.take("np-a", math.ceil(now[0] + 1800)) is not None


class _Shedding(_Tokens):
    """An API server shedding load (API Priority and Fairness: 429) or away."""

    def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        self.calls.append(("post", path))
        raise ClusterUnavailable("Kubernetes API answered 429")


def test_a_failed_mint_is_not_retried_on_every_pass() -> None:
    """A TokenRequest refused for load (or an outage) is tried again after a pause, not on
    the next pass (2 s, or the next namespace event): a pool's worth of retries each pass
    would add to the load the API server is shedding."""
    now = [float(NOW)]
    kube = _Shedding(now=lambda: now[0])
    tokens = _pool_tokens(kube, [_pooled("np-a", "h")], clock=lambda: now[0])
    for _ in range(15):  # 30 s of passes
        tokens.refresh()
        now[0] += 2
    assert 1 <= len(kube.calls) <= 3
    assert tokens.held() == 0


def test_fits_is_the_fresh_tokens_bound() -> None:
    expires_at = NOW + 1800
    fresh = NOW + bundle.token_seconds(1800)  # what a TokenRequest at NOW would end at
    assert fits((fresh, fresh), expires_at, NOW)
    assert fits((expires_at, expires_at), expires_at, NOW)
    assert not fits((expires_at - 1, expires_at), expires_at, NOW)  # may end before it
    assert not fits((fresh, fresh + 2), expires_at, NOW)  # may outlive it longer than fresh
    # Below the API server's shortest lifetime (10 minutes), a fresh token outlives a
    # short-lived namespace too, and one minted ahead may as much.
    assert fits((NOW + 600, NOW + 600), NOW + 60, NOW)


def test_a_token_whose_lifetime_was_not_said_is_not_handed_out() -> None:
    """Without the answer's spec.expirationSeconds its end by this clock is unknown."""

    class _Unsaid(_Tokens):
        def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
            answer = super().post(path, body)
            del answer["spec"]
            return answer

    tokens = _pool_tokens(_Unsaid(), [_pooled("np-a", "h")])
    tokens.refresh()
    assert tokens.take("np-a", NOW + 3600) is None


def test_tokens_of_namespaces_no_longer_ready_are_dropped_and_none_without_a_pool() -> None:
    items = [_pooled("np-a", "h"), _pooled("np-b", "h")]
    namespaces = _Namespaces(items)
    tokens = PoolTokens(cast(Kube, _Tokens()), ReadYourWrites(namespaces),
                        ttls=lambda: {"h": 60.0}, clock=lambda: NOW)  # fmt: skip
    tokens.refresh()
    assert tokens.held() == 2
    del namespaces._items["np-a"]  # claimed by another replica (or gone)
    tokens.refresh()
    assert tokens.held() == 1
    assert tokens.take("np-a", 0) is None
    tokens.pooling = lambda: False
    tokens.refresh()
    assert tokens.held() == 0


def _claim_with(
    kube: _Tokens,
    tokens: PoolTokens | None,
    items: list[dict[str, Any]],
    metrics: Metrics | None = None,
) -> Any:
    provisioner = Provisioner(
        kube=cast(Kube, kube), selector=SELECTOR, prefix="np", default_server="https://k",
        ca_data=None, metrics=metrics or Metrics(), cache=ReadYourWrites(_Namespaces(items)),
        pool_tokens=tokens,
    )  # fmt: skip
    profile = flags_profile(Settings(tokens={"x": "y"}, pool_size=3))
    return asyncio.run(
        provisioner._claim(
            "alice", 600.0, profile, expires_at=NOW + 600, idempotency=None, requested_by=None
        )
    )


def test_a_claim_with_a_token_minted_ahead_is_one_write_and_hands_out_that_token() -> None:
    current = profile_hash(flags_profile(Settings(tokens={"x": "y"}, pool_size=3)), None)
    items = [_pooled("np-a", current)]
    kube = _Tokens()
    tokens = _pool_tokens(kube, items, ttls={current: 600.0})  # the claim's ttl below
    tokens.refresh()
    kube.calls.clear()
    claimed, (token, _) = _claim_with(kube, tokens, items)
    assert kube.calls == [("patch", bundle.namespace_path("np-a"))]
    assert (claimed["metadata"]["name"], token) == ("np-a", f"token-np-a@{NOW}")
    # Without one, the TokenRequest goes alongside the claim, as before.
    kube.calls.clear()
    _, (token, _) = _claim_with(kube, None, items)
    assert sorted(kube.calls) == [
        ("patch", bundle.namespace_path("np-a")),
        ("post", bundle.token_path("np-a")),
    ]


class _Lost(_Tokens):
    def merge_patch(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        self.calls.append(("patch", path))
        raise KubeError(409, "Conflict", "claimed by another replica")


def test_a_lost_claim_drops_its_token_minted_ahead() -> None:
    current = profile_hash(flags_profile(Settings(tokens={"x": "y"}, pool_size=3)), None)
    items = [_pooled("np-a", current)]
    kube = _Lost()
    tokens = _pool_tokens(kube, items, ttls={current: 600.0})
    tokens.refresh()
    assert _claim_with(kube, tokens, items) is None
    assert tokens.held() == 0
    tokens.refresh()  # the cache still shows it ready: still not minted again, nor handed out
    assert tokens.held() == 0


def test_only_a_won_claim_counts_where_its_token_came_from() -> None:
    """nsprov_pool_tokens_total counts claims by where their token came from; a claim lost
    to another replica handed out no token (two replicas at once counted 5 of 4 POSTs)."""
    current = profile_hash(flags_profile(Settings(tokens={"x": "y"}, pool_size=3)), None)
    items = [_pooled("np-a", current)]
    kube = _Lost()
    tokens = _pool_tokens(kube, items, ttls={current: 600.0})
    tokens.refresh()
    metrics = Metrics()
    assert _claim_with(kube, tokens, items, metrics) is None
    assert _claim_with(_Lost(), None, items, metrics) is None  # alongside, lost too
    for minted in ("ahead", "alongside"):
        assert metrics.pool_tokens.labels(minted=minted)._value.get() == 0


# ---- replaying an Idempotency-Key with a pool ---------------------------------------------


class _Listing(_Writes):
    """A Kube whose GETs answer ``items`` by name, and all of them to a LIST."""

    def __init__(self, items: list[dict[str, Any]]) -> None:
        super().__init__()
        self.items = items

    def get(self, path: str, query: dict[str, str] | None = None) -> dict[str, Any]:
        self.calls.append(("get", path))
        if path == bundle.NAMESPACES_PATH:
            return {"items": self.items}
        for item in self.items:
            if bundle.namespace_path(item["metadata"]["name"]) == path:
                return item
        raise KubeError(404, "NotFound", path)


def _keyed(name: str, digest: str, revision: int) -> dict[str, Any]:
    ns = bundle.namespace(name, selector=SELECTOR, owner="alice", template=Template(("g",)),
                          expires_at=10**10, idempotency=digest, requested_ttl=600.0)  # fmt: skip
    ns["metadata"]["resourceVersion"] = str(revision)
    return ns


@pytest.mark.parametrize("cached", [False, True], ids=["by-the-keys-name", "from-the-cache"])
def test_a_replay_answers_the_keys_first_namespace_not_a_create_about_to_lose(
    cached: bool,
) -> None:
    # One POST claimed np-pooled (revision 10); a concurrent one found the pool empty and
    # created the key's name (revision 20), and has not rolled it back yet. A replay that
    # finds the key's name (by a GET, or as this replica's own write in the cache ahead of
    # the watch) must answer the claim, which stays: CI once answered both to one key.
    name, digest = bundle.idempotent_name("np", "alice", "job-1")
    claimed, created = _keyed("np-pooled", digest, 10), _keyed(name, digest, 20)
    kube = _Listing([claimed, created])
    provisioner = Provisioner(
        kube=cast(Kube, kube), selector=SELECTOR, prefix="np", default_server="https://k",
        ca_data=None, metrics=Metrics(),
        cache=ReadYourWrites(_Namespaces([created] if cached else [])),
    )  # fmt: skip
    profile = flags_profile(Settings(tokens={"x": "y"}, pool_size=3))
    found = asyncio.run(provisioner._replay_keyed("alice", name, digest, 600.0, profile))
    assert found is not None
    assert found["metadata"]["name"] == "np-pooled"
