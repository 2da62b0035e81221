from __future__ import annotations

import pytest

from nsprov.grant import unsafe_reasons


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
    )
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
    ],
)  # fmt: skip
def test_rights_that_undo_nsprov_are_named(rule: dict[str, list[str]], reason: str) -> None:
    reasons = unsafe_reasons(_role(rule))
    assert any(reason in r for r in reasons), reasons


def test_aggregated_roles_are_unsafe() -> None:
    role = _role(aggregationRule={"clusterRoleSelectors": [{"matchLabels": {"x": "y"}}]})
    assert "aggregates" in unsafe_reasons(role)[0]
