from __future__ import annotations

from starlette.routing import Route

from nsprov import api, openapi
from nsprov.deletion import Blocker
from nsprov.provisioner import NamespaceInfo, NamespaceStatus, QuotaStatus


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


def test_operation_ids_are_unique_and_errors_are_problems() -> None:
    operations = [op for item in openapi.DOCUMENT["paths"].values() for op in item.values()]
    ids = [op["operationId"] for op in operations]
    assert len(ids) == len(set(ids))
    for op in operations:
        if op.get("security"):
            assert op["responses"]["401"] == {"$ref": "#/components/responses/Problem"}


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
    assert set(going) == set(properties)
    assert {info.to_json()["state"], going["state"]} == set(properties["state"]["enum"])
    blocker = schemas["Blocker"]
    assert set(going["blockedBy"][0]) == set(blocker["required"]) == set(blocker["properties"])
    status = NamespaceStatus(info, QuotaStatus({"pods": "3"}, {"pods": "1"})).to_json()
    extra = schemas["NamespaceStatus"]["allOf"][1]["properties"]
    assert set(status) == set(info.to_json()) | set(extra)
    quota = next(s for s in extra["quota"]["oneOf"] if s["type"] == "object")
    assert set(status["quota"]) == set(quota["required"]) == set(quota["properties"])
