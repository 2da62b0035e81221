"""What holds a namespace whose deletion has begun, read from the namespace itself.

Kubernetes deletes a namespace in two steps: the API server sets its
deletionTimestamp (the namespace is Terminating), then the namespace controller
deletes what is in it and lets the namespace go once it is empty. Whatever it
cannot delete keeps the namespace, and with it a cap slot (a slot is free when the
namespace is gone, not when its deletion starts), for as long as it stays: an
object whose finalizer nobody removes, an API whose discovery fails. The namespace
controller says which in the namespace's status conditions. This module is the one
reading of them, so that the API's ``blockedBy``, the stuck Event and the stuck log
line all name the same blockers, and the one rule for when a deletion is stuck, so
that the gauge and the Event agree.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Any

from nsprov.provision import bundle

BLOCKING_CONDITIONS = (
    "NamespaceDeletionDiscoveryFailure",
    "NamespaceDeletionGroupVersionParsingFailure",
    "NamespaceDeletionContentFailure",
    "NamespaceContentRemaining",
    "NamespaceFinalizersRemaining",
)
"""The namespace controller's conditions that, when True, name what keeps a namespace."""

_OWN_CONTENT = frozenset({"NamespaceContentRemaining", "NamespaceFinalizersRemaining"})
"""Conditions whose messages name only the namespace's own objects and their finalizers; the
others carry Kubernetes' error text (a failing APIService, a webhook's answer)."""

MAX_MESSAGE = 400
"""Characters of a condition's message kept: a tenant picks its finalizers' names and how
many kinds it fills, and the message lists them; the log, the API and an Event (1 KiB of
note at most) get a bounded line."""

EVENTS_NAMESPACE = "default"
"""Where the Event about a stuck namespace is recorded. Not in the namespace itself: a
Terminating namespace refuses new content, Events too. The API server files Events about
cluster-scoped objects (a Namespace is one) in ``default``, as client-go's recorder does."""

EVENTS_PATH = f"/apis/events.k8s.io/v1/namespaces/{EVENTS_NAMESPACE}/events"
REPORTING_CONTROLLER = "nsprov.io/controller"
STUCK_REASON = "NamespaceStuck"


@dataclass(frozen=True)
class Blocker:
    """One True condition of a Terminating namespace: what is still in the way."""

    condition: str
    message: str

    def to_json(self) -> dict[str, str]:
        return {"condition": self.condition, "message": self.message}

    def __str__(self) -> str:
        return f"{self.condition}: {self.message}"


def started_at(metadata: dict[str, Any]) -> int | None:
    """When the namespace's deletion began (its deletionTimestamp), as unix seconds."""
    return bundle.unix_time(metadata.get("deletionTimestamp"))


def blockers(namespace: dict[str, Any]) -> tuple[Blocker, ...]:
    """What the namespace controller reports as still keeping ``namespace``, in its order.

    Empty while it has not looked yet (the first moments of a deletion) and for a
    namespace that is not Terminating.
    """
    if not bundle.is_terminating(namespace):
        return ()
    found = []
    for condition in (namespace.get("status") or {}).get("conditions") or ():
        if not isinstance(condition, dict):
            continue
        kind = condition.get("type")
        if kind not in BLOCKING_CONDITIONS or condition.get("status") != "True":
            continue
        message = str(condition.get("message") or condition.get("reason") or "")
        if len(message) > MAX_MESSAGE:
            message = message[: MAX_MESSAGE - 3] + "..."
        found.append(Blocker(str(kind), message))
    return tuple(found)


def for_caller(found: tuple[Blocker, ...]) -> tuple[Blocker, ...]:
    """The blockers as the namespace's owner may read them over the API.

    What remains in the namespace and which finalizers hold it are the owner's own
    objects, named as they are. A deletion or discovery failure is told by its
    condition only: its message is Kubernetes' error text, which nsprov logs (and the
    stuck Event carries) but never hands to a client.
    """
    return tuple(
        blocker
        if blocker.condition in _OWN_CONTENT
        else Blocker(blocker.condition, "Kubernetes could not delete everything in it; the "
                     "operator sees why in the namespace's status and nsprov's log")
        for blocker in found
    )  # fmt: skip


def stuck_at(metadata: dict[str, Any], stuck_after: float) -> float | None:
    """When a namespace being deleted counts as stuck: ``stuck_after`` after its deletion began.

    None when it is not being deleted (or its deletionTimestamp cannot be read).
    """
    started = started_at(metadata)
    return None if started is None else started + stuck_after


def is_stuck(namespace: dict[str, Any], now: float, stuck_after: float) -> bool:
    """Whether ``namespace`` is still there ``stuck_after`` seconds after its deletion began."""
    if not bundle.is_terminating(namespace):
        return False
    when = stuck_at(namespace["metadata"], stuck_after)
    return when is not None and now >= when


def describe(found: tuple[Blocker, ...]) -> str:
    """The blockers as one line, for the log and an Event's note."""
    if not found:
        return "the namespace controller has not said what remains"
    return "; ".join(str(blocker) for blocker in found)


def stuck_event(
    namespace: dict[str, Any], found: tuple[Blocker, ...], *, now: float, instance: str
) -> dict[str, Any]:
    """An events.k8s.io/v1 Event saying ``namespace`` is stuck, and on what.

    Its name derives from the namespace's UID, so a second attempt (after a restart or
    a change of leader) is a 409 rather than a second Event: the stuck namespace is
    reported once, whoever reports it.
    """
    metadata = namespace["metadata"]
    name, uid = metadata["name"], metadata.get("uid", "")
    since = metadata.get("deletionTimestamp", "?")
    note = f"namespace {name} is still being deleted since {since}: {describe(found)}"
    return {
        "apiVersion": "events.k8s.io/v1",
        "kind": "Event",
        "metadata": {"name": f"{name}.stuck.{uid}", "namespace": EVENTS_NAMESPACE},
        "eventTime": datetime.datetime.fromtimestamp(now, datetime.UTC).strftime(
            "%Y-%m-%dT%H:%M:%S.%fZ"
        ),
        "reportingController": REPORTING_CONTROLLER,
        "reportingInstance": instance[:128],
        "action": "WaitForDeletion",
        "reason": STUCK_REASON,
        "type": "Warning",
        "regarding": {"apiVersion": "v1", "kind": "Namespace", "name": name, "uid": uid},
        # The API server refuses a note above 1 KiB (bytes, not characters).
        "note": note.encode()[:1024].decode(errors="ignore"),
    }
