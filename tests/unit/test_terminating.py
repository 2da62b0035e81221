"""A namespace being deleted holds its cap slot until it is gone, and a stuck one is reported.

Without a cluster: the provisioner and the controller run against fakes that answer
what the API server would, and the controller's clock is a variable.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from nsprov.api.provisioner import NamespaceInfo, Provisioner
from nsprov.client.cli import blockers_table, table
from nsprov.control.controller import Controller
from nsprov.core.errors import TooManyNamespaces
from nsprov.core.kube import KubeError
from nsprov.policy.model import Profile
from nsprov.provision import bundle, deletion
from nsprov.provision.metrics import Metrics
from nsprov.provision.template import Template

SELECTOR = bundle.Selector.parse("controller.observatorium.io=namespace-provisioner")
NOW = 1_900_000_000.0
DELETED_AT = "2030-03-17T17:46:40Z"  # NOW - 0 s, as the API server writes it
FINALIZERS = (
    "Some content in the namespace has finalizers remaining: example.com/never in 3 resource "
    "instances"
)
CONTENT = "Some resources are remaining: configmaps. has 3 resource instances"


def _namespace(
    name: str,
    owner: str = "alice",
    *,
    deleting: bool = False,
    revision: int = 10,
    created: str = "2030-03-17T17:00:00Z",
    conditions: list[dict[str, str]] | None = None,
) -> dict[str, Any]:
    """A namespace as nsprov makes it and the API server answers it."""
    namespace = bundle.namespace(
        name, selector=SELECTOR, owner=owner, template=Template(("grant",)),
        expires_at=int(NOW) + 3600, tenant="web",
    )  # fmt: skip
    metadata = namespace["metadata"]
    metadata.update(uid=f"uid-{name}", resourceVersion=str(revision), creationTimestamp=created)
    if deleting:
        metadata["deletionTimestamp"] = DELETED_AT
    if conditions is not None:
        namespace["status"] = {"phase": "Terminating", "conditions": conditions}
    return namespace


def _blocking() -> list[dict[str, str]]:
    return [
        {"type": "NamespaceDeletionDiscoveryFailure", "status": "False", "message": "All fine"},
        {"type": "NamespaceContentRemaining", "status": "True", "message": CONTENT},
        {"type": "NamespaceFinalizersRemaining", "status": "True", "message": FINALIZERS},
    ]


# ---- what holds a namespace ---------------------------------------------------------------


def test_blockers_are_the_true_deletion_conditions_bounded() -> None:
    going = _namespace("np-a", deleting=True, conditions=_blocking())
    assert deletion.blockers(going) == (
        deletion.Blocker("NamespaceContentRemaining", CONTENT),
        deletion.Blocker("NamespaceFinalizersRemaining", FINALIZERS),
    )
    # A tenant names its finalizers and chooses how many: the message is cut.
    long = [{"type": "NamespaceFinalizersRemaining", "status": "True", "message": "x" * 5000}]
    (cut,) = deletion.blockers(_namespace("np-a", deleting=True, conditions=long))
    assert len(cut.message) == deletion.MAX_MESSAGE
    assert cut.message.endswith("...")
    # A live namespace has none, whatever its status says.
    assert deletion.blockers(_namespace("np-a", conditions=_blocking())) == ()


def test_a_namespace_being_deleted_is_marked_for_deletion_with_since_and_blockers() -> None:
    body = NamespaceInfo.from_object(
        _namespace("np-a", deleting=True, conditions=_blocking())
    ).to_json()
    assert body["state"] == "MARKED_FOR_DELETION"
    assert body["deletionStartedAt"] == DELETED_AT
    assert body["blockedBy"] == [
        {"condition": "NamespaceContentRemaining", "message": CONTENT},
        {"condition": "NamespaceFinalizersRemaining", "message": FINALIZERS},
    ]
    live = NamespaceInfo.from_object(_namespace("np-b")).to_json()
    assert live["state"] == "ACTIVE"
    assert "deletionStartedAt" not in live
    assert "blockedBy" not in live


def test_a_caller_is_told_what_remains_but_not_kubernetes_error_text() -> None:
    failing = [
        *_blocking(),
        {"type": "NamespaceDeletionDiscoveryFailure", "status": "True",
         "message": "Discovery failed for some groups: metrics.k8s.io/v1beta1: 503 from 10.0.0.9"},
    ]  # fmt: skip
    body = NamespaceInfo.from_object(_namespace("np-a", deleting=True, conditions=failing))
    by_condition = {b.condition: b.message for b in body.blocked_by}
    assert by_condition["NamespaceFinalizersRemaining"] == FINALIZERS
    assert "10.0.0.9" not in by_condition["NamespaceDeletionDiscoveryFailure"]
    # The operator's log line and Event still carry it.
    everything = deletion.describe(deletion.blockers(_namespace("np-a", deleting=True,
                                                                conditions=failing)))  # fmt: skip
    assert "10.0.0.9" in everything


# ---- caps ---------------------------------------------------------------------------------


class _Kube:
    """The API server for a create: LISTs answer ``listings`` in turn, the POST makes
    ``created``, DELETEs are recorded."""

    def __init__(self, listings: list[list[dict[str, Any]]], created: dict[str, Any]) -> None:
        self.listings = listings
        self.created = created
        self.posts: list[str] = []
        self.deletes: list[str] = []
        self.patches: list[dict[str, Any]] = []
        self.creates: list[str] = []

    def get(self, path: str, **kw: Any) -> dict[str, Any]:
        assert path == bundle.NAMESPACES_PATH, path
        return {"items": self.listings.pop(0) if len(self.listings) > 1 else self.listings[0]}

    def post(self, path: str, body: dict[str, Any], **kw: Any) -> dict[str, Any]:
        self.posts.append(path)
        return self.created

    def create(self, path: str, body: dict[str, Any], **kw: Any) -> dict[str, Any]:
        self.creates.append(path)
        return body

    def merge_patch(self, path: str, body: dict[str, Any], **kw: Any) -> dict[str, Any]:
        self.patches.append(body)
        return self.created

    def delete(self, path: str, body: dict[str, Any] | None = None, **kw: Any) -> dict[str, Any]:
        self.deletes.append(path)
        return {**self.created, "metadata": {**self.created["metadata"],
                                             "deletionTimestamp": DELETED_AT}}  # fmt: skip


def _profile(per_owner: int | None = None, tenant_cap: int | None = None) -> Profile:
    return Profile(
        tenant="web", template=Template(("grant",)), ttl=600, max_ttl=3600, max_lifetime=0,
        max_namespaces=tenant_cap, max_namespaces_per_owner=per_owner,
    )  # fmt: skip


def _provision(kube: _Kube, profile: Profile, max_namespaces: int = 0) -> None:
    provisioner = Provisioner(
        kube=kube,  # type: ignore[arg-type]
        selector=SELECTOR,
        prefix="np",
        default_server="https://k8s.example",
        ca_data=None,
        metrics=Metrics(),
        max_namespaces=max_namespaces,
        clock=lambda: NOW,
    )
    asyncio.run(provisioner.provision("alice", 600, profile))


def test_namespaces_being_deleted_fill_the_owners_cap_and_the_detail_says_so() -> None:
    going = [_namespace("np-a", deleting=True), _namespace("np-b", deleting=True)]
    kube = _Kube([going], created=_namespace("np-new", revision=99))
    with pytest.raises(TooManyNamespaces) as refused:
        _provision(kube, _profile(per_owner=2))
    assert "the limit of 2 namespaces per owner (tenant 'web') is reached" in refused.value.detail
    assert "2 of them are being deleted" in refused.value.detail
    assert kube.posts == [], "refused before anything was created"


@pytest.mark.parametrize(
    ("profile", "max_namespaces"),
    [(_profile(tenant_cap=2), 0), (_profile(), 2)],
    ids=["tenant", "total"],
)
def test_namespaces_being_deleted_fill_the_tenant_and_total_caps(
    profile: Profile, max_namespaces: int
) -> None:
    others = [_namespace("np-a", owner="bob"), _namespace("np-b", owner="carol", deleting=True)]
    kube = _Kube([others], created=_namespace("np-new", revision=99))
    with pytest.raises(TooManyNamespaces) as refused:
        _provision(kube, profile, max_namespaces)
    assert "1 of them is being deleted and holds its slot" in refused.value.detail


def test_a_namespace_being_deleted_ranks_ahead_in_the_consistent_check() -> None:
    # The cache saw nothing (another replica deleted np-a's predecessor a moment ago), the
    # consistent LIST after the create sees np-a, older and being deleted: the create is
    # over the cap, rolled back before the 429.
    created = _namespace("np-new", revision=99, created="2030-03-17T17:50:00Z")
    kube = _Kube([[], [_namespace("np-a", deleting=True, revision=5), created]], created=created)
    with pytest.raises(TooManyNamespaces) as refused:
        _provision(kube, _profile(per_owner=1))
    assert "1 of them is being deleted" in refused.value.detail
    assert kube.posts == [bundle.NAMESPACES_PATH]
    assert kube.deletes == [bundle.namespace_path("np-new")]


def test_a_rolled_back_namespace_holds_no_slot_while_it_is_deleted() -> None:
    """A lost cap race is marked before its delete, and such a namespace (nobody was handed
    it) is not counted: one owner's burst of concurrent creates must not fill the tenant's
    slots with its rolled-back losers (review: another owner was refused ~7 s)."""
    created = _namespace("np-new", revision=99, created="2030-03-17T17:50:00Z")
    kube = _Kube([[], [_namespace("np-a", revision=5), created]], created=created)
    with pytest.raises(TooManyNamespaces):
        _provision(kube, _profile(per_owner=1))
    assert kube.patches == [{"metadata": {"resourceVersion": "99", "annotations": {
        bundle.ROLLED_BACK_ANNOTATION: "true"}}}]  # fmt: skip
    assert kube.deletes == [bundle.namespace_path("np-new")]
    loser = _namespace("np-lost", deleting=True, revision=7)
    loser["metadata"].setdefault("annotations", {})[bundle.ROLLED_BACK_ANNOTATION] = "true"
    mine = _namespace("np-mine", revision=120, created="2030-03-17T17:50:00Z")
    kube = _Kube([[loser], [loser, mine]], created=mine)
    with pytest.raises(KeyError):  # within the cap; this fake API server mints no token
        _provision(kube, _profile(tenant_cap=1))
    assert kube.creates, "within the cap: the bundle is made"


def test_live_namespaces_alone_say_nothing_of_deletion() -> None:
    kube = _Kube([[_namespace("np-a")]], created=_namespace("np-new", revision=99))
    with pytest.raises(TooManyNamespaces) as refused:
        _provision(kube, _profile(per_owner=1))
    assert "being deleted" not in refused.value.detail


def test_the_list_shows_namespaces_being_deleted() -> None:
    listing = [_namespace("np-b", deleting=True), _namespace("np-a"), _namespace("np-c", "bob")]
    provisioner = Provisioner(
        kube=_Kube([listing], created={}),  # type: ignore[arg-type]
        selector=SELECTOR, prefix="np", default_server="https://k8s.example", ca_data=None,
        metrics=Metrics(),
    )  # fmt: skip
    infos = asyncio.run(provisioner.list("alice", tenant="web"))
    assert [(i.name, i.state) for i in infos] == [
        ("np-a", "ACTIVE"),
        ("np-b", "MARKED_FOR_DELETION"),
    ]


# ---- stuck: the controller ----------------------------------------------------------------


class _EventSink:
    """The API server's events endpoint: records each Event, or answers ``refusal``."""

    def __init__(self, refusal: KubeError | None = None) -> None:
        self.refusal = refusal
        self.events: list[dict[str, Any]] = []

    def post(self, path: str, body: dict[str, Any], **kw: Any) -> dict[str, Any]:
        assert path == deletion.EVENTS_PATH, path
        self.events.append(body)
        if self.refusal is not None:
            raise self.refusal
        return body


