"""What the service is configured with, and each setting's flag: declared here once.

Every field that is a flag of ``nsprov serve`` carries its help text and its
kind (duration, count, bool, ...) in the field's metadata; cli.py turns each
into a click option named ``--<field-name>`` (underscores as dashes) with the
environment variable ``NSPROV_<FIELD_NAME>`` and the field's own default. A
default therefore lives in exactly one place, and the help and the README show
the same value the service uses. This module stays free of click and of the
server's libraries so that the client can import it cheaply.
"""

from __future__ import annotations

from dataclasses import MISSING, Field, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

Kind = Literal["text", "duration", "count", "bool", "path", "choice", "token"]
"""How a flag's text becomes a value: duration = Go duration in seconds, count = an
integer >= 0, bool = Go's ``--flag`` / ``--flag=false``, token = one token for owner
``default``."""

LOG_FORMATS = ("text", "json")
LOG_LEVELS = ("debug", "info", "warning", "warn", "error", "none", "all")
POD_SECURITY_LEVELS = ("", "privileged", "baseline", "restricted")


def flag(
    default: Any,
    help: str,
    *,
    kind: Kind = "text",
    name: str | None = None,
    choices: tuple[str, ...] = (),
    shown: str | None = None,
) -> Any:
    """A Settings field that is also a ``serve`` flag.

    ``name`` overrides the flag name derived from the field's; ``shown`` is the
    default as help prints it when the value alone would mislead (None = "nsprov
    works it out").
    """
    metadata = {"help": help, "kind": kind, "name": name, "choices": choices, "shown": shown}
    if isinstance(default, dict):
        return field(default_factory=dict, repr=False, metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass(frozen=True)
class FlagSpec:
    """One ``serve`` flag as declared on a Settings field."""

    field: str
    name: str
    help: str
    kind: Kind
    default: Any
    choices: tuple[str, ...]
    shown: str | None

    @property
    def env(self) -> str:
        return "NSPROV_" + self.name.upper().replace("-", "_")


@dataclass(frozen=True)
class Settings:
    kubeconfig: str | None = flag(
        None,
        "kubeconfig of the cluster nsprov manages",
        kind="path",
        shown="in-cluster, then the usual lookup",
    )
    """Kubeconfig to talk to the cluster with; None = in-cluster config, else the usual lookup."""

    listen: str = flag(":8080", "public API address host:port")
    """host:port of the public API (an empty host means every interface)."""

    listen_internal: str = flag(":9090", "healthz/readyz/metrics address host:port")
    """host:port of /healthz, /readyz and /metrics."""

    server: str | None = flag(
        None, "Kubernetes API URL written into kubeconfigs", shown="the URL nsprov uses"
    )
    """Kubernetes API URL written into kubeconfigs; None = the URL nsprov itself uses."""

    cluster_role: str = flag("namespace-provisioner-grant", "ClusterRole granted in each namespace")
    """ClusterRole each namespace's RoleBinding refers to: what a tenant may do."""

    ttl: float = flag(3600.0, "default namespace lifetime (Go duration)", kind="duration")
    """Default namespace lifetime in seconds."""

    max_ttl: float = flag(86400.0, "longest lifetime a request may ask for", kind="duration")
    """Longest lifetime a request may ask for, in seconds."""

    min_ttl: float = flag(30.0, "shortest lifetime a request may ask for", kind="duration")
    """Shortest lifetime a request may ask for, in seconds."""

    max_lifetime: float = flag(
        259200.0, "longest total lifetime of a namespace, extensions included", kind="duration"
    )
    """Longest time a namespace may live from its creation, however often it is extended."""

    adopt_ttl: float = flag(
        86400.0, "lifetime given to a labelled namespace that has no expiry", kind="duration"
    )
    """Lifetime the controller gives a managed namespace found without an expiry label."""

    policy_file: Path | None = flag(None, "tenants and identities (YAML)", kind="path")
    """Policy file mapping identities to tenants; None = every token owner alike."""

    prefix: str = flag("np", "namespace name prefix")
    """Namespace name prefix: names are ``<prefix>-<random>``."""

    selector: str = flag(
        "controller.observatorium.io=namespace-provisioner",
        "key=value label on everything nsprov creates",
    )
    """``key=value`` label on everything nsprov creates; nothing without it is touched."""

    tokens: dict[str, str] = flag(
        {}, "a single bearer token (owner 'default'); prefer the env", kind="token", name="token"
    )
    """Static ``owner -> token`` pairs (from --token / NSPROV_TOKEN)."""

    token_file: Path | None = flag(
        None, "file of 'name: token' lines, re-read when it changes", kind="path"
    )
    """File of ``name: token`` pairs, re-read when it changes."""

    ca_file: Path | None = flag(
        None, "CA bundle written into kubeconfigs", kind="path", shown="the CA nsprov trusts"
    )
    """CA bundle written into kubeconfigs, when the client's CA is not the right one."""

    max_namespaces: int = flag(0, "cap on live namespaces in total (0 = none)", kind="count")
    """Cap on live managed namespaces in total (0 = no cap)."""

    max_namespaces_per_owner: int = flag(
        0, "cap on live namespaces per token owner (0 = none)", kind="count"
    )
    """Cap on live managed namespaces per token owner (0 = no cap)."""

    pool_size: int = flag(
        0,
        "ready namespaces kept for the flags' profile, without a policy file (0 = no pool)",
        kind="count",
    )
    """Namespaces made in advance (no owner, no token) so a POST only claims one; with a
    policy file, ``pool:`` on a tenant or the defaults says it instead."""

    pool_max_age: float = flag(
        3600.0, "a pooled namespace not claimed by then expires", kind="duration"
    )
    """Seconds a pooled namespace waits to be claimed before it expires (and is made anew)."""

    pool_tokens_ahead: bool = flag(
        False,
        "hold a token, minted ahead for the tenant's default ttl, for each ready pooled "
        "namespace, so a claim of that ttl is one write",
        kind="bool",
    )
    """Each replica holds a token for every ready pooled namespace (pooltokens.py): a claim
    of the pool's default ttl then waits for its write only, not for a TokenRequest too.
    Each is minted again about every 45 s, so that it ends no later than a token minted at
    the claim would. Off by default: issue 21 asks that a pooled namespace have no token
    until it is claimed, and the re-minting costs TokenRequests while nobody claims."""

    first_call_check: bool = flag(
        True,
        "before answering a create, wait (5 s at most) until the API server's authorizer "
        "allows the new ServiceAccount its grant",
        kind="bool",
    )
    """Ask SubjectAccessReviews until the fresh RoleBindings are in force, so a job's first
    call is not a 403; off only to measure what it spares (tests.bench pool)."""

    pod_security: str = flag(
        "baseline",
        "Pod Security level enforced in each namespace ('' = none)",
        kind="choice",
        choices=POD_SECURITY_LEVELS,
    )
    """Pod Security Admission level enforced in each namespace ('' = no label)."""

    request_timeout: float = flag(30.0, "timeout of each Kubernetes call", kind="duration")
    """Seconds any single Kubernetes call may take."""

    concurrency: int = flag(
        40, "Kubernetes connections for requests, and worker threads", kind="count"
    )
    """Worker threads for Kubernetes calls; the client's connection pool has the same size."""

    allow_unsafe_grant: bool = flag(
        False, "start even if the grant lets tenants escalate", kind="bool"
    )
    """Start even when the grant ClusterRole lets tenants edit Namespaces or RBAC."""

    controller: bool = flag(True, "run the expiry/repair controller", kind="bool")
    """Run the expiry/repair controller in this process."""

    leader_elect: bool = flag(True, "take a Lease before the controller acts", kind="bool")
    """Take a Lease before the controller acts (needed with more than one replica)."""

    leader_elect_namespace: str = flag(
        "default", "namespace of the Lease", shown="the pod's namespace, else default"
    )
    """Namespace of the Lease (in a cluster: the pod's own namespace)."""

    leader_elect_lease_name: str = flag("nsprov-controller", "name of the Lease")
    """Name of the Lease."""

    leader_elect_lease_duration: float = flag(
        15.0, "a successor takes over this long after the last renewal", kind="duration"
    )
    """Seconds a leader's lease lasts without renewal; a successor waits this long."""

    resync_period: float = flag(300.0, "full pass over every namespace this often", kind="duration")
    """Seconds between full passes over every managed namespace (the safety net)."""

    stuck_after: float = flag(
        600.0,
        "report a namespace still being deleted this long after its deletion began",
        kind="duration",
    )
    """Seconds after which a namespace whose deletion began and that is still there is
    reported as stuck (gauge, Event, one log line): something keeps it, and its cap slot."""

    log_level: str = flag("info", "log verbosity", kind="choice", choices=LOG_LEVELS)
    """How much nsprov logs: debug (= all) to error, or none."""

    log_format: str = flag(
        "text", "log lines as text or JSON objects", kind="choice", choices=LOG_FORMATS
    )
    """text: one readable line per record; json: one JSON object per line, for a log shipper."""

    access_log: bool = flag(True, "one log line per API request", kind="bool")
    """Log each API request: method, route template, status, duration, owner and tenant."""

    max_request_head: int = flag(
        16384, "largest request head in bytes, request line and headers (431)", kind="count"
    )
    """Bytes of request line and header fields a request may have; more is a 431."""

    max_request_body: int = flag(65536, "largest request body in bytes (413)", kind="count")
    """Bytes of body a request may send (nsprov's routes read none); more is a 413."""

    request_read_timeout: float = flag(
        10.0, "time a request's head and body may take to arrive (408)", kind="duration"
    )
    """Seconds from a request's first byte (a connection's accept) until head and body are in."""

    max_connections: int = flag(
        1024, "open connections per listener; more are closed at once", kind="count"
    )
    """Open connections each listener keeps; together they hold at most this many heads."""

    max_requests_in_flight: int = flag(
        256, "API requests handled at once; more get 503 + Retry-After", kind="count"
    )
    """API requests being handled at once (waiting for a worker thread included)."""


def flag_specs() -> list[FlagSpec]:
    """Every ``serve`` flag, in the order the fields are declared."""
    specs = []
    for f in fields(Settings):
        if "kind" in f.metadata:
            specs.append(_spec(f))
    return specs


def _spec(f: Field[Any]) -> FlagSpec:
    meta = f.metadata
    default = f.default if f.default is not MISSING else None
    return FlagSpec(
        field=f.name,
        name=meta["name"] or f.name.replace("_", "-"),
        help=meta["help"],
        kind=meta["kind"],
        default=default,
        choices=meta["choices"],
        shown=meta["shown"],
    )
