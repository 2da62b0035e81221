"""The client's preview keys: ``create_keyed`` and ``delete_keyed`` against a stand-in service."""

from __future__ import annotations

import httpx
import pytest

from nsprov.client.calls import Refused, UsageFailure, check_key
from tests.unit.test_client import CREATED, _client, _problem


def test_a_keyed_create_sends_the_key_and_no_idempotency_key_and_says_reused() -> None:
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200 if len(seen) > 1 else 201, json=CREATED)

    nsprov = _client(answer)
    assert nsprov.create_keyed("pr-42", ttl="1d").reused is False
    assert nsprov.create_keyed("pr-42", ttl="1d").reused is True
    assert dict(seen[0].url.params) == {"ttl": "1d", "key": "pr-42"}
    assert all("idempotency-key" not in request.headers for request in seen)


def test_a_keyed_create_waits_out_the_old_namespace_being_deleted() -> None:
    answers = iter(
        [
            _problem(409, "Conflict", "the namespace for key 'pr-42' is being deleted; retry"),
            httpx.Response(201, json=CREATED),
        ]
    )
    sleeps: list[float] = []
    created = _client(lambda _: next(answers), sleeps).create_keyed("pr-42")
    assert created.namespace == CREATED["namespace"]
    assert len(sleeps) == 1


def test_a_plain_create_does_not_retry_a_conflict() -> None:
    sleeps: list[float] = []
    refusing = _client(lambda _: _problem(409, "Conflict", "no"), sleeps)
    with pytest.raises(Refused, match="409 Conflict: no"):
        refusing.create()
    assert sleeps == []


def test_delete_by_key_names_the_namespace_or_none() -> None:
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.params["key"] == "gone":
            return _problem(404, "Not Found", "no namespace for key 'gone'")
        body = {"name": "np-abcdefghij", "key": "pr-1", "state": "MARKED_FOR_DELETION"}
        return httpx.Response(202, json=body)

    nsprov = _client(answer)
    assert nsprov.delete_keyed("pr-1") == "np-abcdefghij"
    assert nsprov.delete_keyed("gone") is None
    assert [(r.method, r.url.path) for r in seen] == [("DELETE", "/api/v1/namespaces")] * 2


@pytest.mark.parametrize("key", ["", "-a", "a-", "a/b", "a b", "a" * 64, "pr-1\n"])
def test_a_malformed_key_is_a_usage_failure(key: str) -> None:
    with pytest.raises(UsageFailure, match="--key"):
        check_key(key)
