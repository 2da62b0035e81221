"""The service's own error hierarchy, mapped to HTTP problem details in one place (api.py).

Kubernetes errors never travel to clients as they are: their text can name
objects and identities a tenant should not learn about. The provisioner turns
them into one of these, with a detail written for the caller, and logs the raw
error next to the request id.
"""

from __future__ import annotations


class NsprovError(Exception):
    """Base class: an HTTP status, a short title and a detail for the client."""

    status = 500
    title = "Internal Server Error"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.detail!r})"


class BadRequest(NsprovError):
    status = 400
    title = "Bad Request"


class Unauthorized(NsprovError):
    status = 401
    title = "Unauthorized"


class Forbidden(NsprovError):
    """Authenticated, but not allowed: no tenant of the policy admits the identity."""

    status = 403
    title = "Forbidden"


class NotFound(NsprovError):
    status = 404
    title = "Not Found"


class Conflict(NsprovError):
    status = 409
    title = "Conflict"


class Unprocessable(NsprovError):
    """Well-formed, but it contradicts what the same request asked for before."""

    status = 422
    title = "Unprocessable Content"


class TooManyNamespaces(NsprovError):
    status = 429
    title = "Too Many Namespaces"


class ProvisioningFailed(NsprovError):
    """Kubernetes refused a step; the half-made namespace has been removed."""

    status = 500
    title = "Provisioning Failed"


class ClusterUnavailable(NsprovError):
    """The Kubernetes API server could not be reached or answered 5xx."""

    status = 503
    title = "Cluster Unavailable"
    retry_after = 5


class IssuerUnavailable(ClusterUnavailable):
    """An OIDC issuer's discovery document or keys could not be fetched."""

    title = "Issuer Unavailable"


class GrantUnusable(ClusterUnavailable):
    """The grant ClusterRole is missing, unreadable or unsafe: nothing new is handed out.

    A 503 (with Retry-After) rather than a 500: the request is fine and will work once
    an admin fixes the grant; reading and deleting namespaces keep working meanwhile.
    """

    title = "Grant Unusable"
    retry_after = 30
