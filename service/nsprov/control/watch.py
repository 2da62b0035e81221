"""List, then watch from the list's resourceVersion; relist on 410 Gone; back off on errors.

One ``Informer`` per resource keeps a cache of the objects that carry nsprov's
label and reports every change by key. It runs on its own thread and can be
stopped at once: ``stop()`` shuts down the socket of the watch in flight
instead of waiting for the server to end it.

We have our own exceptions for the two ways a watch ends badly because they
call for different cures: an expired resourceVersion (``WatchExpired``, HTTP
410 or an ERROR event with code 410) needs a fresh list, while anything else
(``WatchFailed``, connection loss, 5xx) needs a pause before trying again, or a
restarting API server is hammered by every replica at once.

Memory is not a lever for strangers. A label is no proof of ownership: anyone
who may create a ServiceAccount somewhere could put nsprov's label on it (the
admission policy in k8s/ now refuses that, but a cluster may run without it),
and a labelled ServiceAccount of 2.5 MB once cost every replica 46 MiB. So the
namespaced informers keep only what nsprov manages and reads:

- objects outside the namespaces the namespace informer holds (a ``Scope``,
  namespacescope.py) are dropped on arrival and counted; one that arrives before
  its namespace is known (two watches, no order between them) is fetched again,
  by a list of its namespace, when the namespace appears;
- of an object they keep the fields its ``Resource`` names (``Resource.keep``),
  ServiceAccounts are asked for as metadata only (their bodies never arrive),
  and the list is streamed (a watch with ``sendInitialEvents``): one object is
  parsed at a time instead of a page of 500 (hundreds of MB of large objects),
  with small pages where the API server cannot stream.
"""

from __future__ import annotations

import json
import logging
import random
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import urllib3

from nsprov.core.errors import ClusterUnavailable
from nsprov.core.kube import JSON, METADATA, METADATA_LIST, Kube, KubeError
from nsprov.provision import bundle

# Its name from before the folders: log filters and the tests select on it.
log = logging.getLogger("nsprov.watch")

Key = tuple[str, str]  # (namespace or "", name)
Listener = Callable[[str, dict[str, Any]], None]

_PAGE_SIZE = 500
# The server ends each watch after this long; bookmarks arrive about once a minute,
# so a read that stays silent for _READ_TIMEOUT means a dead connection.
_WATCH_SECONDS = 290
_READ_TIMEOUT = 120.0
# A streamed list ends with a bookmark carrying this annotation (KEP-3157, WatchList).
_INITIAL_EVENTS_END = "k8s.io/initial-events-end"
# What a namespaced informer keeps of an object's metadata: its key, its identity for
# delete preconditions and compare-and-swap, its labels (whose quota it is).
_METADATA_KEPT = ("name", "namespace", "uid", "resourceVersion", "labels")


class WatchExpired(Exception):
    """The resourceVersion we watched from is too old (410 Gone): relist."""


class WatchFailed(Exception):
    """The watch broke for another reason: back off, then relist."""


class StreamingRefused(Exception):
    """The API server does not serve streamed lists (WatchList off, or older than 1.27)."""


@dataclass(frozen=True)
class Resource:
    """A kind of object to watch, by its cluster-wide collection path, and what to keep of it."""

    name: str
    path: str
    kind: str = ""
    """Its singular name, as metrics label it (``serviceaccount``)."""
    keep: tuple[str, ...] | None = None
    """The top-level fields kept besides the metadata of ``_METADATA_KEPT``; None keeps the
    whole object (less ``managedFields``). Each is read by someone: say who, below."""
    metadata_only: bool = False
    """Ask for PartialObjectMetadata: nothing but metadata crosses the wire or is parsed."""
    streamed: bool = False
    """List by a streamed watch (one object at a time) rather than by pages."""
    page_size: int = _PAGE_SIZE

    def in_namespace(self, namespace: str) -> str:
        """The collection path of one namespace's objects."""
        prefix, plural = self.path.rsplit("/", 1)
        return f"{prefix}/namespaces/{namespace}/{plural}"


