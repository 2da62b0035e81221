"""The OpenAPI document: valid OpenAPI 3.1, in step with the routes, every status it
declares said and shaped, and its parameter schemas the parsers' own rules (the fuzzer of
tests/integration/test_openapi_fuzz.py then holds the running service to them)."""

from __future__ import annotations

import json
import math
import re
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openapi_spec_validator import validate
from starlette.routing import Route

from nsprov.api import openapi
from nsprov.api import routes as api
from nsprov.api.provisioner import NamespaceInfo, NamespaceStatus, QuotaStatus
from nsprov.core import errors, paging
from nsprov.core.errors import BadRequest
from nsprov.core.ttl import MAX_TTL_LENGTH, parse_ttl
from nsprov.provision import bundle
from nsprov.provision.deletion import Blocker

# Derandomized: a failure here repeats on the next run and on CI.
_PROPERTY = settings(derandomize=True, database=None, deadline=None, max_examples=200,
                     suppress_health_check=[HealthCheck.too_slow])  # fmt: skip


def test_document_and_routes_agree() -> None:
    served = {
        (route.path, method.lower())
        for route in api.routes
        if isinstance(route, Route)
        for method in (route.methods or ())
        if method != "HEAD"
    }
    documented = {
        (path, method) for path, item in openapi.DOCUMENT["paths"].items() for method in item
    }
    assert served == documented


def test_the_document_is_valid_openapi_3_1() -> None:
    validate(json.loads(json.dumps(openapi.DOCUMENT)))


def _operations() -> list[dict[str, Any]]:
    return [op for item in openapi.DOCUMENT["paths"].values() for op in item.values()]


def _resolved(node: dict[str, Any]) -> dict[str, Any]:
    if "$ref" not in node:
        return node
    _, section, kind, name = node["$ref"].split("/")
    found: dict[str, Any] = openapi.DOCUMENT[section][kind][name]
    return found


def test_operation_ids_are_unique_and_errors_are_described_problems() -> None:
    ids = [op["operationId"] for op in _operations()]
    assert len(ids) == len(set(ids))
    for op in _operations():
        for status, response in op["responses"].items():
            response = _resolved(response)
            assert response["description"].strip(), (op["operationId"], status)
            if int(status) >= 400:
                content = response["content"]
                assert list(content) == ["application/problem+json"], (op["operationId"], status)
        if op.get("security"):
            assert {"401", "403", "500", "503"} <= set(op["responses"]), op["operationId"]


def test_every_status_of_the_error_hierarchy_is_declared() -> None:
    """A new error class (or status) cannot be raised without the document saying where."""

    def subclasses(cls: type[errors.NsprovError]) -> list[type[errors.NsprovError]]:
        return [cls, *(s for sub in cls.__subclasses__() for s in subclasses(sub))]

    declared = {int(status) for op in _operations() for status in op["responses"]}
    assert {cls.status for cls in subclasses(errors.NsprovError)} <= declared


def _parameter(op_id: str, name: str) -> dict[str, Any]:
    op = next(op for op in _operations() if op["operationId"] == op_id)
    found: dict[str, Any] = next(p for p in op["parameters"] if p["name"] == name)
    return found


def _ttl_pattern() -> str:
    pattern: str = _parameter("createNamespace", "ttl")["schema"]["pattern"]
    return pattern


def _ttl_or_none(text: str) -> float | None:
    try:
        return parse_ttl(text, default=1.0, maximum=math.inf)
    except BadRequest:
        return None


@_PROPERTY
@given(st.from_regex(_ttl_pattern(), fullmatch=True))
def test_every_ttl_the_schema_takes_the_service_parses(text: str) -> None:
    assert (_ttl_or_none(text) is not None) == (len(text) <= MAX_TTL_LENGTH)


@_PROPERTY
@given(st.text(alphabet=st.sampled_from("0123456789.+-smhdnuµμ \t"), max_size=12) | st.text())
def test_every_ttl_the_service_parses_the_schema_takes(text: str) -> None:
    if _ttl_or_none(text) is not None:
        assert re.search(_ttl_pattern(), text)
        assert len(text) <= _parameter("createNamespace", "ttl")["schema"]["maxLength"]


