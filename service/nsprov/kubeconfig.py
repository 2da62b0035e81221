"""The kubeconfig handed to a tenant: one cluster, one user, one context, in its namespace."""

from __future__ import annotations

from typing import Any

import yaml


def build(*, server: str, ca_data: str | None, namespace: str, token: str) -> dict[str, Any]:
    cluster: dict[str, Any] = {"server": server}
    if ca_data:
        cluster["certificate-authority-data"] = ca_data
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "nsprov", "cluster": cluster}],
        "users": [{"name": namespace, "user": {"token": token}}],
        "contexts": [
            {
                "name": namespace,
                "context": {"cluster": "nsprov", "user": namespace, "namespace": namespace},
            }
        ],
        "current-context": namespace,
        "preferences": {},
    }


def render(config: dict[str, Any]) -> str:
    return yaml.safe_dump(config, sort_keys=False)
