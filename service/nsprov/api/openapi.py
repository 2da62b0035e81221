"""The OpenAPI 3.1 document of the public API, served at /openapi.json.

Written by hand because the contract is small and its wording matters more
than generation would allow; a unit test keeps it and the routes in step.

The document is the whole contract (issue 24): every status an operation can
answer, each with when, and every constraint the service enforces on a
parameter, in its schema. Where a parser owns a syntax (ttl.TTL_PATTERN,
bundle.KEY_PATTERN, paging.MAX_LIMIT) the schema is built from it; the two
syntaxes only api.py checks (``server`` and the Idempotency-Key) are declared
here, and api.py checks against these very expressions. Each expression reads
alike in Python's ``re`` and in ECMA-262, JSON Schema's dialect, so what the
document refuses the service refuses, and the other way round: the schema-driven
fuzzer of tests/integration/test_openapi_fuzz.py holds both to it.

What the schemas cannot say is said in the descriptions: a ttl's bounds are the
caller's tenant's (--min-ttl, maxTTL, maxLifetime), ``continue`` takes only a
token the service handed out, and ``key`` and Idempotency-Key do not go together.
"""

from __future__ import annotations

import re
from typing import Any

from nsprov.core import paging, ttl
from nsprov.provision import bundle

MAX_IDEMPOTENCY_KEY = 255
IDEMPOTENCY_KEY_PATTERN = re.compile(r"[\t -~]*[!-~][\t -~]*")
"""An Idempotency-Key (header, or ``?idempotencyKey=``): printable ASCII (tabs and spaces
too) with at least one visible character, at most MAX_IDEMPOTENCY_KEY characters. ASCII
because a header carries nothing else reliably; the query parameter that looks a key up
takes the same."""
SERVER_PATTERN = re.compile(
    r"https?://([A-Za-z0-9._~-]+|\[[0-9A-Fa-f:.]+\])(:[0-9]{1,5})?(/[^?#\x00-\x20\x7f]*)?"
)
"""``?server=``: an absolute http(s) URL with a host name or [IPv6 address], an optional
port and path, and no credentials, query, fragment, spaces or control characters (it goes
into a kubeconfig as it is)."""


def _anchored(pattern: re.Pattern[str]) -> str:
    """A Python pattern meant for ``fullmatch``, as JSON Schema needs it (patterns search)."""
    return f"^(?:{pattern.pattern})$"


_PROBLEM_CONTENT = {
    "application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}
}


def _problem(description: str, **extra: Any) -> dict[str, Any]:
    return {"description": description, "content": _PROBLEM_CONTENT, **extra}