@_PROPERTY
@given(st.text(alphabet=st.sampled_from("0123456789-+_ .e\u0665"), max_size=6) | st.text())
def test_limit_is_the_integer_its_schema_says(text: str) -> None:
    schema = _parameter("listNamespaces", "limit")["schema"]
    try:
        limit = paging.parse_limit(text)
    except BadRequest:
        return
    if text:  # empty: the default
        assert json.loads(text) == limit
        assert schema["minimum"] <= limit <= schema["maximum"]


@pytest.mark.parametrize(("op_id", "name"), [("getNamespace", "name"), ("createNamespace", "key")])
def test_names_and_keys_are_what_the_service_takes(op_id: str, name: str) -> None:
    schema = _parameter(op_id, name)["schema"]
    takes = bundle.is_dns_label if name == "name" else bundle.KEY_PATTERN.fullmatch

    @_PROPERTY
    @given(st.from_regex(schema["pattern"], fullmatch=True) | st.text(max_size=70))
    def agree(text: str) -> None:
        in_schema = len(text) <= schema["maxLength"] and re.search(schema["pattern"], text)
        assert bool(in_schema) == bool(takes(text)), text

    agree()


@_PROPERTY
@given(st.from_regex(openapi.SERVER_PATTERN, fullmatch=True) | st.text())
def test_a_server_the_schema_takes_goes_into_the_kubeconfig_whole(url: str) -> None:
    """The pattern refuses what would change the URL's meaning or a YAML line."""
    if openapi.SERVER_PATTERN.fullmatch(url):
        assert not re.search(r"[\s@?#\x00-\x1f\x7f]", url)
        assert url.startswith(("http://", "https://"))


def _refs(node: object) -> list[str]:
    if isinstance(node, dict):
        own = [node["$ref"]] if "$ref" in node else []
        return own + [r for v in node.values() for r in _refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in _refs(v)]
    return []


def test_every_reference_resolves() -> None:
    for ref in _refs(openapi.DOCUMENT):
        _, section, kind, name = ref.split("/")
        assert name in openapi.DOCUMENT[section][kind], ref


def test_the_namespace_schemas_name_every_key_the_service_sends() -> None:
    schemas = openapi.DOCUMENT["components"]["schemas"]
    info = NamespaceInfo("np-a", "alice", 0, None, terminating=False, tenant="web")
    going = NamespaceInfo(
        "np-b", "alice", 0, None, terminating=True, tenant="web",
        deletion_started_at="2030-01-01T00:00:00Z",
        blocked_by=(Blocker("NamespaceFinalizersRemaining", "example.com/never in 1"),),
    ).to_json()  # fmt: skip
    properties = schemas["Namespace"]["properties"]
    # A live namespace leaves out what only a namespace being deleted has.
    assert set(info.to_json()) == set(properties) - {"deletionStartedAt", "blockedBy"}
    assert set(info.to_json()) == set(schemas["Namespace"]["required"])
    assert set(going) == set(properties)
    assert {info.to_json()["state"], going["state"]} == set(properties["state"]["enum"])
    blocker = schemas["Blocker"]
    assert set(going["blockedBy"][0]) == set(blocker["required"]) == set(blocker["properties"])
    status = NamespaceStatus(info, QuotaStatus({"pods": "3"}, {"pods": "1"})).to_json()
    extra = schemas["NamespaceStatus"]["allOf"][1]["properties"]
    assert set(status) == set(info.to_json()) | set(extra)
    quota = next(s for s in extra["quota"]["oneOf"] if s["type"] == "object")
    assert set(status["quota"]) == set(quota["required"]) == set(quota["properties"])


def test_the_client_checks_an_idempotency_key_as_the_service_does() -> None:
    """client_cli may not import the server's modules, so it has a copy; this keeps it one."""
    from nsprov.client import cli as client_cli

    assert client_cli._IDEMPOTENCY_KEY.pattern == openapi.IDEMPOTENCY_KEY_PATTERN.pattern
    assert openapi.MAX_IDEMPOTENCY_KEY == 255  # the client's literal
