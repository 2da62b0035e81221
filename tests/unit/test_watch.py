from __future__ import annotations

import json
import time
from typing import Any

import pytest

from nsprov.control.namespacescope import NamespaceScope
from nsprov.control.watch import (
    LIMIT_RANGES,
    NAMESPACES,
    NETWORK_POLICIES,
    RESOURCE_QUOTAS,
    ROLE_BINDINGS,
    SERVICE_ACCOUNTS,
    Backoff,
    Informer,
    Resource,
    StreamingRefused,
    WatchExpired,
    WatchFailed,
    shaped,
)
from nsprov.core.kube import KubeError
from nsprov.provision import bundle
from tests.support import wait_until


def _informer() -> tuple[Informer, list[tuple[str, str]]]:
    seen: list[tuple[str, str]] = []
    informer = Informer(
        kube=None,  # type: ignore[arg-type]  # _apply never calls the API
        resource=NAMESPACES,
        label_selector="a=b",
        listener=lambda kind, obj: seen.append((kind, obj["metadata"]["name"])),
    )
    return informer, seen


def _event(kind: str, name: str, version: str) -> dict[str, Any]:
    return {"type": kind, "object": {"metadata": {"name": name, "resourceVersion": version}}}


def test_events_update_the_cache_and_the_version() -> None:
    informer, seen = _informer()
    assert informer._apply(_event("ADDED", "np-a", "10"), "1") == "10"
    assert informer._apply(_event("MODIFIED", "np-a", "11"), "10") == "11"
    assert informer.get("", "np-a")["metadata"]["resourceVersion"] == "11"
    assert informer.version() == 11
    assert informer._apply(_event("DELETED", "np-a", "12"), "11") == "12"
    assert informer.get("", "np-a") is None
    assert informer.version() == 12  # the cache saw np-a go: read-your-writes may forget it
    assert seen == [("ADDED", "np-a"), ("MODIFIED", "np-a"), ("DELETED", "np-a")]


def test_bookmarks_move_the_version_without_an_event() -> None:
    informer, seen = _informer()
    bookmark = {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "99"}}}
    assert informer.version() is None  # nothing listed yet
    assert informer._apply(bookmark, "5") == "99"
    assert informer.version() == 99
    assert seen == []
    assert len(informer) == 0


def _pooled(kind: str, name: str, version: str, pool: str, ready: bool) -> dict[str, Any]:
    labels = {bundle.POOL_LABEL: pool, **({bundle.POOL_READY_LABEL: "true"} if ready else {})}
    event = _event(kind, name, version)
    event["object"]["metadata"]["labels"] = labels
    return event


def test_the_index_follows_each_event_and_a_relist() -> None:
    informer = Informer(
        kube=None,  # type: ignore[arg-type]  # _apply never calls the API
        resource=NAMESPACES,
        label_selector="a=b",
        listener=lambda kind, obj: None,
        index=bundle.ready_pool_of,
    )

    def ready(pool: str) -> list[str]:
        return sorted(obj["metadata"]["name"] for obj in informer.indexed(pool))

    informer._apply(_pooled("ADDED", "np-a", "10", "p1", ready=False), "1")
    assert ready("p1") == []  # not ready yet
    informer._apply(_pooled("MODIFIED", "np-a", "11", "p1", ready=True), "10")
    informer._apply(_pooled("ADDED", "np-b", "12", "p1", ready=True), "11")
    informer._apply(_pooled("ADDED", "np-c", "13", "p2", ready=True), "12")
    assert (ready("p1"), ready("p2")) == (["np-a", "np-b"], ["np-c"])
    informer._apply(_event("MODIFIED", "np-a", "14"), "13")  # claimed: no pool labels
    informer._apply(_event("DELETED", "np-c", "15"), "14")
    assert (ready("p1"), ready("p2")) == (["np-b"], [])
    assert informer._index.keys() == {"p1"}  # an emptied group is forgotten
    informer._replace([_pooled("ADDED", "np-d", "16", "p2", ready=True)["object"]], "16")
    assert (ready("p1"), ready("p2")) == ([], ["np-d"])


def test_error_events_end_the_watch_by_kind() -> None:
    informer, _ = _informer()
    gone = {"type": "ERROR", "object": {"kind": "Status", "code": 410, "message": "too old"}}
    with pytest.raises(WatchExpired, match="too old"):
        informer._apply(gone, "5")
    other = {"type": "ERROR", "object": {"kind": "Status", "code": 500, "message": "boom"}}
    with pytest.raises(WatchFailed, match="boom"):
        informer._apply(other, "5")


