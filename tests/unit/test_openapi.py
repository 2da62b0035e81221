from __future__ import annotations

from starlette.routing import Route

from nsprov import api, openapi


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
