"""The OpenAPI 3.1 document of the public API, served at /openapi.json.

Written by hand because the contract is small and its wording matters more
than generation would allow; a unit test keeps it and the routes in step.
"""

from __future__ import annotations

from typing import Any

from nsprov import paging

_PROBLEM = {"$ref": "#/components/responses/Problem"}
_NAME = {
    "name": "name",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "maxLength": 63, "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"},
}
_TTL = {
    "name": "ttl",
    "in": "query",
    "required": False,
    "description": "Lifetime in Go duration syntax (30s, 5m, 1h30m); absent or 0 = the default; "
    "below the service's minimum (--min-ttl) or above its maximum (--max-ttl) = 400.",
    "schema": {
        "type": "string",
        "pattern": r"^(|0|(([0-9]+\.?[0-9]*|\.[0-9]+)(ns|us|\u00b5s|\u03bcs|ms|s|m|h))+)$",
        "example": "30m",
    },
}
_TTL_REQUIRED = {
    **_TTL,
    "required": True,
    "description": "The new lifetime from now, in Go duration syntax; required (400 without "
    "it), 0 = the default; below the minimum, above the maximum or past the total "
    "lifetime from creation (--max-lifetime) = 400.",
    "schema": {**_TTL["schema"], "minLength": 1},  # type: ignore[dict-item]
}
_SERVER = {
    "name": "server",
    "in": "query",
    "required": False,
    "description": "Kubernetes API URL written into the kubeconfig (absolute http/https URL).",
    "schema": {"type": "string", "format": "uri"},
}
_IDEMPOTENCY_KEY_QUERY = {
    "name": "idempotencyKey",
    "in": "query",
    "required": False,
    "description": "The Idempotency-Key of an earlier POST by the same caller: the answer "
    "holds the live namespace that POST made, or no item, and echoes the key (a server "
    "without this parameter would answer the whole list without it). For a client whose "
    "create response was lost (e.g. a CI job cancelled mid-request) and that must still "
    "delete it. Another caller using the same key finds nothing.",
    "schema": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": r"\S"},
}
_KEY = {
    "name": "key",
    "in": "query",
    "description": "A preview key (e.g. pr-42): names one namespace of the caller's that "
    "lives across requests, such as the pushes of one pull request. Another caller's same "
    "key names another namespace.",
    "schema": {
        "type": "string",
        "maxLength": 63,
        "pattern": r"^[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?$",
        "example": "pr-42",
    },
}
_LIMIT = {
    "name": "limit",
    "in": "query",
    "required": False,
    "description": f"At most this many items per page (default {paging.DEFAULT_LIMIT}, "
    f"at most {paging.MAX_LIMIT}). Items come ordered by name.",
    "schema": {"type": "integer", "minimum": 1, "maximum": paging.MAX_LIMIT},
}
_CONTINUE = {
    "name": "continue",
    "in": "query",
    "required": False,
    "description": "metadata.continue of the previous page: the next page starts after the "
    "last name that page held. Opaque. Pages are cut from the live list, not a snapshot: "
    "no name comes twice, and a namespace created or deleted meanwhile may or may not "
    "appear.",
    "schema": {"type": "string"},
}
_KUBECONFIG_HEADERS = {
    "Location": {"schema": {"type": "string"}},
    "X-Namespace": {"schema": {"type": "string"}},
    "X-Expires-At": {
        "description": "when the kubeconfig stops working: the namespace's expiry, or the "
        "token's when the API server grants a shorter token",
        "schema": {"type": "string", "format": "date-time"},
    },
    "X-Namespace-Expires-At": {
        "description": "when the namespace expires",
        "schema": {"type": "string", "format": "date-time"},
    },
}
_KUBECONFIG_CONTENT = {
    "application/yaml": {"schema": {"type": "object", "description": "a kubeconfig"}},
    "application/json": {"schema": {"$ref": "#/components/schemas/Provisioned"}},
}
# 403: authenticated, but no tenant of the policy file admits the identity.
_ERRORS = {status: _PROBLEM for status in ("400", "401", "403", "404", "429", "500", "503")}


def _operation(summary: str, op_id: str, responses: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "summary": summary,
        "operationId": op_id,
        "security": [{"bearer": []}],
        "responses": {**responses, **_ERRORS},
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
        },
        "201": {
            "description": "created (or, for a repeated Idempotency-Key, the same namespace)",
            "headers": _KUBECONFIG_HEADERS,
            "content": _KUBECONFIG_CONTENT,
        },
        "409": {
            **_PROBLEM,
            "description": "the Idempotency-Key's (or key's) namespace is being deleted or has "
            "expired (for a key: retry once it is gone), or the key clashes with a namespace "
            "nsprov cannot reuse",
        },
        "422": {
            **_PROBLEM,
            "description": "a replay of an Idempotency-Key asked for another ttl than the "
            "first request",
        },
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
            "returns the same namespace while it lives. Not together with key (400).",
            "schema": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": r"\S"},
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
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Deletion"}}},
        }
    },
    parameters=[_NAME],
)

_DELETE_KEYED = _operation(
    "Delete the caller's namespace for a preview key now",
    "deleteKeyedNamespace",
    {
        "202": {
            "description": "deletion started",
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Deletion"}}},
        }
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
                    }
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
                    }
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
                    },
                    "409": _PROBLEM,
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
                "responses": {"200": {"description": "OpenAPI document"}},
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
            "Problem": {
                "description": "RFC 9457 problem details",
                "content": {
                    "application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}
                },
            }
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
                "properties": {
                    "name": {"type": "string"},
                    "key": {"type": "string", "description": "the key, when deleted by key"},
                    "state": {"const": "MARKED_FOR_DELETION"},
                },
            },
        },
    },
}