# Namespaces: written only by nsprov and its admission policy's exempt; kept whole (the
# API reads labels, annotations and status, the controller deletionTimestamp).
NAMESPACES = Resource("namespaces", bundle.NAMESPACES_PATH, "namespace")
# A small page where the API server cannot stream: 50 objects of the largest size etcd
# stores (1.5 MiB) are still 75 MB of JSON, 500 would be ten times that.
_NAMESPACED_PAGE = 50
# The controller only asks whether nsprov's ServiceAccount exists.
SERVICE_ACCOUNTS = Resource(
    "serviceaccounts", bundle.SERVICE_ACCOUNTS_PATH, "serviceaccount", keep=(),
    metadata_only=True, streamed=True, page_size=_NAMESPACED_PAGE,
)  # fmt: skip
# bundle.is_right and the controller's repair compare roleRef and subjects.
ROLE_BINDINGS = Resource(
    "rolebindings", bundle.ROLE_BINDINGS_PATH, "rolebinding", keep=("roleRef", "subjects"),
    streamed=True, page_size=_NAMESPACED_PAGE,
)  # fmt: skip
# bundle.is_right compares spec; GET of a namespace and the by-tenant metrics read status.
RESOURCE_QUOTAS = Resource(
    "resourcequotas", bundle.RESOURCE_QUOTAS_PATH, "resourcequota", keep=("spec", "status"),
    streamed=True, page_size=_NAMESPACED_PAGE,
)  # fmt: skip
# bundle.is_right compares spec.
LIMIT_RANGES = Resource(
    "limitranges", bundle.LIMIT_RANGES_PATH, "limitrange", keep=("spec",),
    streamed=True, page_size=_NAMESPACED_PAGE,
)  # fmt: skip
NETWORK_POLICIES = Resource(
    "networkpolicies", bundle.NETWORK_POLICIES_PATH, "networkpolicy", keep=("spec",),
    streamed=True, page_size=_NAMESPACED_PAGE,
)  # fmt: skip


def slim(obj: dict[str, Any]) -> dict[str, Any]:
    """The object without ``metadata.managedFields``, which nothing here reads, and with
    its keys interned.

    Server-side-apply bookkeeping is often the largest part of a small object; with
    thousands of namespaces (and a ServiceAccount and RoleBinding each) it is most of
    the caches' memory. Keys come next: ``json.loads`` shares equal keys within one
    document only, so every object from a watch event held its own copies of
    "metadata", "labels", each label's name and so on. Interned, all cached objects
    share one copy, as those of one list page did: a third less memory per object
    (about 8.5 kB -> 5.8 kB per provisioned namespace's three objects), for about
    5 us per event.
    """
    metadata = obj.get("metadata")
    if isinstance(metadata, dict):
        metadata.pop("managedFields", None)
    slimmed: dict[str, Any] = _interned_keys(obj)
    return slimmed


def shaped(obj: dict[str, Any], resource: Resource) -> dict[str, Any]:
    """What the cache keeps of ``obj``: all of it (``slim``) or the fields ``resource`` keeps."""
    if resource.keep is None:
        return slim(obj)
    metadata = obj.get("metadata") or {}
    kept: dict[str, Any] = {"metadata": {k: metadata[k] for k in _METADATA_KEPT if k in metadata}}
    for name in resource.keep:
        if name in obj:
            kept[name] = obj[name]
    result: dict[str, Any] = _interned_keys(kept)
    return result


