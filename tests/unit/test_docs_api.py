"""docs/api.md is the OpenAPI document nsprov serves, rendered: a stale page fails here."""

from __future__ import annotations

from pathlib import Path

from tests import docs_api

PAGE = Path(__file__).resolve().parents[2] / "docs" / "api.md"


def test_the_api_reference_is_the_served_document() -> None:
    assert PAGE.read_text() == docs_api.render(docs_api.document()), (
        f"docs/api.md differs from the OpenAPI document; regenerate it: {docs_api.REGENERATE}"
    )


def test_every_route_and_schema_is_on_the_page() -> None:
    document = docs_api.document()
    page = docs_api.render(document)
    for path, operations in document["paths"].items():
        for method in operations:
            assert f"### {method.upper()} `{path}`" in page
    for name in document["components"]["schemas"]:
        assert f"### {name} " in page
