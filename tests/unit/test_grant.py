from __future__ import annotations

import pytest

from nsprov.core.errors import GrantUnusable
from nsprov.provision.grant import GrantGuard, unsafe_reasons


def _role(*rules: dict[str, list[str]], **extra: object) -> dict[str, object]:
    return {"rules": list(rules), **extra}


def test_empty_and_ordinary_grants_are_safe() -> None:
    assert unsafe_reasons(_role()) == []
    assert unsafe_reasons({"rules": None}) == []
    ordinary = _role(
        {"apiGroups": [""], "resources": ["configmaps", "secrets", "pods"], "verbs": ["create"]},
        {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get", "patch"]},
        {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["get"]},
        {"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["roles"], "verbs": ["get"]},
        # Reading what bounds the tenant, or its namespace's subresources, is harmless.
        {"apiGroups": [""], "resources": ["namespaces/status", "namespaces/finalize"],
         "verbs": ["get"]},
        {"apiGroups": [""], "resources": ["resourcequotas", "limitranges"],
         "verbs": ["get", "list", "watch"]},
        {"apiGroups": ["networking.k8s.io"], "resources": ["networkpolicies", "ingresses"],
         "verbs": ["get", "list", "watch"]},
        {"apiGroups": ["networking.k8s.io"], "resources": ["ingresses"], "verbs": ["create"]},
        {"apiGroups": [""], "resources": ["pods/log", "pods/portforward"],
         "verbs": ["get", "create"]},
        # Reading endpoints is harmless; so is writing Services (admission bounds those).
        {"apiGroups": [""], "resources": ["endpoints", "services"], "verbs": ["get", "list"]},
        {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["watch"]},
        {"apiGroups": [""], "resources": ["services"], "verbs": ["create", "patch"]},
        # Same resource names in another group are another resource.
        {"apiGroups": ["example.com"], "resources": ["networkpolicies", "namespaces"],
         "verbs": ["create"]},
    )  # fmt: skip
    assert unsafe_reasons(ordinary) == []


@pytest.mark.parametrize(
    ("rule", "reason"),
    [
        ({"apiGroups": ["*"], "resources": ["pods"], "verbs": ["get"]}, "wildcard"),
        ({"apiGroups": [""], "resources": ["*"], "verbs": ["get"]}, "wildcard"),
        ({"apiGroups": [""], "resources": ["pods"], "verbs": ["*"]}, "wildcard"),
        ({"apiGroups": [""], "resources": ["namespaces"], "verbs": ["patch"]}, "edit Namespaces"),
        ({"apiGroups": [""], "resources": ["namespaces"], "verbs": ["delete"]}, "edit Namespaces"),
        (
            {"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["rolebindings"],
             "verbs": ["create"]},
            "change RBAC",
        ),
        (
            {"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["clusterroles"],
             "verbs": ["bind"]},
            "change RBAC",
        ),
        (
            {"apiGroups": [""], "resources": ["serviceaccounts/token"], "verbs": ["create"]},
            "mint ServiceAccount tokens",
        ),
        ({"apiGroups": [""], "resources": ["users"], "verbs": ["impersonate"]}, "impersonate"),
        # Subresource wildcards, and anything under a "*" resource.
        ({"apiGroups": [""], "resources": ["*/status"], "verbs": ["update"]}, "wildcard"),
        ({"apiGroups": [""], "resources": ["*/finalize"], "verbs": ["update"]}, "wildcard"),
        ({"apiGroups": [""], "resources": ["*/token"], "verbs": ["create"]}, "wildcard"),
        ({"apiGroups": [""], "resources": ["*/*"], "verbs": ["get"]}, "wildcard"),
        ({"apiGroups": [""], "resources": ["serviceaccounts/*"], "verbs": ["create"]}, "wildcard"),
        ({"apiGroups": [""], "resources": ["namespaces/*"], "verbs": ["update"]}, "wildcard"),
        ({"apiGroups": ["apps"], "resources": ["*/scale"], "verbs": ["get"]}, "wildcard"),
        # A subresource writes its parent: finalize and status updates carry labels too.
        (
            {"apiGroups": [""], "resources": ["namespaces/finalize"], "verbs": ["update"]},
            "edit Namespaces",
        ),
        (
            {"apiGroups": [""], "resources": ["namespaces/status"], "verbs": ["patch"]},
            "edit Namespaces",
        ),
        (
            {"apiGroups": [""], "resources": ["configmaps", "namespaces"],
             "verbs": ["deletecollection"]},
            "edit Namespaces",
        ),
        # The bounds nsprov sets in each namespace are not the tenant's to change.
        ({"apiGroups": [""], "resources": ["resourcequotas"], "verbs": ["patch"]}, "quota"),
        ({"apiGroups": [""], "resources": ["resourcequotas/status"], "verbs": ["update"]}, "quota"),
        ({"apiGroups": [""], "resources": ["resourcequotas"], "verbs": ["delete"]}, "quota"),
        ({"apiGroups": [""], "resources": ["limitranges"], "verbs": ["create"]}, "limits"),
        (
            {"apiGroups": ["networking.k8s.io"], "resources": ["networkpolicies"],
             "verbs": ["delete"]},
            "network policy",
        ),
        (
            {"apiGroups": ["extensions"], "resources": ["networkpolicies"],
             "verbs": ["update"]},
            "network policy",
        ),
        (
            {"apiGroups": ["", "networking.k8s.io"],
             "resources": ["limitranges", "networkpolicies"], "verbs": ["create"]},
            "limits and network policy",
        ),
        # Endpoints send a Service's traffic anywhere (CVE-2021-25740), like RBAC writes.
        ({"apiGroups": [""], "resources": ["endpoints"], "verbs": ["create"]}, "endpoints"),
        ({"apiGroups": [""], "resources": ["endpoints/restricted"], "verbs": ["update"]},
         "endpoints"),
        (
            {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"],
             "verbs": ["patch"]},
            "CVE-2021-25740",
        ),
    ],
)  # fmt: skip
def test_rights_that_undo_nsprov_are_named(rule: dict[str, list[str]], reason: str) -> None:
    reasons = unsafe_reasons(_role(rule))
    assert any(reason in r for r in reasons), reasons


def test_aggregated_roles_are_judged_by_the_rules_aggregated_into_them() -> None:
    """The built-in view aggregates; what it grants is the rules written into it."""
    selector = {"clusterRoleSelectors": [{"matchLabels": {"x": "y"}}]}
    reading = {"apiGroups": [""], "resources": ["pods", "configmaps"], "verbs": ["get", "list"]}
    assert unsafe_reasons(_role(reading, aggregationRule=selector)) == []
    grown = {"apiGroups": [""], "resources": ["limitranges"], "verbs": ["delete"]}
    assert (
        "change their own limits"
        in unsafe_reasons(_role(reading, grown, aggregationRule=selector))[0]
    )


# ---- the guard: what POST and PATCH ask before handing the grant out ------------------------

_UNSAFE = _role({"apiGroups": [""], "resources": ["namespaces/finalize"], "verbs": ["update"]})


def _guard(allow_unsafe: bool = False) -> GrantGuard:
    return GrantGuard(lambda: ["g"], allow_unsafe=allow_unsafe)


def test_guard_fails_closed_until_the_grant_is_seen_safe() -> None:
    guard = _guard()
    with pytest.raises(GrantUnusable) as unchecked:
        guard.require(["g"])
    assert "'g' has not been checked yet" in unchecked.value.detail
    assert unchecked.value.status == 503
    guard.saw("g", _role())
    guard.require(["g"])
    assert guard.refusal("g") is None
    assert guard.refusals() == {}


@pytest.mark.parametrize("allow_unsafe", [False, True])
def test_guard_refuses_missing_and_unreadable_grants_even_when_unsafe_is_allowed(
    allow_unsafe: bool,
) -> None:
    guard = _guard(allow_unsafe)
    guard.listed([])
    assert "grant ClusterRole 'g' does not exist" in (guard.refusal("g") or "")
    guard.saw("g", _role())
    guard.saw("g", None)
    assert "grant ClusterRole 'g' does not exist" in (guard.refusal("g") or "")
    guard.unreadable("403 Forbidden")
    assert "cannot read grant ClusterRole 'g'" in (guard.refusal("g") or "")
    # The Kubernetes error text is for the log, not for clients.
    assert "403" not in (guard.refusal("g") or "")
    assert set(guard.refusals()) == {"g"}


def test_guard_refuses_an_unsafe_grant_unless_allowed() -> None:
    strict, lenient = _guard(), _guard(allow_unsafe=True)
    assert strict.saw("g", _UNSAFE) == lenient.saw("g", _UNSAFE) != []
    with pytest.raises(GrantUnusable) as unsafe:
        strict.require(["g"])
    assert "'g' is unsafe for tenants: tenants could edit Namespaces" in unsafe.value.detail
    assert "--allow-unsafe-grant" in unsafe.value.detail
    assert strict.unsafe("g")
    assert not lenient.unsafe("g")
    lenient.require(["g"])
    # Fixed again: provisioning resumes.
    strict.saw("g", _role())
    strict.require(["g"])


def test_guard_judges_each_role_on_its_own() -> None:
    """One tenant's unsafe grant pauses that tenant only."""
    guard = GrantGuard(lambda: ["good", "bad"])
    guard.listed(
        [{**_role(), "metadata": {"name": "good"}}, {**_UNSAFE, "metadata": {"name": "bad"}}]
    )
    guard.require(["good"])
    with pytest.raises(GrantUnusable, match="'bad' is unsafe"):
        guard.require(["good", "bad"])
    assert set(guard.refusals()) == {"bad"}
    assert "does not exist" in (guard.refusal("other") or "")


def test_the_example_grants_are_safe() -> None:
    """What an operator copies (deploy/overlay, k8s/examples) passes nsprov's own check."""
    from pathlib import Path

    import yaml

    root = Path(__file__).resolve().parents[2]
    for path in (root / "deploy/overlay/grant.yaml", root / "k8s/examples/grant-configmaps.yaml"):
        assert unsafe_reasons(yaml.safe_load(path.read_text())) == [], path