def test_backoff_grows_with_jitter_up_to_the_cap_and_resets() -> None:
    backoff = Backoff(initial=1.0, maximum=8.0)
    delays = [backoff.next() for _ in range(6)]
    for attempt, delay in enumerate(delays):
        ceiling = min(8.0, 2.0**attempt)
        assert ceiling / 2 <= delay <= ceiling
    backoff.reset()
    assert backoff.next() <= 1.0


def test_the_cache_keeps_no_managed_fields() -> None:
    informer, _ = _informer()
    event = _event("ADDED", "np-a", "10")
    event["object"]["metadata"]["managedFields"] = [{"manager": "nsprov", "fieldsV1": {}}]
    informer._apply(event, "1")
    assert "managedFields" not in informer.get("", "np-a")["metadata"]


def test_cached_objects_from_separate_events_share_their_keys() -> None:
    informer, seen = _informer()
    for name in ("np-a", "np-b"):
        # As a watch delivers them: each event a JSON document of its own.
        line = json.dumps(
            {
                "type": "ADDED",
                "object": {
                    "metadata": {"name": name, "resourceVersion": "10", "labels": {"a": "b"}},
                    "subjects": [{"kind": "ServiceAccount", "name": "sa"}],
                },
            }
        )
        informer._apply(json.loads(line), "1")
    a, b = informer.get("", "np-a"), informer.get("", "np-b")
    assert a == {
        "metadata": {"name": "np-a", "resourceVersion": "10", "labels": {"a": "b"}},
        "subjects": [{"kind": "ServiceAccount", "name": "sa"}],
    }
    assert seen == [("ADDED", "np-a"), ("ADDED", "np-b")]
    pairs = [
        (next(iter(a)), next(iter(b))),  # "metadata"
        (next(iter(a["metadata"]["labels"])), next(iter(b["metadata"]["labels"]))),
        (next(iter(a["subjects"][0])), next(iter(b["subjects"][0]))),  # inside a list
    ]
    for key_a, key_b in pairs:
        assert key_a == key_b
        assert key_a is key_b


# ---- only what nsprov manages, only what it reads ------------------------------------------


class _Pages:
    """A fake Kube whose GET answers list pages from ``objects`` and records what was asked."""

    def __init__(self, objects: list[dict[str, Any]], version: str = "50") -> None:
        self.objects = objects
        self.version = version
        self.asked: list[tuple[str, dict[str, str], str]] = []
        self.during: list[Any] = []  # called once each, while the first GET is in flight

    def get(self, path: str, *, query: dict[str, str], accept: str) -> dict[str, Any]:
        self.asked.append((path, query, accept))
        for call in self.during:
            call()
        self.during = []
        namespace = path.split("/namespaces/")[1].split("/")[0] if "/namespaces/" in path else None
        items = [
            json.loads(json.dumps(obj))  # a fresh parse, as from the wire
            for obj in self.objects
            if namespace is None or obj["metadata"]["namespace"] == namespace
        ]
        return {"metadata": {"resourceVersion": self.version}, "items": items}


def _service_account(namespace: str, name: str, version: str = "10") -> dict[str, Any]:
    return {
        "kind": "ServiceAccount",
        "metadata": {
            "name": name, "namespace": namespace, "uid": f"uid-{name}",
            "resourceVersion": version, "labels": {"a": "b"},
            "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "x" * 1000},
            "managedFields": [{"manager": "kubectl"}],
        },
        "imagePullSecrets": [{"name": f"pull-{i}"} for i in range(1000)],
        "secrets": [{"name": "token"}],
    }  # fmt: skip


def _scoped(
    resource: Resource, kube: Any = None, known: tuple[str, ...] = ("np-a",)
) -> tuple[Informer, NamespaceScope, list[tuple[str, str]], list[str]]:
    scope = NamespaceScope()
    for namespace in known:
        scope.saw(namespace)
    seen: list[tuple[str, str]] = []
    foreign: list[str] = []
    informer = Informer(
        kube, resource, "a=b",
        lambda kind, obj: seen.append((kind, f"{obj['metadata']['namespace']}/"
                                             f"{obj['metadata']['name']}")),
        scope=scope, on_foreign=foreign.append,
    )  # fmt: skip
    return informer, scope, seen, foreign


def test_objects_outside_managed_namespaces_are_dropped_on_arrival_and_counted() -> None:
    informer, _, seen, foreign = _scoped(SERVICE_ACCOUNTS)
    informer._apply({"type": "ADDED", "object": _service_account("elsewhere", "big")}, "1")
    informer._apply({"type": "MODIFIED", "object": _service_account("elsewhere", "big")}, "1")
    assert informer.get("elsewhere", "big") is None
    assert len(informer) == 0
    assert foreign == ["serviceaccount", "serviceaccount"]
    assert seen == []
    # Its deletion is no news either: nothing of it was held, its namespace is not nsprov's.
    informer._apply({"type": "DELETED", "object": _service_account("elsewhere", "big")}, "1")
    assert seen == []


