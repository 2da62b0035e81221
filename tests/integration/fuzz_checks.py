"""Schemathesis hooks for tests/integration/test_openapi_fuzz.py (loaded by SCHEMATHESIS_HOOKS).

Two checks replace schemathesis' own, each the same check except for what the contract
says by design:

- ``positive_data_acceptance``: except the few refusals of schema-valid requests that no
  JSON Schema of one parameter can express, each named by its problem detail, so any
  other refusal of a schema-valid request still fails the run;
- ``use_after_free``: except a GET (of the namespace or of the list) that shows a deleted
  namespace as MARKED_FOR_DELETION. DELETE is asynchronous (202): the namespace stays visible, so
  marked, until Kubernetes has emptied it and it is gone; any other answer after a
  DELETE still fails the run.
"""

from __future__ import annotations

import re

import schemathesis
from schemathesis.specs.openapi.checks import positive_data_acceptance, use_after_free

BY_DESIGN = {
    # The ttl's bounds are configuration, per tenant (--min-ttl, maxTTL, maxLifetime): the
    # schema gives the syntax and the description the bounds.
    400: re.compile(
        r"^ttl .* (is below the minimum|exceeds the maximum|exceeds the total lifetime)"
        r"|^the new expiry .* past the total lifetime"
        # An opaque token: only one the service handed out is a page; the schema gives its
        # alphabet and length.
        r"|^continue is not a token this service handed out$"
        # Two parameters that do not go together; OpenAPI has no word for that.
        r"|^send either \?key= or Idempotency-Key"
    ),
    # A replayed Idempotency-Key with another ttl than its first request: two requests
    # together, which no schema of one request can rule out.
    422: re.compile(r"^this Idempotency-Key was first used with ttl "),
}


@schemathesis.check
def positive_data_acceptance_by_contract(
    ctx: schemathesis.CheckContext, response: schemathesis.Response, case: schemathesis.Case
) -> bool | None:
    try:
        return positive_data_acceptance(ctx, response, case)
    except AssertionError:
        if _by_design(response):
            return None
        raise


def _by_design(response: schemathesis.Response) -> bool:
    pattern = BY_DESIGN.get(response.status_code)
    if pattern is None or "application/problem+json" not in str(response.headers):
        return False
    body = response.json()
    detail = body.get("detail") if isinstance(body, dict) else None
    return isinstance(detail, str) and pattern.search(detail) is not None


@schemathesis.check
def use_after_free_by_contract(
    ctx: schemathesis.CheckContext, response: schemathesis.Response, case: schemathesis.Case
) -> bool | None:
    try:
        return use_after_free(ctx, response, case)
    except AssertionError:
        if case.method.upper() == "GET" and _shown_as_going(response, _deleted(ctx, case)):
            return None
        raise


def _deleted(ctx: schemathesis.CheckContext, case: schemathesis.Case) -> set[str]:
    """The namespaces the DELETEs of this case's chain named (what use_after_free looks at)."""
    return {
        related.path_parameters["name"]
        for related in ctx.internals.find_related(case_id=case.id)
        if related.method.upper() == "DELETE" and (related.path_parameters or {}).get("name")
    }


def _shown_as_going(response: schemathesis.Response, deleted: set[str]) -> bool:
    """Whether the answer (one namespace, or a list) shows each deleted one, if at all, as
    MARKED_FOR_DELETION."""
    body = response.json() if response.status_code == 200 else None
    if not isinstance(body, dict) or not deleted:
        return False
    items = body.get("items", [body])
    states = {item.get("name"): item.get("state") for item in items if isinstance(item, dict)}
    return all(states.get(name, "MARKED_FOR_DELETION") == "MARKED_FOR_DELETION" for name in deleted)
