"""What the API server shows of the managed namespaces, and whether some leader can act."""

from __future__ import annotations

import bisect
import itertools
import json
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubernetes import client, config
from kubernetes.watch.watch import iter_resp_lines

from nsprov.provision import bundle
from tests.integration.conftest import SELECTOR
from tests.integration.service import RunningService, metric


def _unix(timestamp: str) -> float:
    unix = bundle.unix_time(timestamp)
    assert unix is not None, timestamp
    return float(unix)


# ---- what the API server shows --------------------------------------------------------------


@dataclass
class Seen:
    """One managed namespace as the watch saw it."""

    name: str
    expires_at: int | None = None
    idempotency: str | None = None
    deletion_timestamp: float | None = None  # the API server's, whole seconds
    deletion_seen_at: float | None = None  # when the watch first showed it going (local)
    gone: bool = False
    without_expiry: bool = False


class Observer:
    """Lists and watches managed namespaces (resuming across API server restarts)."""

    def __init__(self, kubeconfig: Path) -> None:
        self.api = config.new_client_from_config(config_file=str(kubeconfig))
        self.core = client.CoreV1Api(self.api)
        self.seen: dict[str, Seen] = {}
        self.relists = 0
        self.vanished: set[str] = set()  # gone between two lists: deletion unseen
        # Going already when we started (an earlier test's): not this test's business.
        self.ignored: set[str] = set()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="observer", daemon=True)

    def start(self) -> None:
        self._resource_version = self._list(first=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(timeout=15)
        self.api.close()

    def _saw(self, obj: dict[str, Any], now: float) -> None:
        metadata = obj["metadata"]
        labels = metadata.get("labels") or {}
        with self._lock:
            if metadata["name"] in self.ignored:
                return
            seen = self.seen.setdefault(metadata["name"], Seen(metadata["name"]))
            seen.expires_at = bundle.expires_at_of(metadata)
            seen.without_expiry |= seen.expires_at is None
            seen.idempotency = labels.get(bundle.IDEMPOTENCY_LABEL)
            if metadata.get("deletionTimestamp") and seen.deletion_timestamp is None:
                seen.deletion_timestamp = _unix(metadata["deletionTimestamp"])
                seen.deletion_seen_at = now

    def _list(self, *, first: bool = False) -> str:
        response = self.core.list_namespace(
            label_selector=SELECTOR, _preload_content=False, _request_timeout=5
        )
        listing = json.loads(response.data)
        now = time.time()
        names = set()
        for obj in listing["items"]:
            names.add(obj["metadata"]["name"])
            if first and obj["metadata"].get("deletionTimestamp"):
                self.ignored.add(obj["metadata"]["name"])
            self._saw(obj, now)
        with self._lock:
            for seen in self.seen.values():
                if seen.name not in names and not seen.gone:
                    seen.gone = True
                    self.vanished.add(seen.name)
                    if seen.deletion_seen_at is None:
                        seen.deletion_seen_at = now
        return str(listing["metadata"]["resourceVersion"])

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                self._watch()
            except Exception:  # the API server is being killed: resume
                self._stopping.wait(0.2)

    def _watch(self) -> None:
        response = self.core.list_namespace(
            label_selector=SELECTOR,
            watch=True,
            resource_version=self._resource_version,
            allow_watch_bookmarks=True,
            timeout_seconds=2,
            _preload_content=False,
            _request_timeout=(3, 10),
        )
        try:
            for line in iter_resp_lines(response):
                event = json.loads(line)
                obj = event["object"]
                if event["type"] == "ERROR":
                    if obj.get("code") == 410:  # too old: list again
                        self.relists += 1
                        self._resource_version = self._list()
                    return
                self._resource_version = obj["metadata"]["resourceVersion"]
                if event["type"] == "BOOKMARK":
                    continue
                self._saw(obj, time.time())
                if event["type"] == "DELETED":
                    with self._lock:
                        if obj["metadata"]["name"] in self.seen:
                            self.seen[obj["metadata"]["name"]].gone = True
        finally:
            response.release_conn()


# ---- whether a leader can act ---------------------------------------------------------------


class LeaderTracker:
    """Samples, every 0.2 s, whether some live replica leads and the API server is up."""

    def __init__(self, replicas: dict[str, RunningService]) -> None:
        self.replicas = replicas
        self.api_server_up = True
        self.api_server_ready_at = 0.0  # monotonic: when it last answered /readyz after a restart
        self.samples: list[tuple[float, bool]] = []
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="leader-tracker", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stopping.is_set():
            leading = any(metric(r, "nsprov_leader") == 1 for r in list(self.replicas.values()))
            self.samples.append((time.time(), leading and self.api_server_up))
            self._stopping.wait(0.2)

    def outage(self, start: float, end: float) -> float:
        """Seconds within [start, end] without a working leader, by the samples."""
        # Only the samples around the window (they are in time order): a long run has many.
        first = max(0, bisect.bisect_right(self.samples, (start, True)) - 1)
        last = bisect.bisect_right(self.samples, (end, True)) + 1
        window = self.samples[first:last]
        total = 0.0
        for (at, ok), (after, _) in itertools.pairwise(window):
            if not ok:
                total += max(0.0, min(after, end) - max(at, start))
        return total


# ---- the clients ----------------------------------------------------------------------------