def _interned_keys(value: Any) -> Any:
    if isinstance(value, dict):
        return {sys.intern(key): _interned_keys(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_interned_keys(item) for item in value]
    return value


def key_of(obj: dict[str, Any]) -> Key:
    metadata = obj.get("metadata", {})
    return metadata.get("namespace", ""), metadata["name"]


@dataclass
class Backoff:
    """Exponential backoff with full jitter."""

    initial: float = 0.5
    maximum: float = 30.0
    attempts: int = 0

    def next(self) -> float:
        ceiling = min(self.maximum, self.initial * 2**self.attempts)
        self.attempts += 1
        return random.uniform(ceiling / 2, ceiling)  # noqa: S311 - jitter, not crypto

    def reset(self) -> None:
        self.attempts = 0


class Scope(Protocol):
    """The namespaces whose objects an informer keeps (namespacescope.NamespaceScope)."""

    def holds(self, namespace: str) -> bool: ...

    def admits(self, namespace: str, informer: Informer) -> bool:
        """Whether to keep an object of ``namespace``; if not, the scope may note who asked."""
        ...


@dataclass
class _CatchUp:
    """A catch-up list in flight: names deleted meanwhile, and whether a relist came between."""

    deleted: set[str] = field(default_factory=set)
    stale: bool = False


class Informer:
    """A label-filtered cache of one resource, kept current by list + watch."""

    def __init__(
        self,
        kube: Kube,
        resource: Resource,
        label_selector: str,
        listener: Listener,
        on_restart: Callable[[str, str], None] = lambda resource, reason: None,
        backoff: Backoff | None = None,
        *,
        field_selector: str = "",
        on_list: Callable[[Exception | None], None] = lambda error: None,
        scope: Scope | None = None,
        after: threading.Event | None = None,
        on_foreign: Callable[[str], None] = lambda kind: None,
        index: Callable[[dict[str, Any]], str | None] | None = None,
    ) -> None:
        """``on_list`` hears how each (re)list ended: None once the cache is fresh, else the
        error; unlike the listener it also hears a list that found nothing.

        ``index`` names, for each object, the group ``indexed`` finds it in (None: none),
        kept with the cache under its lock: a reader that wants a few objects of one
        group (the ready pooled namespaces of one profile) then never passes over all.

        With a ``scope``, only objects in its namespaces are kept; each other one is
        dropped and reported to ``on_foreign`` (its kind). ``after``: the first list
        waits for it (the namespace informer's sync), so that a start does not drop
        every object only to fetch each namespace again.
        """
        self.kube = kube
        self.resource = resource
        self.label_selector = label_selector
        self.field_selector = field_selector
        self._on_list = on_list
        self._listener = listener
        self._on_restart = on_restart
        self._backoff = backoff or Backoff()
        self._scope = scope
        self._after = after
        self._on_foreign = on_foreign
        self._streaming = resource.streamed
        self._store: dict[Key, dict[str, Any]] = {}
        self._index_of = index
        self._index: dict[str, dict[Key, dict[str, Any]]] = {}
        self._version = ""  # the newest resourceVersion applied to _store (under _lock)
        self._catching_up: dict[str, _CatchUp] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._response: urllib3.BaseHTTPResponse | None = None
        self._thread: threading.Thread | None = None
        self.synced = threading.Event()

    # ---- the cache ------------------------------------------------------------------------

    def get(self, namespace: str, name: str) -> dict[str, Any] | None:
        with self._lock:
            return self._store.get((namespace, name))

    def items(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._store.values())

    def indexed(self, group: str) -> list[dict[str, Any]]:
        """The cached objects ``index`` puts in ``group`` (none without an index)."""
        with self._lock:
            return list(self._index.get(group, {}).values())

    def _put(self, key: Key, obj: dict[str, Any]) -> None:
        """Store ``obj`` and index it; under the lock."""
        self._unindex(key)
        self._store[key] = obj
        group = self._index_of(obj) if self._index_of is not None else None
        if group is not None:
            self._index.setdefault(group, {})[key] = obj

    def _pop(self, key: Key) -> dict[str, Any] | None:
        """Forget ``key``; what was stored under it. Under the lock."""
        self._unindex(key)
        return self._store.pop(key, None)

    def _unindex(self, key: Key) -> None:
        held = self._store.get(key)
        group = self._index_of(held) if held is not None and self._index_of is not None else None
        if group is None:
            return
        members = self._index.get(group, {})
        members.pop(key, None)
        if not members:
            self._index.pop(group, None)

    def __len__(self) -> int:
        with self._lock:
            return len(self._store)

    def version(self) -> int | None:
        """The newest resourceVersion the cache reflects (a list's, an event's or a
        bookmark's), as etcd's revision; None before the first list or when the server's
        versions are not numbers (they are opaque in the API, numeric in practice).

        Read-your-writes (namespacecache.py) uses it to tell "not seen yet" from "seen
        and deleted since" for an object missing from the cache.
        """
        with self._lock:
            version = self._version
        try:
            return int(version)
        except ValueError:
            return None

    def _keeps(self, obj: dict[str, Any]) -> bool:
        """Whether ``obj`` is in scope; if not, it is counted (and its namespace noted)."""
        if self._scope is None:
            return True
        namespace = obj.get("metadata", {}).get("namespace", "")
        if self._scope.admits(namespace, self):
            return True
        self._on_foreign(self.resource.kind)
        return False

    # ---- the thread -----------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._run, name=f"watch-{self.resource.name}", daemon=True
        )
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stopping.set()
        response = self._response
        if response is not None:
            try:
                response.shutdown()
            except Exception:
                log.debug("shutting down the %s watch", self.resource.name, exc_info=True)
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        while self._after is not None and not self._after.wait(0.5):
            if self._stopping.is_set():
                return
        while not self._stopping.is_set():
            try:
                version = self._watch(None) if self._streaming else self._list()
                while not self._stopping.is_set():
                    version = self._watch(version)
            except StreamingRefused as exc:
                log.info("%s: streamed lists refused (%s); listing by pages of %d",
                         self.resource.name, exc, self.resource.page_size)  # fmt: skip
                self._streaming = False
            except WatchExpired:
                log.info("%s watch expired; relisting", self.resource.name)
                self._on_restart(self.resource.name, "expired")
            except Exception as exc:
                if self._stopping.is_set():
                    return
                delay = self._backoff.next()
                log.warning(
                    "%s watch failed (%s); retrying in %.1fs", self.resource.name, exc, delay
                )
                self._on_restart(self.resource.name, "error")
                self._stopping.wait(delay)

    @property
    def _accept(self) -> tuple[str, str]:
        """The Accept headers of a list and of a watch."""
        if self.resource.metadata_only:
            return METADATA_LIST, METADATA
        return JSON, JSON

    def _pages(self, path: str) -> Iterator[dict[str, Any]]:
        """Each page of a paginated list of ``path``; the last carries the resourceVersion."""
        query = {**self._selectors(), "limit": str(self.resource.page_size)}
        while True:
            page = self.kube.get(path, query=query, accept=self._accept[0])
            yield page
            token = page.get("metadata", {}).get("continue")
            if not token:
                return
            query = {**query, "continue": token}

    def _list(self) -> str:
        """Replace the cache with a fresh (paginated) list; return its resourceVersion."""
        items: list[dict[str, Any]] = []
        version = ""
        try:
            for page in self._pages(self.resource.path):
                kept = (obj for obj in page.pop("items", None) or () if self._keeps(obj))
                items.extend(shaped(obj, self.resource) for obj in kept)
                version = str(page.get("metadata", {}).get("resourceVersion", ""))
        except Exception as exc:
            self._on_list(exc)
            raise
        self._replace(items, version)
        return version

    def _replace(self, items: list[dict[str, Any]], version: str) -> None:
        """The cache is ``items`` (as of ``version``) now: say what went and what is there."""
        fresh = {key_of(obj): obj for obj in items}
        with self._lock:
            gone = [obj for key, obj in self._store.items() if key not in fresh]
            self._store, self._index = {}, {}
            for key, obj in fresh.items():
                self._put(key, obj)
            self._version = version
            for catching_up in self._catching_up.values():
                catching_up.stale = True
        for obj in gone:
            self._listener("DELETED", obj)
        for obj in items:
            self._listener("SYNC", obj)
        # Set once the listeners have heard every object: the namespaced informers wait
        # for the namespace informer's sync, and must find its scope complete then.
        self.synced.set()
        self._on_list(None)

    def catch_up(self, namespace: str) -> None:
        """Add what ``namespace`` holds and the cache lacks: objects dropped while it was unknown.

        An object the watch brought meanwhile is newer than the list and stays; one the
        watch deleted meanwhile stays deleted; a full relist meanwhile makes the list
        stale (it may be older than the relist), so it is made again.
        """
        while not self._stopping.is_set():
            with self._lock:
                progress = self._catching_up[namespace] = _CatchUp()
            try:
                items = [
                    shaped(obj, self.resource)
                    for page in self._pages(self.resource.in_namespace(namespace))
                    for obj in page.pop("items", None) or ()
                ]
            finally:
                with self._lock:
                    self._catching_up.pop(namespace, None)
            if progress.stale:
                continue
            if self._scope is not None and not self._scope.holds(namespace):
                return  # lost again meanwhile
            added = []
            with self._lock:
                for obj in items:
                    key = key_of(obj)
                    if key not in self._store and key[1] not in progress.deleted:
                        self._put(key, obj)
                        added.append(obj)
            for obj in added:
                self._listener("ADDED", obj)
            return

    def _selectors(self) -> dict[str, str]:
        query = {"labelSelector": self.label_selector}
        if self.field_selector:
            query["fieldSelector"] = self.field_selector
        return query

    def _watch(self, version: str | None) -> str:
        """Follow changes from ``version`` until the server ends the watch; return the last one.

        ``version`` None: a streamed list (``sendInitialEvents``): the current objects
        arrive one event each and replace the cache at the bookmark that ends them, as a
        paginated list would at its last page; the same stream is followed after that.
        """
        query = {
            **self._selectors(),
            "watch": "true",
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(_WATCH_SECONDS),
        }
        if version is None:
            query.update(sendInitialEvents="true", resourceVersionMatch="NotOlderThan")
        else:
            query["resourceVersion"] = version
        try:
            response = self.kube.stream(
                self.resource.path, query, read_timeout=_READ_TIMEOUT, accept=self._accept[1]
            )
        except KubeError as exc:
            if exc.status == 410:
                raise WatchExpired(exc.message) from exc
            if version is None and exc.status in (400, 422):
                raise StreamingRefused(exc.message) from exc
            if version is None:
                self._on_list(exc)  # a list refused (403 ...), as a paginated one would be
            raise WatchFailed(str(exc)) from exc
        except ClusterUnavailable as exc:
            if version is None:
                self._on_list(exc)
            raise WatchFailed(exc.detail) from exc
        self._response = response
        initial: list[dict[str, Any]] | None = [] if version is None else None
        last = version or ""
        try:
            for line in response:
                if self._stopping.is_set():
                    break
                if not line.strip():
                    continue
                event = json.loads(line)
                if initial is None:
                    last = self._apply(event, last)
                elif self._initial_event(event, initial):
                    last = str(event["object"]["metadata"].get("resourceVersion", ""))
                    self._replace(initial, last)
                    initial = None
                # Only a watch that delivers proves the API healthy again; a successful
                # list followed by a failing watch must keep backing off.
                self._backoff.reset()
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            if not self._stopping.is_set():
                if initial is not None:
                    self._on_list(exc)
                raise WatchFailed(f"{type(exc).__name__}: {exc}") from exc
        finally:
            self._response = None
            response.release_conn()
        if initial is not None and not self._stopping.is_set():
            failed = WatchFailed("the stream ended before its initial events did")
            self._on_list(failed)
            raise failed
        return last

    def _initial_event(self, event: dict[str, Any], initial: list[dict[str, Any]]) -> bool:
        """Collect one event of a streamed list; True at the bookmark that ends them."""
        kind, obj = event.get("type"), event.get("object", {})
        if kind == "ERROR":
            self._apply(event, "")  # raises
        if kind == "BOOKMARK":
            annotations = obj.get("metadata", {}).get("annotations") or {}
            return annotations.get(_INITIAL_EVENTS_END) == "true"
        if kind == "ADDED" and self._keeps(obj):
            initial.append(shaped(obj, self.resource))
        return False

    def _apply(self, event: dict[str, Any], version: str) -> str:
        kind, obj = event.get("type"), event.get("object", {})
        if kind == "ERROR":
            if obj.get("code") == 410:
                raise WatchExpired(str(obj.get("message", "")))
            raise WatchFailed(str(obj.get("message", obj)))
        new_version = str(obj.get("metadata", {}).get("resourceVersion") or version)
        if kind == "BOOKMARK":
            with self._lock:
                self._version = new_version
            return new_version
        key = key_of(obj)
        if kind == "DELETED":
            with self._lock:
                had = self._pop(key)
                self._version = new_version
                catching_up = self._catching_up.get(key[0])
                if catching_up is not None:
                    catching_up.deleted.add(key[1])
            if had is not None or self._scope is None or self._scope.holds(key[0]):
                self._listener("DELETED", had or shaped(obj, self.resource))
            return new_version
        if not self._keeps(obj):
            # Its namespace is not (or no longer) nsprov's: what we held of it goes too.
            with self._lock:
                self._pop(key)
                self._version = new_version
            return new_version
        obj = shaped(obj, self.resource)
        with self._lock:
            self._put(key, obj)
            self._version = new_version
        self._listener(str(kind), obj)
        return new_version


def wait_synced(informers: list[Informer], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    return all(i.synced.wait(max(0.0, deadline - time.monotonic())) for i in informers)