def test_a_service_account_is_cached_as_its_identity_and_labels_only() -> None:
    informer, _, seen, foreign = _scoped(SERVICE_ACCOUNTS)
    informer._apply({"type": "ADDED", "object": _service_account("np-a", "namespace-provisioner")},
                    "1")  # fmt: skip
    assert informer.get("np-a", "namespace-provisioner") == {
        "metadata": {"name": "namespace-provisioner", "namespace": "np-a",
                     "uid": "uid-namespace-provisioner", "resourceVersion": "10",
                     "labels": {"a": "b"}},
    }  # fmt: skip
    assert seen == [("ADDED", "np-a/namespace-provisioner")]
    assert foreign == []


def test_each_kind_keeps_the_fields_its_readers_compare() -> None:
    binding = {
        "metadata": {"name": "rb", "namespace": "np-a", "resourceVersion": "3", "uid": "u",
                     "labels": {"a": "b"}, "annotations": {"note": "x"}},
        "roleRef": {"kind": "ClusterRole", "name": "grant"},
        "subjects": [{"kind": "ServiceAccount", "name": "namespace-provisioner"}],
    }  # fmt: skip
    kept = shaped(json.loads(json.dumps(binding)), ROLE_BINDINGS)
    assert kept == {**binding, "metadata": {k: v for k, v in binding["metadata"].items()
                                            if k != "annotations"}}  # fmt: skip
    quota = {"metadata": {"name": "q", "namespace": "np-a"}, "spec": {"hard": {"pods": "1"}},
             "status": {"hard": {"pods": "1"}, "used": {"pods": "0"}}}  # fmt: skip
    assert shaped(json.loads(json.dumps(quota)), RESOURCE_QUOTAS) == quota
    policy = {"metadata": {"name": "n", "namespace": "np-a"}, "spec": {"podSelector": {}},
              "status": {"ignored": True}}  # fmt: skip
    assert shaped(policy, NETWORK_POLICIES) == {"metadata": policy["metadata"],
                                                "spec": {"podSelector": {}}}  # fmt: skip
    assert "status" not in shaped({"metadata": {}, "spec": {}, "status": {}}, LIMIT_RANGES)


def test_an_object_that_leaves_a_managed_namespace_leaves_the_cache() -> None:
    informer, scope, _, _ = _scoped(SERVICE_ACCOUNTS)
    informer._apply({"type": "ADDED", "object": _service_account("np-a", "sa")}, "1")
    scope.lost("np-a")
    informer._apply({"type": "MODIFIED", "object": _service_account("np-a", "sa", "11")}, "1")
    assert informer.get("np-a", "sa") is None


def test_a_paged_list_keeps_only_managed_namespaces_and_asks_for_metadata_only() -> None:
    kube = _Pages([_service_account("np-a", "sa"), _service_account("elsewhere", "big")])
    informer, _, seen, foreign = _scoped(SERVICE_ACCOUNTS, kube)
    assert informer._list() == "50"
    assert [key for key in informer._store] == [("np-a", "sa")]
    assert foreign == ["serviceaccount"]
    assert seen == [("SYNC", "np-a/sa")]
    path, query, accept = kube.asked[0]
    assert path == "/api/v1/serviceaccounts"
    assert query["limit"] == "50"
    assert "as=PartialObjectMetadataList" in accept


def test_an_object_seen_before_its_namespace_is_fetched_again_when_the_namespace_appears() -> None:
    kube = _Pages([_service_account("np-new", "namespace-provisioner")])
    informer, scope, seen, foreign = _scoped(SERVICE_ACCOUNTS, kube)
    # The ServiceAccount's watch is faster than the Namespace's: dropped, its namespace noted.
    informer._apply(
        {"type": "ADDED", "object": _service_account("np-new", "namespace-provisioner")}, "1"
    )
    assert informer.get("np-new", "namespace-provisioner") is None
    assert foreign == ["serviceaccount"]
    scope.start()
    try:
        scope.saw("np-new")
        wait_until(lambda: informer.get("np-new", "namespace-provisioner"), timeout=5,
                   message="caught up")  # fmt: skip
    finally:
        scope.stop()
    assert kube.asked[0][0] == "/api/v1/namespaces/np-new/serviceaccounts"
    assert kube.asked[0][1]["labelSelector"] == "a=b"
    assert seen == [("ADDED", "np-new/namespace-provisioner")]
    # A namespace in which nothing was dropped costs no call when it appears.
    scope.start()
    try:
        scope.saw("np-quiet")
        time.sleep(0.2)  # nothing to wait for: asserting that nothing happens
    finally:
        scope.stop()
    assert len(kube.asked) == 1


