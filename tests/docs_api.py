"""docs/api.md, rendered from the OpenAPI document nsprov serves at /openapi.json.

``python -m tests.docs_api > docs/api.md`` (``make docs-api``) writes it;
tests/unit/test_docs_api.py fails when the page and the document differ. The
document is written by hand for its wording (its module says why), so the page
repeats that wording rather than describing the routes again: one source, and a
reader of the site sees what a client generator sees.
"""

from __future__ import annotations

import importlib
import json
import sys
from typing import Any

REGENERATE = "make docs-api  (or: .venv/bin/python -m tests.docs_api > docs/api.md)"


def document() -> dict[str, Any]:
    """The document /openapi.json answers with, wherever the package keeps its module."""
    for name in ("nsprov.api.routes.openapi", "nsprov.api.openapi"):
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        found = getattr(module, "DOCUMENT", None)
        if found is None and callable(getattr(module, "document", None)):
            found = module.document()
        if isinstance(found, dict):
            return found
    raise ImportError("no OpenAPI document in nsprov.api.routes.openapi or nsprov.api.openapi")


def _cell(text: object) -> str:
    """Text that stays in one Markdown table cell: one line, and a ``|`` outside a code span
    escaped (MkDocs' tables do not split cells inside one, and show an escape there as is)."""
    parts = " ".join(str(text).split()).split("`")
    return "`".join(p if i % 2 else p.replace("|", "\\|") for i, p in enumerate(parts))


def _anchor(ref: str) -> str:
    return "schema-" + ref.rsplit("/", 1)[1].lower()


def _type(schema: dict[str, Any]) -> str:
    """A schema in a few words: its type, or a link to the named schema it refers to."""
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[1]
        return f"[{name}](#{_anchor(schema['$ref'])})"
    if "enum" in schema:
        return "one of " + ", ".join(f"`{value}`" for value in schema["enum"])
    for combinator, word in (("oneOf", " or "), ("anyOf", " or "), ("allOf", " and ")):
        if combinator in schema:
            return word.join(_type(part) for part in schema[combinator])
    kind = schema.get("type", "any")
    words = " or ".join(kind) if isinstance(kind, list) else kind
    if kind == "array" and "items" in schema:
        words = f"array of {_type(schema['items'])}"
    if kind == "object" and "additionalProperties" in schema:
        extra = schema["additionalProperties"]
        words = f"object of {_type(extra) if isinstance(extra, dict) else 'any'}"
    details = []
    if "format" in schema:
        details.append(schema["format"])
    for key, label in (
        ("minimum", "min"), ("maximum", "max"), ("minLength", "min length"),
        ("maxLength", "max length"), ("default", "default"),
    ):  # fmt: skip
        if key in schema:
            details.append(f"{label} {json.dumps(schema[key])}")
    if "pattern" in schema:
        details.append(f"pattern `{schema['pattern']}`")
    if "example" in schema:
        details.append(f"e.g. `{schema['example']}`")
    return words + (f" ({', '.join(details)})" if details else "")


def _resolve(doc: dict[str, Any], item: dict[str, Any]) -> dict[str, Any]:
    if "$ref" not in item:
        return item
    section, name = item["$ref"].split("/")[-2:]
    resolved: dict[str, Any] = doc["components"][section][name]
    return {**resolved, **{k: v for k, v in item.items() if k != "$ref"}}


def _operation(doc: dict[str, Any], method: str, path: str, op: dict[str, Any]) -> list[str]:
    lines = [f"### {method.upper()} `{path}` {{ #{op['operationId'].lower()} }}", ""]
    lines += [op["summary"] + ".", ""]
    if op.get("description"):
        lines += [" ".join(op["description"].split()), ""]
    lines.append(
        "Needs `Authorization: Bearer <token>`." if op.get("security") else "No token needed."
    )
    lines.append("")
    parameters = [_resolve(doc, p) for p in op.get("parameters", [])]
    if parameters:
        lines += ["| parameter | in | required | type | meaning |", "|---|---|---|---|---|"]
        lines += [
            f"| `{p['name']}` | {p['in']} | {'yes' if p.get('required') else 'no'} | "
            f"{_cell(_type(p.get('schema', {})))} | {_cell(p.get('description', ''))} |"
            for p in parameters
        ]
        lines.append("")
    if "requestBody" in op:
        body = _resolve(doc, op["requestBody"])
        kinds = ", ".join(f"`{kind}`" for kind in body.get("content", {}))
        lines += [f"Request body: {kinds}. {body.get('description', '')}".rstrip(), ""]
    lines += ["| status | meaning | body | headers |", "|---|---|---|---|"]
    for status, response in sorted(op["responses"].items()):
        answer = _resolve(doc, response)
        bodies = [
            f"`{kind}`" + (f": {_type(media['schema'])}" if "schema" in media else "")
            for kind, media in answer.get("content", {}).items()
        ]
        headers = ", ".join(f"`{name}`" for name in answer.get("headers", {}))
        lines.append(
            f"| {status} | {_cell(answer.get('description', ''))} | "
            f"{_cell('; '.join(bodies))} | {headers} |"
        )
    return [*lines, ""]


def _schema(name: str, schema: dict[str, Any]) -> list[str]:
    lines = [f"### {name} {{ #{_anchor('#/' + name)} }}", ""]
    if schema.get("description"):
        lines += [" ".join(schema["description"].split()), ""]
    parts = schema.get("allOf", [schema])
    for part in parts:
        if "$ref" in part:
            lines += [f"Everything in {_type(part)}, and:", ""]
            continue
        properties = part.get("properties", {})
        if not properties:
            lines += [f"Type: {_type(part)}.", ""]
            continue
        required = set(part.get("required", []))
        lines += ["| field | type | required | meaning |", "|---|---|---|---|"]
        lines += [
            f"| `{field}` | {_cell(_type(spec))} | {'yes' if field in required else 'no'} | "
            f"{_cell(spec.get('description', ''))} |"
            for field, spec in properties.items()
        ]
        lines.append("")
    return lines


def render(doc: dict[str, Any]) -> str:
    info = doc["info"]
    lines = [
        "# API reference",
        "",
        "<!-- Generated from the OpenAPI document by tests/docs_api.py: do not edit by hand."
        f" Regenerate with {REGENERATE}. -->",
        "",
        f"{info['description']} This page is the OpenAPI {doc['openapi']} document nsprov "
        "serves at `/openapi.json` (API version "
        f"{info['version']}), as tables. How the routes behave together (idempotency, "
        "preview keys, paging, caps, what each error means) is in [The HTTP API](http-api.md).",
        "",
        "Errors are `application/problem+json` (RFC 9457) with a `requestId` that nsprov's "
        "log lines for that request carry too: see [Problem](#schema-problem).",
        "",
        "## Routes",
        "",
    ]
    for path, operations in doc["paths"].items():
        for method, op in operations.items():
            lines += _operation(doc, method, path, op)
    lines += ["## Schemas", ""]
    for name, schema in doc["components"].get("schemas", {}).items():
        lines += _schema(name, schema)
    schemes = doc["components"].get("securitySchemes", {})
    if schemes:
        lines += ["## Authentication", ""]
        for name, scheme in schemes.items():
            kind = scheme.get("scheme", scheme.get("type", ""))
            text = scheme.get("description", "")
            lines += [f"- `{name}`: {kind} {text}".rstrip()]
        lines.append("")
    return "\n".join(lines).rstrip("\n") + "\n"


if __name__ == "__main__":
    sys.stdout.write(render(document()))
