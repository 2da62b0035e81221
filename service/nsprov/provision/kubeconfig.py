"""The kubeconfig handed to a tenant: one cluster, one user, one context, in its namespace.

Rendered with libyaml's emitter when PyYAML has it (its wheels do): the pure-Python
emitter took about 2.5 ms per kubeconfig (a 1 kB token and a 1.5 kB CA are long
scalars it scans character by character), on the event loop, the largest share of
nsprov's own CPU in a POST. Both emitters write the same text for these documents.
"""

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


_Dumper: type[yaml.SafeDumper] = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


def render(config: dict[str, Any]) -> str:
    return yaml.dump(config, Dumper=_Dumper, sort_keys=False)
