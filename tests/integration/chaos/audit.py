"""Who deleted what, by the API server's audit log."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from tests.cluster import controlplane
from tests.integration.conftest import NSPROV_NAMESPACE, Cluster

NSPROV_USER = f"system:serviceaccount:{NSPROV_NAMESPACE}:nsprov"


@dataclass
class Deletes:
    """nsprov's DELETE calls on one namespace, by the API server's answer."""

    succeeded: int = 0  # 200 or 202: this call deleted it
    conflicts: int = 0  # 409: a precondition failed (deleted or changed meanwhile)
    other: list[int] = field(default_factory=list)


def deleted_once(found: Deletes) -> bool:
    """One successful DELETE, or none after one whose killed caller never read its answer."""
    lost = [code for code in found.other if code >= 500]
    if len(lost) != len(found.other) or len(lost) > 1:
        return False
    return found.succeeded == 1 or (found.succeeded == 0 and len(lost) == 1)


def audited_deletes(cluster: Cluster) -> dict[str, Deletes]:
    """Every namespace nsprov sent a DELETE for, with what the API server answered."""
    plane = cluster.require_local()
    if plane.audit_log is None:
        pytest.skip("the control plane runs without an audit log")
    found: dict[str, Deletes] = {}
    for event in controlplane.audit_events(plane.audit_log):
        if event["user"]["username"] != NSPROV_USER or event["verb"] != "delete":
            continue
        deletes = found.setdefault(event["objectRef"]["name"], Deletes())
        code = event["responseStatus"]["code"]
        if code in (200, 202):
            deletes.succeeded += 1
        elif code == 409:
            deletes.conflicts += 1
        else:
            deletes.other.append(code)
    return found
