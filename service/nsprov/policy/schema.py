"""The policy file's shape, declared once: every key, its type and its bounds.

One declaration serves two readers so they cannot drift apart: ``check`` walks a
loaded YAML document and refuses the first thing out of shape with the message a
refused reload logs (where, and why), and ``json_schema`` renders the same tree as
a JSON Schema (draft 2020-12) for editors and for a policy repository's CI.

Why a declaration of our own and not pydantic models: pydantic reports every error
at once in its own words (``Extra inputs are not permitted``) and would need a
translation layer as long as the reader it replaces to say what nsprov says now
(``unknown key 'claim' (did you mean 'claims'?)``, ``expected a non-empty string,
got int (quote it)``), plus a second tree of models beside policy.py's dataclasses.
The declaration is data; rendering it as JSON Schema is a small walk.

What needs more than one value to judge (an issuer a tenant names, owner templates,
quota arithmetic, ttl against maxTTL) stays in policy/file.py: the schema accepts
some files nsprov refuses, never the other way round (tests/unit/test_policy_schema.py).
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from nsprov.core.errors import BadRequest
from nsprov.core.ttl import parse_duration
from nsprov.policy.model import MAX_POOL_SIZE
from nsprov.provision.template import LIMIT_KEYS, MAX_CLUSTER_ROLES, NETWORK_POLICIES, SERVICE_TYPES

SCHEMA_FILE = "policy.schema.json"


class PolicyError(ValueError):
    """The policy file is unreadable or invalid; the message says where and why."""


def _kind(value: Any) -> str:
    return "nothing" if value is None else type(value).__name__


def _shown(value: Any) -> str:
    """A refused value in a message: a scalar as written, a list or mapping by its kind only.

    YAML aliases let a few hundred bytes stand for 9**12 strings (billion laughs): loading
    shares them, but a repr would spell every one out, for minutes and gigabytes.
    """
    return repr(value) if isinstance(value, str | int | float) else _kind(value)


# Kubernetes' rules for names, as regular expressions both Python and JSON Schema read.
DNS_LABEL = r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?"
DNS_SUBDOMAIN = r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?"
QUALIFIED_NAME = r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
LABEL_VALUE = r"(([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9])?"
# A resource name (count/configmaps, example.com/gpu, hugepages-2Mi), as ResourceList keys.
RESOURCE = rf"({DNS_SUBDOMAIN}/)?{QUALIFIED_NAME}"
# A Kubernetes quantity: 2, 500m, 8Gi, 1.5, 1e3.
QUANTITY = r"[+]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][-+]?[0-9]+|[numkMGTPE]|[KMGTPE]i)?"
# Token names as the token file allows them (auth.py), plus globs; no ':' so they never look
# like an issuer owner.
TOKEN_NAME = r"[A-Za-z0-9*?][A-Za-z0-9._@*?-]{0,62}"  # noqa: S105 - a pattern, not a token
HTTPS_URL = r"https://[^\s/?#]+(/[^\s?#]*)?"
# A positive Go duration with days (ttl.py, which strips spaces around it); "0s" passes
# here and is refused by parse.
DURATION = r"\s*\+?(([0-9]+\.?[0-9]*|\.[0-9]+)(ns|us|\u00b5s|\u03bcs|ms|s|m|h|d))+\s*"


def _anchored(pattern: str) -> str:
    return f"^(?:{pattern})$"


# ---- the kinds of value -------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Node:
    """One kind of value: ``check`` refuses a value out of shape (PolicyError saying where
    and why), ``schema`` renders the same rules as JSON Schema."""

    description: str = ""
    """What the key is for: an editor shows it on hover."""

    def check(self, value: Any, where: str) -> None:
        raise NotImplementedError

    def schema(self) -> dict[str, Any]:
        raise NotImplementedError

    def _described(self, schema: dict[str, Any]) -> dict[str, Any]:
        return {"description": self.description, **schema} if self.description else schema


@dataclass(frozen=True)
class Text(Node):
    """A non-empty string; with ``pattern`` or ``enum``, one of those (``refusal`` says so)."""

    pattern: str | None = None
    enum: tuple[str, ...] | None = None
    refusal: str = ""

    def check(self, value: Any, where: str) -> None:
        if self.enum is not None and "" in self.enum and value == "":
            return
        if not isinstance(value, str) or not value:
            raise PolicyError(
                f"{where}: expected a non-empty string, got {_kind(value)} (quote it)"
            )
        wrong = (self.enum is not None and value not in self.enum) or (
            self.pattern is not None and not re.fullmatch(self.pattern, value)
        )
        if wrong:
            raise PolicyError(f"{where}: {self.refusal.format(value=value)}")

    def schema(self) -> dict[str, Any]:
        if self.enum is not None:
            return self._described({"enum": list(self.enum)})
        found: dict[str, Any] = {"type": "string", "minLength": 1}
        if self.pattern is not None:
            found["pattern"] = _anchored(self.pattern)
        return self._described(found)


@dataclass(frozen=True)
class Duration(Node):
    """A positive Go duration (``30s``, ``1h30m``, ``2d``)."""

    def check(self, value: Any, where: str) -> None:
        Text().check(value, where)
        try:
            seconds = parse_duration(value)
        except BadRequest as exc:
            raise PolicyError(f"{where}: {exc.detail}") from None
        if seconds <= 0:
            raise PolicyError(f"{where}: must be positive")

    def schema(self) -> dict[str, Any]:
        return self._described({"type": "string", "pattern": _anchored(DURATION)})


@dataclass(frozen=True)
class Whole(Node):
    """A whole number >= 0, at most ``maximum``."""

    maximum: int | None = None

    def check(self, value: Any, where: str) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise PolicyError(f"{where}: expected a whole number >= 0, got {_shown(value)}")
        if self.maximum is not None and value > self.maximum:
            raise PolicyError(f"{where}: at most {self.maximum}")

    def schema(self) -> dict[str, Any]:
        found: dict[str, Any] = {"type": "integer", "minimum": 0}
        if self.maximum is not None:
            found["maximum"] = self.maximum
        return self._described(found)


@dataclass(frozen=True)
class Flag(Node):
    def check(self, value: Any, where: str) -> None:
        if not isinstance(value, bool):
            raise PolicyError(f"{where}: expected true or false, got {_kind(value)}")

    def schema(self) -> dict[str, Any]:
        return self._described({"type": "boolean"})


@dataclass(frozen=True)
class OneOrMany(Node):
    """One string or a list of them, each an ``item``; a listed value only once."""

    item: Text = Text()
    noun: str = "value"
    max_items: int | None = None
    allow_empty: bool = False

    def check(self, value: Any, where: str) -> None:
        items = value if isinstance(value, list) else [value]
        if value == [] and self.allow_empty:
            return
        if not items or not all(isinstance(v, str) and v for v in items):
            raise PolicyError(f"{where}: expected a string or a list of strings")
        for item in items:
            self.item.check(item, where)
        if len(set(items)) != len(items):
            raise PolicyError(f"{where}: a {self.noun} is listed twice")
        if self.max_items is not None and len(items) > self.max_items:
            raise PolicyError(f"{where}: at most {self.max_items} {self.noun}s")

    def schema(self) -> dict[str, Any]:
        listed: dict[str, Any] = {
            "type": "array",
            "items": self.item.schema(),
            "minItems": 0 if self.allow_empty else 1,
            "uniqueItems": True,
        }
        if self.max_items is not None:
            listed["maxItems"] = self.max_items
        return self._described({"anyOf": [self.item.schema(), listed]})


@dataclass(frozen=True)
class StringMap(Node):
    """A mapping of strings to strings; keys and values may have a pattern."""

    key_pattern: str | None = None
    value_pattern: str | None = None
    noun: str = "key"

    def check(self, value: Any, where: str) -> None:
        if not isinstance(value, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in value.items()
        ):
            raise PolicyError(f"{where}: expected a mapping of strings to strings")
        for name, text in value.items():
            if self.key_pattern is not None and not re.fullmatch(self.key_pattern, name):
                raise PolicyError(f"{where}: {name!r} is not a valid {self.noun} key")
            if self.value_pattern is not None and not re.fullmatch(self.value_pattern, text):
                raise PolicyError(f"{where}.{name}: {text!r} is not a valid {self.noun} value")

    def schema(self) -> dict[str, Any]:
        values: dict[str, Any] = {"type": "string"}
        if self.value_pattern is not None:
            values["pattern"] = _anchored(self.value_pattern)
        found: dict[str, Any] = {"type": "object", "additionalProperties": values}
        if self.key_pattern is not None:
            found["propertyNames"] = {"pattern": _anchored(self.key_pattern)}
        return self._described(found)


@dataclass(frozen=True)
class Quantities(Node):
    """Resource names to quantities (``pods: 2``, ``requests.memory: 8Gi``)."""

    def check(self, value: Any, where: str) -> None:
        if not isinstance(value, dict) or not value:
            raise PolicyError(f"{where}: expected a mapping of resource names to quantities")
        for name, quantity in value.items():
            if not isinstance(name, str) or len(name) > 253 or not re.fullmatch(RESOURCE, name):
                raise PolicyError(f"{where}: {name!r} is not a resource name")
            # YAML reads `pods: 2` as a number; Kubernetes wants the quantity as a string.
            number = isinstance(quantity, int | float) and not isinstance(quantity, bool)
            text = str(quantity) if number else quantity
            if not isinstance(text, str) or not re.fullmatch(QUANTITY, text):
                raise PolicyError(
                    f"{where}.{name}: {_shown(quantity)} is not a quantity (e.g. 2, 500m, 8Gi)"
                )

    def schema(self) -> dict[str, Any]:
        quantity = {
            "anyOf": [{"type": "number"}, {"type": "string", "pattern": _anchored(QUANTITY)}]
        }
        return self._described({
            "type": "object",
            "minProperties": 1,
            "propertyNames": {"maxLength": 253, "pattern": _anchored(RESOURCE)},
            "additionalProperties": quantity,
        })  # fmt: skip


@dataclass(frozen=True)
class Object(Node):
    """A mapping with declared keys (``keys``), or any keys whose values are ``values``."""

    keys: Mapping[str, Node] = field(default_factory=dict)
    required: tuple[str, ...] = ()
    values: Node | None = None
    extra_schema: Mapping[str, Any] = field(default_factory=dict)
    """What only the schema says (policy/file.py says it in its own words)."""

    def check(self, value: Any, where: str) -> None:
        if not isinstance(value, dict):
            raise PolicyError(f"{where or 'top level'}: expected a mapping, got {_kind(value)}")
        known = tuple(self.keys)
        if self.values is None:
            for key in value:
                if key not in self.keys:
                    close = difflib.get_close_matches(str(key), known, n=1)
                    hint = f" (did you mean {close[0]!r}?)" if close else ""
                    raise PolicyError(
                        f"{where or 'top level'}: unknown key {key!r}{hint}; "
                        f"known: {', '.join(known)}"
                    )
        for key in self.required:
            if value.get(key) is None:
                raise PolicyError(f"{_at(where, key)}: required")
        for key, node in self.keys.items():
            if value.get(key) is not None:
                node.check(value[key], _at(where, key))
        if self.values is not None:
            for key, item in value.items():
                self.values.check(item, _at(where, str(key)))

    def schema(self) -> dict[str, Any]:
        found: dict[str, Any] = {"type": "object"}
        if self.keys:
            found["properties"] = {
                key: node.schema() if key in self.required else _or_null(node)
                for key, node in self.keys.items()
            }
        if self.required:
            found["required"] = list(self.required)
        found["additionalProperties"] = self.values.schema() if self.values else False
        return self._described({**found, **self.extra_schema})


@dataclass(frozen=True)
class NoneOr(Node):
    """``none`` (drop what the defaults give), or a ``node``."""

    node: Node = Node()

    def check(self, value: Any, where: str) -> None:
        if value != "none":
            self.node.check(value, where)

    def schema(self) -> dict[str, Any]:
        return self._described({"anyOf": [{"const": "none"}, self.node.schema()]})


@dataclass(frozen=True)
class ListOf(Node):
    item: Node = Node()

    def check(self, value: Any, where: str) -> None:
        if not isinstance(value, list):
            raise PolicyError(f"{where}: expected a list, got {_kind(value)}")
        for i, item in enumerate(value):
            self.item.check(item, f"{where}[{i}]")

    def schema(self) -> dict[str, Any]:
        return self._described({"type": "array", "items": self.item.schema()})


def _or_null(node: Node) -> dict[str, Any]:
    """An optional key may be written without a value (``defaults:``): nsprov reads it as absent."""
    inner = node.schema()
    inner.pop("description", None)
    return node._described({"anyOf": [{"type": "null"}, inner]})


def _at(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


# ---- the policy file ----------------------------------------------------------------------

_ROLES = OneOrMany(
    Text(pattern=r"(?!\.\.?$)[^/%]+", refusal="{value!r} is not a ClusterRole name"),
    noun="ClusterRole",
    max_items=MAX_CLUSTER_ROLES,
    description="ClusterRoles bound in each namespace (one RoleBinding each).",
)
_TEMPLATE = Object(
    {
        "resourceQuota": NoneOr(
            Object({"hard": Quantities()}, required=("hard",)),
            description="The namespace's ResourceQuota, or none.",
        ),
        "limitRange": NoneOr(
            Object({key: Quantities() for key in LIMIT_KEYS}, extra_schema={"minProperties": 1}),
            description="The containers' LimitRange, or none.",
        ),
        "networkPolicy": Text(
            enum=NETWORK_POLICIES,
            refusal="expected isolated or none",
            description="isolated: deny ingress from other namespaces.",
        ),
        "isolatedEgress": Flag(description="Also deny egress out of the namespace but DNS."),
    },
    description="What a namespace contains besides its grant.",
)
SETTINGS: Mapping[str, Node] = {
    "clusterRole": _ROLES,
    "ttl": Duration(description="Lifetime of a namespace whose request names none."),
    "maxTTL": Duration(description="Longest ttl a request (or an extension) may ask for."),
    "maxLifetime": Duration(description="Longest a namespace lives, extensions included."),
    "maxNamespaces": Whole(description="Live namespaces of the tenant; 0 closes it."),
    "maxNamespacesPerOwner": Whole(description="Live namespaces of one owner."),
    "podSecurity": Text(
        enum=("", "privileged", "baseline", "restricted"),
        refusal="expected privileged, baseline, restricted or ''",
        description="The Pod Security level enforced in the namespace.",
    ),
    "labels": StringMap(
        key_pattern=rf"({DNS_SUBDOMAIN}/)?{QUALIFIED_NAME}",
        value_pattern=LABEL_VALUE,
        noun="label",
        description="Extra labels (no nsprov.io, kubernetes.io or k8s.io keys).",
    ),
    "annotations": StringMap(
        key_pattern=rf"({DNS_SUBDOMAIN}/)?{QUALIFIED_NAME}",
        noun="annotation",
        description="Extra annotations (no nsprov.io, kubernetes.io or k8s.io keys).",
    ),
    "template": _TEMPLATE,
    "maxGracePeriod": Duration(description="Longest terminationGracePeriodSeconds, whole seconds."),
    "serviceTypes": OneOrMany(
        Text(
            enum=SERVICE_TYPES,
            refusal=f"{{value!r}} is not a Service type ({', '.join(SERVICE_TYPES)})",
        ),
        noun="type",
        description="Service types a tenant may create.",
    ),
    "finalizers": OneOrMany(
        Text(
            pattern=rf"{DNS_SUBDOMAIN}/{QUALIFIED_NAME}",
            refusal="{value!r} is not a domain-qualified finalizer name (e.g. example.com/cleanup)",
        ),
        noun="finalizer",
        allow_empty=True,
        description="Extra finalizers a tenant may add to its objects.",
    ),
    "pool": Object(
        {
            "size": Whole(maximum=MAX_POOL_SIZE, description="0 = no pool."),
            "maxAge": Duration(description="An unclaimed pooled namespace is made anew then."),
        },
        extra_schema={"required": ["size"]},
        description="Ready namespaces kept for this profile.",
    ),
}
_NAME = Text(pattern=DNS_LABEL, refusal="{value!r} must be a DNS label (a-z, 0-9, -)")
_URL = Text(pattern=HTTPS_URL, refusal="must be an https:// URL without query or fragment")
ISSUER = Object(
    {
        "name": _NAME,
        "issuer": _URL,
        "audience": Text(description="The aud a token must carry."),
        "jwksUri": _URL,
        "caFile": Text(description="CA bundle for its TLS, relative to the policy file."),
        "tokenReview": Flag(description="Also ask the managed cluster (TokenReview)."),
    },
    required=("name", "issuer", "audience"),
    description="An OIDC issuer whose ID tokens nsprov accepts as bearer tokens.",
)


def _given(key: str) -> dict[str, Any]:
    """``key`` is there with a value (nsprov reads ``key:`` without one as absent)."""
    return {"required": [key], "properties": {key: {"not": {"type": "null"}}}}


_ONE_OF_MATCHES = {
    "oneOf": [
        {"allOf": [_given("token"), {"not": {"anyOf": [_given("issuer"), _given("claims")]}}]},
        {"allOf": [_given("issuer"), _given("claims"), {"not": _given("token")}]},
    ]
}
MATCH = Object(
    {
        "issuer": Text(description="An issuer's name (issuers[].name)."),
        "claims": Object(
            values=OneOrMany(),
            extra_schema={"minProperties": 1, "propertyNames": {"minLength": 1}},
            description="Every claim must match one of its globs.",
        ),
        "token": OneOrMany(
            Text(pattern=TOKEN_NAME, refusal="{value!r} is not a token name"),
            noun="token",
            description="Names (or globs) from the token file.",
        ),
    },
    extra_schema=_ONE_OF_MATCHES,
    description="Either token, or issuer with claims.",
)
TENANT = Object(
    {"name": _NAME, "match": MATCH, "owner": Text(description="The owner template."), **SETTINGS},
    required=("name", "match"),
)
POLICY = Object(
    {
        "issuers": ListOf(ISSUER, description="Trusted OIDC issuers."),
        "defaults": Object(SETTINGS, description="What every tenant has unless it says otherwise."),
        "tenants": ListOf(TENANT, description="First match wins; no match is 403."),
    },
    description="nsprov's policy file (--policy-file).",
)


def json_schema() -> dict[str, Any]:
    """The policy file's JSON Schema (draft 2020-12), rendered from ``POLICY``."""
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "nsprov policy file",
        **POLICY.schema(),
    }


def render() -> str:
    """The schema as the committed file has it."""
    return json.dumps(json_schema(), indent=2, ensure_ascii=False) + "\n"


def shipped() -> str:
    """The schema file shipped in the package (``nsprov policy schema`` prints it)."""
    return resources.files(__package__).joinpath(SCHEMA_FILE).read_text(encoding="utf-8")


if __name__ == "__main__":
    # `make policy-schema`: write the rendered schema to each path given.
    import sys

    for path in sys.argv[1:]:
        with open(path, "w", encoding="utf-8") as out:
            out.write(render())
