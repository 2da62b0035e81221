"""Races for one Idempotency-Key with a pool, played in a chosen order against a small
in-memory API server (resourceVersions, preconditions, label selectors, deletion).

A keyed POST that finds the pool empty creates under the key's name; when a concurrent
POST with the key claimed a pooled namespace first (another name), the create is rolled
back and the claim is answered. That answer must be the one a replay gets without a
pool: 422 for another ttl, and never 429 for the caller's own key's namespace.
"""

from __future__ import annotations

import asyncio
import itertools
from typing import Any, cast

import pytest

from nsprov.api.provisioner import Provisioner
from nsprov.core.errors import Conflict, ProvisioningFailed, TooManyNamespaces, Unprocessable
from nsprov.core.kube import Kube, KubeError
from nsprov.core.namespacecache import ReadYourWrites
from nsprov.core.settings import Settings
from nsprov.policy.model import Profile, flags_profile
from nsprov.provision import bundle
from nsprov.provision.metrics import Metrics
from tests.unit.test_pool import _Namespaces

SELECTOR = bundle.Selector.parse("controller.observatorium.io=namespace-provisioner")
NOW = 1_000_000.0


def _matches(labels: dict[str, str], selector: str) -> bool:
    for term in selector.split(","):
        if term.startswith("!"):
            if term[1:] in labels:
                return False
        elif "=" in term:
            key, value = term.split("=", 1)
            if labels.get(key) != value:
                return False
        elif term not in labels:
            return False
    return True


class _Server:
    """Namespaces as an API server keeps them; every other object is accepted as written."""

    def __init__(self) -> None:
        self.namespaces: dict[str, dict[str, Any]] = {}
        self._revisions = itertools.count(100)

    def _stamp(self, obj: dict[str, Any]) -> dict[str, Any]:
        obj["metadata"]["resourceVersion"] = str(next(self._revisions))
        return cast(dict[str, Any], _copy(obj))

    def add(self, obj: dict[str, Any]) -> dict[str, Any]:
        metadata = obj["metadata"]
        metadata.setdefault("uid", f"uid-{metadata['name']}")
        metadata.setdefault("creationTimestamp", "1970-01-12T13:46:40Z")
        self.namespaces[metadata["name"]] = obj
        return self._stamp(obj)

    def get(self, path: str, query: dict[str, str] | None = None, **_: Any) -> dict[str, Any]:
        if path == bundle.NAMESPACES_PATH:
            selector = (query or {}).get("labelSelector", "")
            return {
                "items": [
                    _copy(ns)
                    for ns in self.namespaces.values()
                    if _matches(ns["metadata"].get("labels") or {}, selector)
                ]
            }
        for name, ns in self.namespaces.items():
            if path == bundle.namespace_path(name):
                return cast(dict[str, Any], _copy(ns))
        raise KubeError(404, "NotFound", path)

    def post(self, path: str, body: dict[str, Any], **_: Any) -> dict[str, Any]:
        if path == bundle.NAMESPACES_PATH:
            if body["metadata"]["name"] in self.namespaces:
                raise KubeError(409, "AlreadyExists", path)
            return self.add(_copy(body))
        if path.endswith("/token"):
            return {"status": {"token": "t", "expirationTimestamp": "2030-01-01T00:00:00Z"}}
        return body

    def create(self, path: str, body: dict[str, Any], **_: Any) -> bool:
        return True

    def replace(self, path: str, body: dict[str, Any], **_: Any) -> dict[str, Any]:
        return body

    def merge_patch(self, path: str, body: dict[str, Any], **_: Any) -> dict[str, Any]:
        ns = self._named(path)
        patch = body["metadata"]
        wanted = patch.get("resourceVersion")
        if wanted is not None and wanted != ns["metadata"]["resourceVersion"]:
            raise KubeError(409, "Conflict", path)
        for field in ("labels", "annotations"):
            values = ns["metadata"].setdefault(field, {})
            for key, value in (patch.get(field) or {}).items():
                if value is None:
                    values.pop(key, None)
                else:
                    values[key] = value
        return self._stamp(ns)

    def delete(self, path: str, body: dict[str, Any] | None = None, **_: Any) -> dict[str, Any]:
        ns = self._named(path)
        ns["metadata"]["deletionTimestamp"] = "1970-01-12T13:46:40Z"
        return self._stamp(ns)

    def _named(self, path: str) -> dict[str, Any]:
        for name, ns in self.namespaces.items():
            if path == bundle.namespace_path(name):
                return ns
        raise KubeError(404, "NotFound", path)


