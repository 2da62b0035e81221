"""A kubeconfig that works on its first call: wait until the authorizer knows the grant.

The API server's RBAC authorizer reads RoleBindings from an informer of its own, so a
binding nsprov created a moment ago may not be known to it yet: the job's first call
with a fresh kubeconfig is then refused (403), for up to 2.1 s in a chaos run (11 of
4,914 creates). Before answering, nsprov asks the authorizer itself (a
SubjectAccessReview for the namespace's ServiceAccount) whether one representative
right of each grant is allowed, and asks again for a short, bounded while until it is.

One rule stands for the whole grant: the authorizer learns a RoleBinding as a whole,
so once one of its rules is allowed, all of them are. A grant with no rules (the
default empty grant, or an aggregated role not yet filled in) has nothing to check.

The check only ever delays an answer, never refuses one: a grant that is still not
allowed when the deadline passes (an authorizer that lags more than that, or a grant
whose first rule names something odd) is answered anyway, logged and counted, exactly
what happened before the check existed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from nsprov.core.errors import NsprovError
from nsprov.core.kube import Kube, KubeError
from nsprov.provision import bundle

# Its name from before the folders: log filters and the tests select on it.
log = logging.getLogger("nsprov.firstcall")

SUBJECT_ACCESS_REVIEWS = "/apis/authorization.k8s.io/v1/subjectaccessreviews"
FIRST_CALL_SECONDS = 5.0
"""The longest a create waits for the authorizer (the chaos run's worst lag was 2.1 s)."""
# The authorizer usually catches up within tens of milliseconds: ask often at first.
_FIRST_PAUSE, _GROWTH, _MAX_PAUSE = 0.01, 1.5, 0.25


def representative_access(cluster_role: dict[str, Any] | None) -> dict[str, str] | None:
    """The resourceAttributes of one right the ClusterRole grants; None when it grants none.

    The first resource rule, its first verb, API group and resource (a subresource,
    ``pods/log``, is asked as one) and, when the rule is limited to names, its first name.
    Rules for non-resource URLs are skipped: they do not apply inside a namespace.
    """
    for rule in (cluster_role or {}).get("rules") or []:
        verbs, groups, resources = (
            rule.get("verbs") or [],
            rule.get("apiGroups") or [],
            rule.get("resources") or [],
        )
        if not verbs or not groups or not resources:
            continue
        resource, _, subresource = str(resources[0]).partition("/")
        access = {"verb": str(verbs[0]), "group": str(groups[0]), "resource": resource}
        if subresource:
            access["subresource"] = subresource
        names = rule.get("resourceNames") or []
        if names:
            access["name"] = str(names[0])
        return access
    return None


def service_account_review(namespace: str, access: dict[str, str]) -> dict[str, Any]:
    """A SubjectAccessReview: may the namespace's ServiceAccount do ``access`` in it?

    The groups are those the API server gives every ServiceAccount token, so the
    answer is the one the job's first call will get.
    """
    return {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SubjectAccessReview",
        "spec": {
            "user": f"system:serviceaccount:{namespace}:{bundle.SERVICE_ACCOUNT}",
            "groups": [
                "system:serviceaccounts",
                f"system:serviceaccounts:{namespace}",
                "system:authenticated",
            ],
            "resourceAttributes": {**access, "namespace": namespace},
        },
    }


def wait_until_allowed(
    kube: Kube,
    namespace: str,
    accesses: Sequence[dict[str, str]],
    *,
    deadline_seconds: float = FIRST_CALL_SECONDS,
    sleep: Callable[[float], None] = time.sleep,
) -> bool:
    """Ask until the authorizer allows every access in ``accesses``; False when the deadline
    passed first (or nsprov may not ask). Blocks: call it on a worker thread."""
    deadline = time.monotonic() + deadline_seconds
    pending = list(accesses)
    pause = _FIRST_PAUSE
    while pending:
        try:
            pending = [a for a in pending if not _allowed(kube, namespace, a)]
        except KubeError as exc:
            # 403: an installation without the subjectaccessreviews right (k8s/ has it).
            log.warning("namespace=%s cannot check the grant is in force (%s); answering "
                        "without the first-call check", namespace, exc)  # fmt: skip
            return False
        except NsprovError as exc:
            log.warning("namespace=%s first-call check: %s", namespace, exc.detail)
            return False
        if not pending:
            return True
        if time.monotonic() + pause > deadline:
            log.warning("namespace=%s grant not yet in force after %.1fs (%s); answering anyway",
                        namespace, deadline_seconds, pending[0])  # fmt: skip
            return False
        sleep(pause)
        pause = min(pause * _GROWTH, _MAX_PAUSE)
    return True


def _allowed(kube: Kube, namespace: str, access: dict[str, str]) -> bool:
    answer = kube.post(SUBJECT_ACCESS_REVIEWS, service_account_review(namespace, access))
    return bool((answer.get("status") or {}).get("allowed"))
