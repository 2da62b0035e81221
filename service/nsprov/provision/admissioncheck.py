"""Whether the cluster's admission policies were made for nsprov's --selector.

k8s/admission-policy.yaml carries the selector and nsprov's username in CEL, rendered
for one selector (the base's, or the one k8s/components/selector or the chart's value
gives). Run with another --selector, nsprov would label namespaces the policies do not
protect: anyone with patch rights could rewrite their expiry or owner, and nothing
would say so. So nsprov asks the API server at start, with two dry-run creates that
change nothing and need no right beyond the create nsprov already has (reading the
policies themselves would need a new cluster-wide read):

1. a Namespace with the selector and an expiry label, as nsprov makes one: refused by
   one of nsprov's admission policies (nsprov-*), the policies belong to another
   selector or ServiceAccount, and nsprov could provision nothing anyway: refuse to
   start, saying why;
2. a Namespace with the selector but no expiry: nsprov-confine refuses exactly this to
   nsprov's own ServiceAccount. Admitted, no policy confines this identity under this
   selector (not installed, or an admin's kubeconfig): a warning, since nsprov works,
   unguarded.

A refusal by a policy that is not nsprov's (the API server names it) says nothing about
the selector: a warning that the check could not tell, never a refused start.
"""

from __future__ import annotations

import logging
import re
import secrets
from dataclasses import dataclass

from nsprov.core.errors import NsprovError
from nsprov.core.kube import Kube, KubeError
from nsprov.provision import bundle

# Its name from before the folders: log filters and the tests select on it.
log = logging.getLogger("nsprov.admissioncheck")

GUIDE = "docs/operator/migration.md"


class SelectorUnprotected(ValueError):
    """The admission policies refuse what nsprov makes under its --selector."""


@dataclass(frozen=True)
class _Probe:
    admitted: bool
    refusal: str = ""


# The API server's refusal names the policy: "ValidatingAdmissionPolicy 'nsprov-confine'
# with binding 'nsprov-confine' denied request: ...".
_REFUSED_BY = re.compile(r"ValidatingAdmissionPolicy '([^']*)'")


def _dry_run_create(kube: Kube, labels: dict[str, str], policies: str) -> _Probe | None:
    """Admitted, or refused by one of ``policies`` (a pattern of names); None when the probe
    says nothing about them: refused for another reason, or by another policy (a cluster's
    own rules, e.g. Pod Security labels on every namespace, which the probe does not carry
    and nsprov's namespaces may)."""
    name = f"nsprov-admission-probe-{secrets.token_hex(4)}"
    body = {"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": name, "labels": labels}}  # fmt: skip
    try:
        kube.request("POST", bundle.NAMESPACES_PATH, body=body, query={"dryRun": "All"})
    except KubeError as exc:
        refused_by = _REFUSED_BY.search(exc.message) if exc.status == 403 else None
        if refused_by is not None and re.fullmatch(policies, refused_by.group(1)):
            return _Probe(admitted=False, refusal=exc.message)
        log.warning("cannot check the admission policies against --selector (%s)", exc)
        return None
    except NsprovError as exc:
        log.warning("cannot check the admission policies against --selector: %s", exc.detail)
        return None
    return _Probe(admitted=True)


def check_admission_policies(kube: Kube, selector: bundle.Selector, now: float) -> None:
    """Refuse to start if the policies refuse nsprov's own namespaces; warn if none applies."""
    labels = {selector.key: selector.value}
    made = _dry_run_create(
        kube, {**labels, bundle.EXPIRES_AT_LABEL: str(int(now) + 3600)}, r"nsprov-.*"
    )
    if made is None:
        return
    if not made.admitted:
        raise SelectorUnprotected(
            f"the admission policies refuse a namespace as nsprov makes it under "
            f"--selector={selector} ({made.refusal}): they were rendered for another selector "
            f"or ServiceAccount; render them for this one (k8s/components/selector, or the "
            f"chart's selector value; {GUIDE})"
        )
    unexpiring = _dry_run_create(kube, labels, "nsprov-confine")
    if unexpiring is None:
        return
    if unexpiring.admitted:
        log.warning(
            "no admission policy guards nsprov's namespaces under --selector=%s for this "
            "identity (nsprov-confine would refuse a namespace without an expiry): the "
            "policies of k8s/admission-policy.yaml are not installed, or name another "
            "selector or ServiceAccount, and anyone with patch rights may rewrite an expiry "
            "(%s)",
            selector,
            GUIDE,
        )
        return
    log.info("admission policies guard --selector=%s", selector)
