from __future__ import annotations

from typing import Any

from nsprov.core.namespacecache import ReadYourWrites


def _ns(name: str, version: str, **extra: Any) -> dict[str, Any]:
    return {"metadata": {"name": name, "resourceVersion": version, **extra}}


class _Cache:
    def __init__(self) -> None:
        self.store: dict[str, dict[str, Any]] = {}
        self.seen: int | None = None

    def version(self) -> int | None:
        return self.seen

    def synced(self) -> bool:
        return True

    def get(self, name: str) -> dict[str, Any] | None:
        return self.store.get(name)

    def items(self) -> list[dict[str, Any]]:
        return list(self.store.values())

    def ready_pooled(self, pool: str) -> list[dict[str, Any]]:
        return [o for o in self.store.values() if o["metadata"].get("labels", {}).get("p") == pool]


class _Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


def test_own_create_is_visible_before_the_cache_has_it() -> None:
    cache = _Cache()
    view = ReadYourWrites(cache)
    view.record(_ns("np-a", "10"))
    assert view.get("np-a") == _ns("np-a", "10")
    assert [o["metadata"]["name"] for o in view.items()] == ["np-a"]


def test_the_cache_wins_once_it_has_caught_up_and_the_write_is_forgotten() -> None:
    cache = _Cache()
    view = ReadYourWrites(cache)
    view.record(_ns("np-a", "10"))
    cache.store["np-a"] = _ns("np-a", "12", labels={"x": "y"})  # someone changed it since
    assert view.get("np-a") == cache.store["np-a"]
    assert view._written == {}


def test_an_older_cached_version_is_hidden_by_our_newer_write() -> None:
    cache = _Cache()
    cache.store["np-a"] = _ns("np-a", "10")
    view = ReadYourWrites(cache)
    deleted = _ns("np-a", "11", deletionTimestamp="2026-01-01T00:00:00Z")
    view.record(deleted)
    assert view.get("np-a") == deleted
    assert view.items() == [deleted]


def test_a_write_the_cache_never_shows_is_forgotten_after_the_hold() -> None:
    clock = _Clock()
    view = ReadYourWrites(_Cache(), hold_seconds=5, clock=clock)
    view.record(_ns("np-a", "10"))
    clock.now = 5.0
    assert view.get("np-a") is None
    assert view.items() == []


def test_an_unparsable_version_lets_the_cache_win() -> None:
    cache = _Cache()
    cache.store["np-a"] = _ns("np-a", "opaque")
    view = ReadYourWrites(cache)
    view.record(_ns("np-a", "10"))
    assert view.get("np-a") == cache.store["np-a"]


def test_objects_without_name_or_version_are_not_recorded() -> None:
    view = ReadYourWrites(_Cache())
    view.record({"kind": "Status", "metadata": {}})
    view.record({"metadata": {"name": "np-a"}})
    assert view.items() == []


def test_a_replica_that_only_writes_does_not_grow_the_overlay_forever() -> None:
    cache = _Cache()
    view = ReadYourWrites(cache)
    for i in range(1000):
        name = f"np-{i}"
        view.record(_ns(name, str(i + 1)))
        cache.store[name] = _ns(name, str(i + 1))  # the informer catches up
    assert len(view._written) < 256


def test_our_deletion_shows_over_the_cached_namespace_and_goes_with_it() -> None:
    cache = _Cache()
    view = ReadYourWrites(cache)
    cache.store["np-a"] = _ns("np-a", "10")
    deleting = _ns("np-a", "11", deletionTimestamp="2030-01-01T00:00:00Z")
    view.record(deleting)
    assert view.get("np-a") == deleting  # the cache has not seen the DELETE yet
    # Gone from the cache before any read compared (emptied, then removed): not a ghost
    # that would hold a cap slot for the rest of the hold.
    del cache.store["np-a"]
    assert view.items() == []
    assert view.get("np-a") is None


def test_own_create_gone_before_any_read_is_no_ghost() -> None:
    """A namespace we created, that the cache then saw come and go (it expired, or its
    creation was rolled back) before anything read it, must not show for hold_seconds:
    it would hold a cap slot it no longer takes."""
    cache = _Cache()
    view = ReadYourWrites(cache)
    view.record(_ns("np-a", "10"))
    cache.seen = 9  # the cache is behind our create: ours shows
    assert view.get("np-a") == _ns("np-a", "10")
    cache.seen = 14  # it saw np-a added (10) and deleted (13); it has nothing of it
    assert view.get("np-a") is None
    assert view.items() == []


def test_a_cache_without_versions_keeps_the_old_rule() -> None:
    cache = _Cache()
    view = ReadYourWrites(cache)
    view.record(_ns("np-a", "10"))
    assert view.get("np-a") == _ns("np-a", "10")  # held until hold_seconds


def test_a_ready_pooled_namespace_shows_our_claim_until_the_cache_has_it() -> None:
    cache = _Cache()
    cache.store["np-a"] = _ns("np-a", "10", labels={"p": "x"})
    cache.store["np-b"] = _ns("np-b", "11", labels={"p": "x"})
    view = ReadYourWrites(cache)
    claimed = _ns("np-a", "12", labels={})
    view.record(claimed)
    assert view.ready_pooled("x") == [claimed, cache.store["np-b"]]
    cache.store["np-a"] = claimed  # the cache caught up: out of the pool there too
    assert view.ready_pooled("x") == [cache.store["np-b"]]