class _Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


def _controller(sink: _EventSink, clock: _Clock) -> Controller:
    controller = Controller(
        sink,  # type: ignore[arg-type]  # the informers are never started
        selector=SELECTOR,
        cluster_role="grant",
        metrics=Metrics(),
        clock=clock,
        stuck_after_seconds=600,
        instance="nsprov-0",
    )
    return controller


def _stuck_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith("stuck ")]


def test_a_stuck_namespace_is_reported_once_at_the_stuck_instant(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sink, clock = _EventSink(), _Clock()
    controller = _controller(sink, clock)
    going = _namespace("np-a", deleting=True, conditions=_blocking())
    controller.namespaces._store[("", "np-a")] = going
    caplog.set_level(logging.INFO, logger="nsprov.controller")

    controller.reconcile("np-a")
    # Not yet stuck: nothing said, a wake-up at the instant it turns stuck (no polling).
    assert sink.events == []
    assert _stuck_lines(caplog) == []
    assert controller.queue._deadline_of == {"np-a": NOW + 600}

    clock.now = NOW + 599
    controller.reconcile("np-a")  # the namespace controller updated its conditions, say
    assert sink.events == []

    clock.now = NOW + 600
    for _ in range(3):  # the wake-up, then resyncs and further events
        controller.reconcile("np-a")
    (event,) = sink.events
    assert event["reason"] == "NamespaceStuck"
    assert event["type"] == "Warning"
    assert event["regarding"] == {"apiVersion": "v1", "kind": "Namespace", "name": "np-a",
                                  "uid": "uid-np-a"}  # fmt: skip
    assert event["metadata"] == {"name": "np-a.stuck.uid-np-a", "namespace": "default"}
    assert "example.com/never" in event["note"]
    assert len(event["note"].encode()) <= 1024
    assert event["reportingController"] == "nsprov.io/controller"
    assert event["reportingInstance"] == "nsprov-0"
    (line,) = _stuck_lines(caplog)
    assert "namespace=np-a tenant=web owner=alice deleting_seconds=600" in line
    assert "event=recorded" in line
    assert "example.com/never" in line
    assert "configmaps" in line


def test_reported_already_elsewhere_is_not_logged_again(caplog: pytest.LogCaptureFixture) -> None:
    sink, clock = _EventSink(KubeError(409, "AlreadyExists", "exists")), _Clock()
    controller = _controller(sink, clock)
    controller.namespaces._store[("", "np-a")] = _namespace("np-a", deleting=True)
    clock.now = NOW + 3600
    caplog.set_level(logging.INFO, logger="nsprov.controller")
    controller.reconcile("np-a")
    controller.reconcile("np-a")
    assert len(sink.events) == 1
    assert _stuck_lines(caplog) == []


def test_a_refused_event_still_leaves_the_log_line_once(caplog: pytest.LogCaptureFixture) -> None:
    sink, clock = _EventSink(KubeError(403, "Forbidden", "no")), _Clock()
    controller = _controller(sink, clock)
    controller.namespaces._store[("", "np-a")] = _namespace("np-a", deleting=True)
    clock.now = NOW + 3600
    caplog.set_level(logging.INFO, logger="nsprov.controller")
    controller.reconcile("np-a")
    controller.reconcile("np-a")
    (line,) = _stuck_lines(caplog)
    assert "event=refused (403 Forbidden)" in line
    assert "the namespace controller has not said what remains" in line


def test_an_unreachable_api_server_retries_the_report() -> None:
    sink, clock = _EventSink(KubeError(503, "ServiceUnavailable", "busy")), _Clock()
    controller = _controller(sink, clock)
    controller.namespaces._store[("", "np-a")] = _namespace("np-a", deleting=True)
    clock.now = NOW + 3600
    with pytest.raises(KubeError):
        controller.reconcile("np-a")
    sink.refusal = None
    controller.reconcile("np-a")
    assert len(sink.events) == 2


def test_gone_and_back_under_the_same_name_is_a_new_namespace() -> None:
    sink, clock = _EventSink(), _Clock()
    controller = _controller(sink, clock)
    first = _namespace("np-a", deleting=True)
    controller.namespaces._store[("", "np-a")] = first
    clock.now = NOW + 3600
    controller.reconcile("np-a")
    controller._on_namespace("DELETED", first)
    assert controller._reported_stuck == set()


def test_the_gauge_counts_namespaces_being_deleted_by_tenant_and_stuck() -> None:
    clock = _Clock()
    controller = _controller(_EventSink(), clock)
    store = controller.namespaces._store
    store[("", "np-a")] = _namespace("np-a", deleting=True)
    store[("", "np-b")] = _namespace("np-b")
    controller.namespaces.synced.set()
    registry = controller.metrics.registry

    def sample(tenant: str, stuck: str) -> float | None:
        labels = {"tenant": tenant, "stuck": stuck}
        return registry.get_sample_value("nsprov_namespaces_terminating", labels)

    assert (sample("web", "false"), sample("web", "true"), sample("", "true")) == (1, 0, 0)
    clock.now = NOW + 600
    assert (sample("web", "false"), sample("web", "true")) == (0, 1)


# ---- the client's table -------------------------------------------------------------------


def test_the_client_table_shows_since_when_a_namespace_is_being_deleted() -> None:
    rows = [
        {"name": "np-a", "state": "ACTIVE", "expiresAt": "2030-01-01T01:30:00Z"},
        {"name": "np-b", "state": "MARKED_FOR_DELETION", "expiresAt": "2030-01-01T01:30:00Z",
         "deletionStartedAt": DELETED_AT},
    ]  # fmt: skip
    lines = table(rows, now=1893456000).splitlines()
    assert lines[0].split() == ["NAME", "STATE", "EXPIRES-AT", "EXPIRES-IN", "DELETING-SINCE"]
    assert lines[1].split()[-1] == "-"
    assert lines[2].split()[1::3] == ["MARKED_FOR_DELETION", DELETED_AT]
    blockers = blockers_table([{"condition": "NamespaceFinalizersRemaining", "message": "x y"}])
    assert blockers.splitlines()[1].split() == ["NamespaceFinalizersRemaining", "x", "y"]
