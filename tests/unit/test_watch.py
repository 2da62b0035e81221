from __future__ import annotations

import json
from typing import Any

import pytest

from nsprov.watch import NAMESPACES, Backoff, Informer, WatchExpired, WatchFailed


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
    assert informer._apply(_event("DELETED", "np-a", "12"), "11") == "12"
    assert informer.get("", "np-a") is None
    assert seen == [("ADDED", "np-a"), ("MODIFIED", "np-a"), ("DELETED", "np-a")]


def test_bookmarks_move_the_version_without_an_event() -> None:
    informer, seen = _informer()
    bookmark = {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "99"}}}
    assert informer._apply(bookmark, "5") == "99"
    assert seen == []
    assert len(informer) == 0


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