def _copy(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _copy(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_copy(v) for v in obj]
    return obj


def _profile(**settings: Any) -> Profile:
    return flags_profile(Settings(tokens={"x": "y"}, pool_size=3, **settings))


def _claimed_earlier(server: _Server, profile: Profile, digest: str, ttl: float) -> str:
    """What a concurrent POST with the key did first: it claimed a pooled namespace."""
    ns = bundle.namespace(
        "np-pooled", selector=SELECTOR, owner="alice", template=profile.template,
        expires_at=int(NOW + ttl), idempotency=digest, requested_ttl=ttl,
    )  # fmt: skip
    server.add(ns)
    return "np-pooled"


def _provisioner(server: _Server) -> Provisioner:
    # Its cache has not seen the claim yet (another replica made it a moment ago).
    return Provisioner(
        kube=cast(Kube, server), selector=SELECTOR, prefix="np", default_server="https://k",
        ca_data=None, metrics=Metrics(), clock=lambda: NOW, cache=ReadYourWrites(_Lagging([])),
    )  # fmt: skip


def _live(server: _Server) -> list[str]:
    return sorted(
        name for name, ns in server.namespaces.items() if "deletionTimestamp" not in ns["metadata"]
    )


class _Lagging(_Namespaces):
    """A synced NamespaceSource that shows ``items`` only: the replica's informer has not
    seen the concurrent POST's write yet."""


def _with_a_ready_one(server: _Server, provisioner: Provisioner, profile: Profile) -> None:
    """One ready pooled namespace for ``profile``, in the server and in the lagging cache."""
    pooled = bundle.pooled_namespace(
        "np-ready", selector=SELECTOR, template=profile.template, tenant=profile.tenant,
        expires_at=int(NOW + 3600), pool=provisioner._pool_hash(profile),
    )  # fmt: skip
    pooled["metadata"]["labels"][bundle.POOL_READY_LABEL] = "true"
    provisioner.cache = ReadYourWrites(_Lagging([server.add(pooled)]))


@pytest.mark.parametrize("how", ["create", "claim"])
def test_a_post_that_loses_its_key_to_a_claim_with_another_ttl_is_422(how: str) -> None:
    # Without a pool the create runs into the key's name, replays, and is told 422: the
    # key was first used with another ttl. With a pool the first write was a claim, and
    # this POST created under the key's name (the pool empty) or claimed another one.
    server, profile = _Server(), _profile()
    _, digest = bundle.idempotent_name("np", "alice", "job-1")
    claimed = _claimed_earlier(server, profile, digest, ttl=600.0)
    provisioner = _provisioner(server)
    if how == "claim":
        _with_a_ready_one(server, provisioner, profile)
    with pytest.raises(Unprocessable, match="first used with ttl 10m"):
        asyncio.run(provisioner.provision("alice", 1200.0, profile, idempotency_key="job-1"))
    assert _live(server) == [claimed], "this POST's write is rolled back"
    assert ("np-ready" in server.namespaces) is (how == "claim")


class _Unlisted(_Server):
    """An API server whose LISTs by an Idempotency-Key's label fail (a timeout, a 503)."""

    def get(self, path: str, query: dict[str, str] | None = None, **kw: Any) -> dict[str, Any]:
        if bundle.IDEMPOTENCY_LABEL in (query or {}).get("labelSelector", ""):
            raise KubeError(503, "ServiceUnavailable", path)
        return super().get(path, query, **kw)


def test_a_create_whose_key_check_fails_is_rolled_back_as_a_claim_is() -> None:
    # The LIST that decides which write keeps the key fails: this create cannot tell
    # whether it is the key's one, so it goes (as a claim does), never a second live one.
    server, profile = _Unlisted(), _profile()
    _, digest = bundle.idempotent_name("np", "alice", "job-1")
    claimed = _claimed_earlier(server, profile, digest, ttl=600.0)
    provisioner = _provisioner(server)
    with pytest.raises(ProvisioningFailed):
        asyncio.run(provisioner.provision("alice", 600.0, profile, idempotency_key="job-1"))
    assert _live(server) == [claimed]


@pytest.mark.parametrize("how", ["create", "claim"])
@pytest.mark.parametrize("cap", ["maxNamespacesPerOwner", "maxNamespaces"])
def test_a_post_at_its_cap_that_loses_its_key_to_a_claim_answers_the_claim_not_429(
    cap: str, how: str
) -> None:
    # The owner's one namespace is the key's (claimed by a concurrent POST with the key);
    # this POST with the same key is the same request: it is answered that namespace, as a
    # replay is, not refused for holding it.
    server = _Server()
    profile = _profile(
        **({"max_namespaces_per_owner": 1} if cap == "maxNamespacesPerOwner" else {})
    )
    _, digest = bundle.idempotent_name("np", "alice", "job-1")
    claimed = _claimed_earlier(server, profile, digest, ttl=600.0)
    provisioner = _provisioner(server)
    if cap == "maxNamespaces":
        provisioner.max_namespaces = 1
    if how == "claim":
        _with_a_ready_one(server, provisioner, profile)
    try:
        answer = asyncio.run(
            provisioner.provision("alice", 600.0, profile, idempotency_key="job-1")
        )
    except TooManyNamespaces as exc:
        pytest.fail(f"429 for the key's own namespace: {exc}")
    assert answer.name == claimed
    assert answer.replayed
    assert _live(server) == [claimed]


def _another_of_alices(server: _Server, profile: Profile, name: str) -> None:
    server.add(bundle.namespace(
        name, selector=SELECTOR, owner="alice", template=profile.template,
        expires_at=int(NOW + 600),
    ))  # fmt: skip


def test_only_the_keys_live_namespace_is_passed_over_by_the_cap() -> None:
    server, profile = _Server(), _profile(max_namespaces_per_owner=2)
    _, digest = bundle.idempotent_name("np", "alice", "job-1")
    claimed = _claimed_earlier(server, profile, digest, ttl=600.0)
    _another_of_alices(server, profile, "np-other")
    answer = asyncio.run(
        _provisioner(server).provision("alice", 600.0, profile, idempotency_key="job-1")
    )
    assert answer.name == claimed
    assert _live(server) == sorted([claimed, "np-other"])


def test_the_keys_namespace_being_deleted_still_holds_its_slot() -> None:
    # A tenant must not outgrow its cap by deleting and POSTing again with the same key
    # while the old namespace is held Terminating (by finalizers of its own).
    server, profile = _Server(), _profile(max_namespaces_per_owner=2)
    _, digest = bundle.idempotent_name("np", "alice", "job-1")
    claimed = _claimed_earlier(server, profile, digest, ttl=600.0)
    server.namespaces[claimed]["metadata"]["deletionTimestamp"] = "1970-01-12T13:46:40Z"
    _another_of_alices(server, profile, "np-other")
    with pytest.raises(TooManyNamespaces):
        asyncio.run(
            _provisioner(server).provision("alice", 600.0, profile, idempotency_key="job-1")
        )
    assert _live(server) == ["np-other"]


def test_a_post_is_not_answered_a_claim_being_rolled_back() -> None:
    # The earlier claim's POST failed after its write (its token, say) and is rolling it
    # back: marked, its DELETE not yet landed. It was handed to nobody and is about to go,
    # so it is not the key's namespace: this POST keeps its own.
    server, profile = _Server(), _profile()
    _, digest = bundle.idempotent_name("np", "alice", "job-1")
    claimed = _claimed_earlier(server, profile, digest, ttl=600.0)
    server.namespaces[claimed]["metadata"]["annotations"][bundle.ROLLED_BACK_ANNOTATION] = "true"
    answer = asyncio.run(
        _provisioner(server).provision("alice", 600.0, profile, idempotency_key="job-1")
    )
    assert answer.name != claimed
    assert not answer.replayed
    assert answer.name in _live(server)


def test_a_replay_is_not_answered_a_claim_being_rolled_back() -> None:
    # As above, and the POST that kept the key (a create under its name) is done: a replay
    # answers that one, not the older claim about to be deleted.
    server, profile = _Server(), _profile()
    name, digest = bundle.idempotent_name("np", "alice", "job-1")
    claimed = _claimed_earlier(server, profile, digest, ttl=600.0)
    server.namespaces[claimed]["metadata"]["annotations"][bundle.ROLLED_BACK_ANNOTATION] = "true"
    server.add(bundle.namespace(
        name, selector=SELECTOR, owner="alice", template=profile.template,
        expires_at=int(NOW + 600), idempotency=digest, requested_ttl=600.0,
    ))  # fmt: skip
    answer = asyncio.run(
        _provisioner(server).provision("alice", 600.0, profile, idempotency_key="job-1")
    )
    assert (answer.name, answer.replayed) == (name, True)


class _ExtendedMeanwhile(_Server):
    """The key's earlier namespace is extended (PATCH ?ttl=) after this POST's write, just
    before its LIST by the key's label: its resourceVersion is now above this POST's."""

    def __init__(self) -> None:
        super().__init__()
        self.extend: str | None = None

    def get(self, path: str, query: dict[str, str] | None = None, **kw: Any) -> dict[str, Any]:
        if self.extend and bundle.IDEMPOTENCY_LABEL in (query or {}).get("labelSelector", ""):
            name, self.extend = self.extend, None
            labels = {bundle.EXPIRES_AT_LABEL: str(int(NOW + 1200))}
            self.merge_patch(bundle.namespace_path(name), {"metadata": {"labels": labels}})
        return super().get(path, query, **kw)


@pytest.mark.parametrize(
    "caps",
    [
        "maxNamespacesPerOwner",
        pytest.param(
            "none",
            marks=pytest.mark.xfail(
                strict=True,
                reason="without a cap's LIST before it, the key's check sees only the earlier "
                "namespace's resourceVersion after the extend: both writes stay (open)",
            ),
        ),
    ],
)
def test_the_keys_earlier_namespace_extended_meanwhile_still_wins(caps: str) -> None:
    server, profile = (
        _ExtendedMeanwhile(),
        _profile(**({"max_namespaces_per_owner": 5} if caps != "none" else {})),
    )
    _, digest = bundle.idempotent_name("np", "alice", "job-1")
    claimed = _claimed_earlier(server, profile, digest, ttl=600.0)
    server.extend = claimed
    answer = asyncio.run(
        _provisioner(server).provision("alice", 600.0, profile, idempotency_key="job-1")
    )
    assert (answer.name, answer.replayed) == (claimed, True)
    assert _live(server) == [claimed], "one namespace for the key"


def test_a_post_that_loses_its_key_to_an_expired_claim_is_409_not_its_kubeconfig() -> None:
    # The key's claim expired a moment ago and the controller has not deleted it yet: a
    # replay is 409 (use a new key), and so is a POST that lost its key to it.
    server, profile = _Server(), _profile()
    _, digest = bundle.idempotent_name("np", "alice", "job-1")
    claimed = _claimed_earlier(server, profile, digest, ttl=600.0)
    labels = server.namespaces[claimed]["metadata"]["labels"]
    labels[bundle.EXPIRES_AT_LABEL] = str(int(NOW - 1))
    with pytest.raises(Conflict, match="expired"):
        asyncio.run(
            _provisioner(server).provision("alice", 600.0, profile, idempotency_key="job-1")
        )
    assert _live(server) == [claimed], "this POST's create is rolled back"


class _RolledBackMeanwhile(_Server):
    """The first request for the key is refused by a cap and rolls its namespace back while
    a replay of it is minting its token (the replay found it a moment before): just after
    the TokenRequest, or just before it, which the API server then refuses (403: no new
    content in a namespace being terminated)."""

    def __init__(self, before_token: bool) -> None:
        super().__init__()
        self.before_token = before_token

    def post(self, path: str, body: dict[str, Any], **kw: Any) -> dict[str, Any]:
        if not path.endswith("/token"):
            return super().post(path, body, **kw)
        if self.before_token:
            self._roll_back(path)
            raise KubeError(403, "Forbidden", path)
        answer = super().post(path, body, **kw)
        self._roll_back(path)
        return answer

    def _roll_back(self, path: str) -> None:
        for name, ns in self.namespaces.items():
            if path.startswith(bundle.namespace_path(name) + "/"):
                ns["metadata"]["annotations"][bundle.ROLLED_BACK_ANNOTATION] = "true"
                ns["metadata"]["deletionTimestamp"] = "1970-01-12T13:46:40Z"


@pytest.mark.parametrize("before_token", [False, True], ids=["after-its-token", "before"])
@pytest.mark.parametrize("pool", [0, 3])
def test_a_replay_never_hands_out_a_namespace_rolled_back_while_it_was_answered(
    pool: int, before_token: bool
) -> None:
    # 409 as for any replay of a namespace going, not 201 (a kubeconfig for it) nor 500.
    server = _RolledBackMeanwhile(before_token)
    profile = flags_profile(Settings(tokens={"x": "y"}, pool_size=pool))
    name, digest = bundle.idempotent_name("np", "alice", "job-1")
    server.add(bundle.namespace(
        name, selector=SELECTOR, owner="alice", template=profile.template,
        expires_at=int(NOW + 600), idempotency=digest, requested_ttl=600.0,
    ))  # fmt: skip
    with pytest.raises(Conflict, match="being deleted"):
        asyncio.run(
            _provisioner(server).provision("alice", 600.0, profile, idempotency_key="job-1")
        )


def test_a_retry_after_a_rolled_back_claim_is_not_409() -> None:
    # The first POST claimed, was refused by a cap (429) and rolled its claim back; the
    # Action (wait-for-slot) retries with the same key while that one is still going. It
    # was handed to nobody: not the key's namespace being deleted, so no 409.
    server, profile = _Server(), _profile()
    _, digest = bundle.idempotent_name("np", "alice", "job-1")
    claimed = _claimed_earlier(server, profile, digest, ttl=600.0)
    metadata = server.namespaces[claimed]["metadata"]
    metadata["annotations"][bundle.ROLLED_BACK_ANNOTATION] = "true"
    metadata["deletionTimestamp"] = "1970-01-12T13:46:40Z"
    provisioner = _provisioner(server)
    provisioner.cache = ReadYourWrites(_Lagging([_copy(server.namespaces[claimed])]))
    answer = asyncio.run(provisioner.provision("alice", 600.0, profile, idempotency_key="job-1"))
    assert answer.name != claimed
    assert not answer.replayed


def test_a_later_claim_for_the_key_does_not_push_the_keys_first_write_over_the_cap() -> None:
    # This POST created under the key's name first; a concurrent one claimed a pooled
    # namespace made an hour ago just after. The claim's older creationTimestamp would
    # rank it ahead in the caps; it is the key's later write, rolled back by its own check.
    server, profile = _Server(), _profile(max_namespaces_per_owner=1)
    name, digest = bundle.idempotent_name("np", "alice", "job-1")
    ours = server.add(bundle.namespace(
        name, selector=SELECTOR, owner="alice", template=profile.template,
        expires_at=int(NOW + 600), idempotency=digest, requested_ttl=600.0,
    ))  # fmt: skip
    later = bundle.namespace(
        "np-claimed", selector=SELECTOR, owner="alice", template=profile.template,
        expires_at=int(NOW + 600), idempotency=digest, requested_ttl=600.0,
    )  # fmt: skip
    later["metadata"]["creationTimestamp"] = "1970-01-12T12:46:40Z"
    server.add(later)
    provisioner = _provisioner(server)
    caps = provisioner._caps("alice", profile)
    passed = asyncio.run(provisioner._hold_caps(ours, caps))
    assert name in _live(server), "within the cap"
    assert asyncio.run(provisioner._earlier_with_key(ours, "alice", None, digest, passed)) is None