def test_catching_up_neither_revives_a_deletion_nor_overwrites_a_newer_event() -> None:
    kube = _Pages([_service_account("np-a", "deleted"), _service_account("np-a", "changed")])
    informer, _, _, _ = _scoped(SERVICE_ACCOUNTS, kube)
    # While the list is in flight, the (admitting) watch deletes one and changes the other.
    kube.during = [
        lambda: informer._apply({"type": "DELETED",
                                 "object": _service_account("np-a", "deleted", "12")}, "1"),
        lambda: informer._apply({"type": "MODIFIED",
                                 "object": _service_account("np-a", "changed", "13")}, "1"),
    ]  # fmt: skip
    informer.catch_up("np-a")
    assert informer.get("np-a", "deleted") is None
    assert informer.get("np-a", "changed")["metadata"]["resourceVersion"] == "13"


def test_a_relist_during_a_catch_up_makes_it_list_again() -> None:
    kube = _Pages([_service_account("np-a", "sa")])
    informer, _, _, _ = _scoped(SERVICE_ACCOUNTS, kube)
    kube.during = [lambda: informer._replace([], "")]
    informer.catch_up("np-a")
    assert len(kube.asked) == 2
    assert informer.get("np-a", "sa") is not None


class _Stream:
    """A fake watch response: the given lines, then the end of the stream."""

    def __init__(self, events: list[dict[str, Any]]) -> None:
        self.lines = [json.dumps(event).encode() + b"\n" for event in events]

    def __iter__(self) -> Any:
        return iter(self.lines)

    def release_conn(self) -> None:
        pass


class _Streams:
    def __init__(self, *answers: _Stream | Exception) -> None:
        self.answers = list(answers)
        self.asked: list[tuple[dict[str, str], str]] = []

    def stream(self, path: str, query: dict[str, str], *, read_timeout: float,
               accept: str) -> _Stream:  # fmt: skip
        self.asked.append((query, accept))
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


def _end_of_initial_events(version: str) -> dict[str, Any]:
    metadata = {"resourceVersion": version, "annotations": {"k8s.io/initial-events-end": "true"}}
    return {"type": "BOOKMARK", "object": {"metadata": metadata}}


def test_a_streamed_list_replaces_the_cache_at_its_bookmark_and_goes_on_watching() -> None:
    stream = _Stream([
        {"type": "ADDED", "object": _service_account("np-a", "sa", "5")},
        {"type": "ADDED", "object": _service_account("elsewhere", "big", "6")},
        _end_of_initial_events("7"),
        {"type": "MODIFIED", "object": _service_account("np-a", "sa", "8")},
    ])  # fmt: skip
    kube = _Streams(stream)
    informer, _, seen, foreign = _scoped(SERVICE_ACCOUNTS, kube)
    informer._store[("np-a", "old")] = {"metadata": {"name": "old", "namespace": "np-a"}}
    assert informer._watch(None) == "8"
    assert seen == [("DELETED", "np-a/old"), ("SYNC", "np-a/sa"), ("MODIFIED", "np-a/sa")]
    assert informer.synced.is_set()
    assert foreign == ["serviceaccount"]
    assert informer.get("np-a", "sa")["metadata"]["resourceVersion"] == "8"
    query, accept = kube.asked[0]
    assert query["sendInitialEvents"] == "true"
    assert query["resourceVersionMatch"] == "NotOlderThan"
    assert "resourceVersion" not in query
    assert "as=PartialObjectMetadata;" in accept


def test_a_stream_that_ends_before_its_initial_events_is_a_failed_list() -> None:
    kube = _Streams(_Stream([{"type": "ADDED", "object": _service_account("np-a", "sa")}]))
    informer, _, seen, _ = _scoped(SERVICE_ACCOUNTS, kube)
    with pytest.raises(WatchFailed):
        informer._watch(None)
    assert not informer.synced.is_set()
    assert seen == []


def test_an_api_server_that_cannot_stream_lists_gets_paged_lists() -> None:
    kube = _Streams(KubeError(422, "Invalid", "sendInitialEvents is forbidden"))
    informer, _, _, _ = _scoped(SERVICE_ACCOUNTS, kube)
    with pytest.raises(StreamingRefused):
        informer._watch(None)


def test_the_scope_remembers_a_bounded_number_of_namespaces_oldest_forgotten_first(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("nsprov.control.namespacescope._MISSED_MAX", 3)
    informer, scope, _, _ = _scoped(SERVICE_ACCOUNTS)
    for namespace in ("stranger-1", "np-new", "stranger-2", "stranger-3"):
        assert not scope.admits(namespace, informer)
    assert scope.admits("np-new", informer) is False  # asked again: the newest now
    assert scope.admits("stranger-4", informer) is False
    assert list(scope._missed) == ["stranger-3", "np-new", "stranger-4"]
