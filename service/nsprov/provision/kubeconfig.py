"""The kubeconfig handed to a tenant: one cluster, one user, one context, in its namespace.

Rendered without PyYAML when every value is a plain YAML scalar, as a server URL, base64
CA data, a DNS label and a JWT are: the document's shape is fixed, so its text is a
template, and PyYAML's representer (Python, even over libyaml's emitter) took about
100 µs of a POST's own CPU on the event loop, the largest share. The template writes
exactly what ``yaml.dump`` writes (test_kubeconfig.py checks it for any strings); a value
that would need quoting, and any other document, go to ``yaml.dump`` as before.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

_STR = "tag:yaml.org,2002:str"
# Characters a plain scalar may hold anywhere in a block mapping's value, never first
# (no indicator) or last (':' ends a key there); no spaces, breaks or '#', no non-ASCII
# (yaml.dump escapes it). Whether the text reads back as a string is the resolver's
# question (yes, null, 1.5, 2001-01-01 do not), asked of each value below.
_PLAIN = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._~/+=:%\[\]-]*[A-Za-z0-9._~/+=%\[\]-])?")
_RESOLVER = yaml.resolver.Resolver()


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
    return _plain_text(config) or yaml.dump(config, Dumper=_Dumper, sort_keys=False)


def _plain_text(config: dict[str, Any]) -> str | None:
    """build()'s document as ``yaml.dump`` would write it, or None: not build()'s shape, or
    a value that is not a plain scalar."""
    try:
        cluster = config["clusters"][0]["cluster"]
        server, ca_data = cluster["server"], cluster.get("certificate-authority-data")
        namespace, token = config["current-context"], config["users"][0]["user"]["token"]
    except (KeyError, IndexError, TypeError):
        return None
    values = (server, namespace, token) if ca_data is None else (server, ca_data, namespace, token)
    if not all(_is_plain(value) for value in values):
        return None
    if config != build(server=server, ca_data=ca_data, namespace=namespace, token=token):
        return None
    ca_line = "" if ca_data is None else f"    certificate-authority-data: {ca_data}\n"
    return (
        "apiVersion: v1\n"
        "kind: Config\n"
        "clusters:\n"
        "- name: nsprov\n"
        "  cluster:\n"
        f"    server: {server}\n"
        f"{ca_line}"
        "users:\n"
        f"- name: {namespace}\n"
        "  user:\n"
        f"    token: {token}\n"
        "contexts:\n"
        f"- name: {namespace}\n"
        "  context:\n"
        "    cluster: nsprov\n"
        f"    user: {namespace}\n"
        f"    namespace: {namespace}\n"
        f"current-context: {namespace}\n"
        "preferences: {}\n"
    )


def _is_plain(value: object) -> bool:
    if not isinstance(value, str) or _PLAIN.fullmatch(value) is None:
        return False
    # The tag yaml.dump's representer asks for; types-PyYAML leaves resolve unannotated.
    tag = _RESOLVER.resolve(yaml.ScalarNode, value, (True, False))  # type: ignore[no-untyped-call]
    return bool(tag == _STR)