def _shared(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/responses/{name}"}


_NAME = {
    "name": "name",
    "in": "path",
    "required": True,
    "description": "A namespace name (an RFC 1123 label); any other is 404, as a namespace "
    "that is not the caller's is.",
    "schema": {
        "type": "string",
        "maxLength": 63,
        "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
        "example": "np-k3x9q2m7wd",
    },
}
_TTL_BOUNDS = (
    "at least the service's minimum (--min-ttl, 30s unless configured) and at most the "
    "caller's tenant's maxTTL (--max-ttl without a policy file, 24h unless configured); "
    "outside those bounds = 400. The bounds are configuration, so the schema can only "
    "give the syntax."
)
_TTL = {
    "name": "ttl",
    "in": "query",
    "required": False,
    "description": "Lifetime in Go duration syntax (30s, 5m, 1h30m, 1.5h) plus days (2d), "
    f"without a minus sign or spaces, at most {ttl.MAX_TTL_LENGTH} characters; absent, empty "
    "or 0 = the tenant's default; otherwise " + _TTL_BOUNDS,
    "schema": {
        "type": "string",
        "maxLength": ttl.MAX_TTL_LENGTH,
        "pattern": f"^(?:|{ttl.TTL_PATTERN.pattern})$",
        "example": "30m",
    },
}
_TTL_REQUIRED = {
    **_TTL,
    "required": True,
    "description": "The new lifetime from now, in the same syntax as POST's ttl; required "
    "(400 without it), 0 = the default; " + _TTL_BOUNDS + " Past the tenant's total "
    "lifetime from creation (maxLifetime, --max-lifetime) = 400 too.",
    "schema": {**_TTL["schema"], "minLength": 1},  # type: ignore[dict-item]
}
_SERVER = {
    "name": "server",
    "in": "query",
    "required": False,
    "description": "Kubernetes API URL written into the kubeconfig instead of the service's "
    "default: an absolute http(s) URL with a host name or [IPv6 address], an optional port "
    "and path; no credentials, query or fragment (400). Empty = the default.",
    "schema": {"type": "string", "pattern": f"^(?:|{SERVER_PATTERN.pattern})$"},
}
_IDEMPOTENCY_KEY_SCHEMA = {
    "type": "string",
    "minLength": 1,
    "maxLength": MAX_IDEMPOTENCY_KEY,
    "pattern": _anchored(IDEMPOTENCY_KEY_PATTERN),
}
_IDEMPOTENCY_KEY_QUERY = {
    "name": "idempotencyKey",
    "in": "query",
    "required": False,
    "description": "The Idempotency-Key of an earlier POST by the same caller: the answer "
    "holds the live namespace that POST made, or no item, and echoes the key (a server "
    "without this parameter would answer the whole list without it). For a client whose "
    "create response was lost (e.g. a CI job cancelled mid-request) and that must still "
    "delete it. Another caller using the same key finds nothing. limit and continue are "
    "checked as for the list (400) but change nothing: the answer is one page.",
    "schema": _IDEMPOTENCY_KEY_SCHEMA,
}
_KEY = {
    "name": "key",
    "in": "query",
    "description": "A preview key (e.g. pr-42): names one namespace of the caller's that "
    "lives across requests, such as the pushes of one pull request. Another caller's same "
    "key names another namespace. 1 to 63 letters, digits, '.', '_' or '-', beginning and "
    "ending with a letter or digit (400 otherwise).",
    "schema": {
        "type": "string",
        "minLength": 1,
        "maxLength": 63,
        "pattern": _anchored(bundle.KEY_PATTERN),
        "example": "pr-42",
    },
}
_LIMIT = {
    "name": "limit",
    "in": "query",
    "required": False,
    "description": f"At most this many items per page (default {paging.DEFAULT_LIMIT}, "
    f"at most {paging.MAX_LIMIT}; anything but a whole number in that range = 400). Items "
    "come ordered by name.",
    "schema": {"type": "integer", "minimum": 1, "maximum": paging.MAX_LIMIT, "example": 50},
}
_CONTINUE = {
    "name": "continue",
    "in": "query",
    "required": False,
    "description": "metadata.continue of the previous page: the next page starts after the "
    "last name that page held. Opaque: any value the service did not hand out is 400 "
    "(its syntax is base64url, at most 1024 characters; empty = the first page). Pages are "
    "cut from the live list, not a snapshot: no name comes twice, and a namespace created "
    "or deleted meanwhile may or may not appear.",
    "schema": {"type": "string", "maxLength": 1024, "pattern": "^[A-Za-z0-9_-]*$"},
}
_KUBECONFIG_HEADERS = {
    "Location": {
        "description": "the namespace's path (GET, PATCH and DELETE it there)",
        "schema": {"type": "string"},
    },
    "X-Namespace": {"description": "the namespace's name", "schema": {"type": "string"}},
    "X-Expires-At": {
        "description": "when the kubeconfig stops working: the namespace's expiry, or the "
        "token's when the API server grants a shorter token",
        "schema": {"type": "string", "format": "date-time"},
    },
    "X-Namespace-Expires-At": {
        "description": "when the namespace expires",
        "schema": {"type": "string", "format": "date-time"},
    },
    "Cache-Control": {
        "description": "no-store: the body holds a credential",
        "schema": {"type": "string"},
    },
}
_KUBECONFIG_CONTENT = {
    "application/yaml": {"schema": {"type": "object", "description": "a kubeconfig"}},
    "application/json": {"schema": {"$ref": "#/components/schemas/Provisioned"}},
}
_DELETION_CONTENT = {"application/json": {"schema": {"$ref": "#/components/schemas/Deletion"}}}
# What every authenticated operation may answer, whatever it does (components.responses
# says when); each operation adds its own 400, 404, 409, 422 and 429 with its reasons.
_AUTHENTICATED = {
    status: _shared(name)
    for status, name in (
        ("401", "Unauthorized"),
        ("403", "Forbidden"),
        ("408", "RequestTimeout"),
        ("413", "ContentTooLarge"),
        ("431", "HeadTooLarge"),
        ("500", "InternalError"),
        ("503", "Unavailable"),
    )
}
_BAD_QUERY = "a query parameter breaks its schema (the detail names it and why)"
_LINKS = {
    "getNamespace": {
        "operationId": "getNamespace",
        "parameters": {"name": "$response.header.X-Namespace"},
        "description": "the namespace just provisioned",
    },
    "extendNamespace": {
        "operationId": "extendNamespace",
        "parameters": {"name": "$response.header.X-Namespace", "ttl": "1h"},
    },
    "deleteNamespace": {
        "operationId": "deleteNamespace",
        "parameters": {"name": "$response.header.X-Namespace"},
    },
}


def _operation(summary: str, op_id: str, responses: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "summary": summary,
        "operationId": op_id,
        "security": [{"bearer": []}],
        "responses": dict(sorted({**responses, **_AUTHENTICATED}.items())),
        **extra,
    }


_CREATE = _operation(
    "Provision a namespace and return a kubeconfig scoped to it",
    "createNamespace",
    {
        "200": {
            "description": "with key: the caller's live namespace for that key, its expiry "
            "moved to now + ttl (never earlier than it was, never past the tenant's total "
            "lifetime from creation), with a fresh kubeconfig",
            "headers": _KUBECONFIG_HEADERS,
            "content": _KUBECONFIG_CONTENT,
            "links": _LINKS,
        },
        "201": {
            "description": "created (or, for a repeated Idempotency-Key, the same namespace, "
            "with the header Idempotent-Replayed: true)",
            "headers": {
                **_KUBECONFIG_HEADERS,
                "Idempotent-Replayed": {
                    "description": "true when this is the namespace an earlier POST with "
                    "the same Idempotency-Key made",
                    "schema": {"type": "string", "enum": ["true"]},
                },
            },
            "content": _KUBECONFIG_CONTENT,
            "links": _LINKS,
        },
        "400": _problem(
            f"{_BAD_QUERY}; or the ttl is outside its bounds, or past the tenant's total "
            "lifetime (maxLifetime); or both key and Idempotency-Key were sent"
        ),
        "409": _problem(
            "the Idempotency-Key's (or key's) namespace is being deleted or has expired "
            "(for a key: retry once it is gone), or the key clashes with a namespace nsprov "
            "cannot reuse, or a keyed namespace kept changing while it was read"
        ),
        "422": _problem(
            "a replay of an Idempotency-Key asked for another ttl than the first request"
        ),
        "429": _problem(
            "a cap on namespaces is full (per owner, per tenant or in total; a namespace "
            "being deleted holds its slot until it is gone); the detail names the cap"
        ),
    },
    parameters=[
        _TTL,
        _SERVER,
        {**_KEY, "required": False},
        {
            "name": "Idempotency-Key",
            "in": "header",
            "required": False,
            "description": "A retried POST with the same key (and token) and the same ttl "
            "returns the same namespace while it lives (another ttl = 422). 1 to "
            f"{MAX_IDEMPOTENCY_KEY} printable ASCII characters, not all spaces. Not "
            "together with key (400).",
            "schema": _IDEMPOTENCY_KEY_SCHEMA,
        },
    ],
)
_DELETE = _operation(
    "Delete a namespace now (asynchronously: GET shows it MARKED_FOR_DELETION until it is "
    "gone, and until then it holds its cap slot)",
    "deleteNamespace",
    {
        "202": {
            "description": "deletion started (or had started already)",
            "content": _DELETION_CONTENT,
        },
        "404": _problem(
            "no such namespace of the caller's (a namespace nsprov did not make, or another "
            "owner's, is not found either)"
        ),
    },
    parameters=[_NAME],
)

_DELETE_KEYED = _operation(
    "Delete the caller's namespace for a preview key now",
    "deleteKeyedNamespace",
    {
        "202": {"description": "deletion started", "content": _DELETION_CONTENT},
        "400": _problem("key is missing (a collection DELETE never deletes all) or malformed"),
        "404": _problem("the caller has no namespace for this key"),
    },
    parameters=[{**_KEY, "required": True}],
)

DOCUMENT: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "nsprov",
        "version": "1",
        "description": "Short-lived Kubernetes namespaces with kubeconfigs scoped to them.",
    },
    "paths": {
        "/api/v1/namespaces": {
            "post": _CREATE,
            "get": _operation(
                "List the caller's namespaces, or find the one a POST with an Idempotency-Key made",
                "listNamespaces",
                {
                    "200": {
                        "description": "the caller's namespaces, live and being deleted "
                        "(until they are gone); with idempotencyKey, zero or one live one",
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "required": ["items"],
                                    "properties": {
                                        "items": {
                                            "type": "array",
                                            "items": {"$ref": "#/components/schemas/Namespace"},
                                        },
                                        "idempotencyKey": {
                                            "type": "string",
                                            "description": "the idempotencyKey parameter, "
                                            "echoed when it was given",
                                        },
                                        "metadata": {
                                            "type": "object",
                                            "description": "without idempotencyKey: where "
                                            "the next page starts; empty on the last page",
                                            "properties": {
                                                "continue": {"type": "string"},
                                                "remainingItemCount": {"type": "integer"},
                                            },
                                        },
                                    },
                                }
                            }
                        },
                    },
                    "400": _problem(_BAD_QUERY + ", or continue is not a token it handed out"),
                },
                parameters=[_LIMIT, _CONTINUE, _IDEMPOTENCY_KEY_QUERY],
            ),
            "delete": _DELETE_KEYED,
        },
        "/api/v1/namespaces/{name}": {
            "get": _operation(
                "One of the caller's namespaces, with its tenant and its quota's usage",
                "getNamespace",
                {
                    "200": {
                        "description": "the namespace",
                        "content": {
                            "application/json": {
                                "schema": {"$ref": "#/components/schemas/NamespaceStatus"}
                            }
                        },
                    },
                    "404": _problem(
                        "no such namespace of the caller's (a namespace nsprov did not make, "
                        "or another owner's, is not found either)"
                    ),
                },
                parameters=[_NAME],
            ),
            "patch": _operation(
                "Extend a namespace: new expiry = now + ttl; returns a fresh kubeconfig",
                "extendNamespace",
                {
                    "200": {
                        "description": "extended",
                        "headers": _KUBECONFIG_HEADERS,
                        "content": _KUBECONFIG_CONTENT,
                        "links": {"getNamespace": _LINKS["getNamespace"]},
                    },
                    "400": _problem(
                        f"{_BAD_QUERY} (ttl is required); or the ttl is outside its bounds, "
                        "or the new expiry is past the tenant's total lifetime from creation"
                    ),
                    "404": _problem(
                        "no such namespace of the caller's (a namespace nsprov did not make, "
                        "or another owner's, is not found either)"
                    ),
                    "409": _problem(
                        "the namespace is being deleted or has expired (the controller may be "
                        "deleting it), or it changed meanwhile (retry)"
                    ),
                },
                parameters=[_NAME, _TTL_REQUIRED, _SERVER],
            ),
            "delete": _DELETE,
        },
        "/api/v1/namespace": {"post": {**_CREATE, "operationId": "createNamespaceAlias"}},
        "/api/v1/namespace/{name}": {"delete": {**_DELETE, "operationId": "deleteNamespaceAlias"}},
        "/openapi.json": {
            "get": {
                "summary": "This document",
                "operationId": "openapi",
                "responses": {
                    "200": {
                        "description": "OpenAPI document",
                        "content": {"application/json": {"schema": {"type": "object"}}},
                    },
                    **{
                        status: response
                        for status, response in _AUTHENTICATED.items()
                        if status in ("408", "413", "431", "503")
                    },
                },
            }
        },
    },
    "components": {
        "securitySchemes": {
            "bearer": {
                "type": "http",
                "scheme": "bearer",
                "description": "A token from nsprov's token file, or an OIDC ID token of an "
                "issuer its policy file trusts (GitHub Actions, GitLab CI, Kubernetes).",
            }
        },
        "responses": {
            "Unauthorized": _problem(
                "no bearer token, another scheme, a token longer than the service takes, or a "
                "token it does not accept (unknown, expired, revoked, an untrusted issuer)",
                headers={
                    "WWW-Authenticate": {
                        "description": 'Bearer realm="nsprov"',
                        "schema": {"type": "string"},
                    }
                },
            ),
            "Forbidden": _problem(
                "authenticated, but no tenant of the policy file admits the identity, or the "
                "token belongs to a namespace that may not provision (e.g. one that is gone)"
            ),
            "RequestTimeout": _problem(
                "the request's head and body did not all arrive within the read timeout "
                "(--request-read-timeout, 10s unless configured) of its first byte; the "
                "connection is closed"
            ),
            "ContentTooLarge": _problem(
                "a request body above --max-request-body bytes (no route reads a body); the "
                "connection is closed"
            ),
            "HeadTooLarge": _problem(
                "the request line and header fields together are above --max-request-head bytes "
                "(a bearer token must be well below that); the connection is closed"
            ),
            "InternalError": _problem(
                "Kubernetes refused a step (the half-made namespace has been removed), or an "
                "unexpected error; the detail names the request id the log lines carry"
            ),
            "Unavailable": _problem(
                "the Kubernetes API server (or an OIDC issuer) cannot be reached or answered "
                "5xx; a grant ClusterRole is missing or unsafe, so nothing new is handed out; "
                "or the replica is handling as many requests as it takes at once",
                headers={
                    "Retry-After": {
                        "description": "seconds to wait before retrying",
                        "schema": {"type": "string", "pattern": "^[0-9]+$"},
                    }
                },
            ),
        },
        "schemas": {
            "Problem": {
                "type": "object",
                "required": ["type", "title", "status", "detail"],
                "properties": {
                    "type": {"type": "string"},
                    "title": {"type": "string"},
                    "status": {"type": "integer"},
                    "detail": {"type": "string"},
                    "requestId": {"type": "string"},
                },
            },
            "Provisioned": {
                "type": "object",
                "required": ["namespace", "expiresAt", "namespaceExpiresAt", "kubeconfig"],
                "properties": {
                    "namespace": {"type": "string"},
                    "expiresAt": {"type": "string", "format": "date-time"},
                    "namespaceExpiresAt": {"type": "string", "format": "date-time"},
                    "kubeconfig": {"type": "string"},
                },
            },
            "Namespace": {
                "type": "object",
                "required": ["name", "owner", "tenant", "createdAt", "expiresAt", "state"],
                "properties": {
                    "name": {"type": "string"},
                    "owner": {"type": "string"},
                    "tenant": {
                        "type": ["string", "null"],
                        "description": "the policy file's tenant that made it; null without one",
                    },
                    "createdAt": {"type": "string", "format": "date-time"},
                    "expiresAt": {"type": "string", "format": "date-time"},
                    "state": {
                        "enum": ["ACTIVE", "MARKED_FOR_DELETION"],
                        "description": "MARKED_FOR_DELETION: its deletion has begun; it holds "
                        "its owner's and tenant's cap slots until it is gone",
                    },
                    "deletionStartedAt": {
                        "type": "string",
                        "format": "date-time",
                        "description": "only when MARKED_FOR_DELETION: when its deletion began",
                    },
                    "blockedBy": {
                        "type": "array",
                        "description": "only when MARKED_FOR_DELETION: what Kubernetes' "
                        "namespace controller says still keeps it (its status conditions: "
                        "resources remaining and finalizers remaining, named; content it "
                        "failed to delete, by its condition only: Kubernetes' error text goes "
                        "to the operator); empty until it has looked",
                        "items": {"$ref": "#/components/schemas/Blocker"},
                    },
                },
            },
            "Blocker": {
                "type": "object",
                "required": ["condition", "message"],
                "properties": {
                    "condition": {
                        "type": "string",
                        "description": "the Namespace condition, e.g. "
                        "NamespaceFinalizersRemaining, NamespaceContentRemaining",
                    },
                    "message": {
                        "type": "string",
                        "description": "its message, naming the resources or finalizers",
                    },
                },
            },
            "NamespaceStatus": {
                "allOf": [
                    {"$ref": "#/components/schemas/Namespace"},
                    {
                        "type": "object",
                        "properties": {
                            "quota": {
                                "description": "the namespace's ResourceQuota "
                                "namespace-provisioner as Kubernetes reports it (status; until "
                                "the quota controller has counted, hard is the spec's and used "
                                "is empty); null when the namespace has none",
                                "oneOf": [
                                    {"type": "null"},
                                    {
                                        "type": "object",
                                        "required": ["hard", "used"],
                                        "properties": {
                                            "hard": {"$ref": "#/components/schemas/Quantities"},
                                            "used": {"$ref": "#/components/schemas/Quantities"},
                                        },
                                    },
                                ],
                            }
                        },
                    },
                ]
            },
            "Quantities": {
                "type": "object",
                "description": "resource name -> Kubernetes quantity (e.g. pods: '3', "
                "requests.memory: 512Mi)",
                "additionalProperties": {"type": "string"},
            },
            "Deletion": {
                "type": "object",
                "required": ["name", "state"],
                "properties": {
                    "name": {"type": "string"},
                    "key": {"type": "string", "description": "the key, when deleted by key"},
                    "state": {"const": "MARKED_FOR_DELETION"},
                },
            },
        },
    },
}
