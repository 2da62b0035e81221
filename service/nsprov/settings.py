"""What the service is configured with; filled by cli.py from flags and NSPROV_* env vars."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Settings:
    kubeconfig: str | None = None
    """Kubeconfig to talk to the cluster with; None = in-cluster config, else the usual lookup."""

    listen: str = ":8080"
    """host:port of the public API (an empty host means every interface)."""

    listen_internal: str = ":9090"
    """host:port of /healthz, /readyz and /metrics."""

    server: str | None = None
    """Kubernetes API URL written into kubeconfigs; None = the URL nsprov itself uses."""

    cluster_role: str = "namespace-provisioner-grant"
    """ClusterRole each namespace's RoleBinding refers to: what a tenant may do."""

    ttl: float = 3600.0
    """Default namespace lifetime in seconds."""

    max_ttl: float = 86400.0
    """Longest lifetime a request may ask for, in seconds."""

    min_ttl: float = 30.0
    """Shortest lifetime a request may ask for, in seconds: below it a namespace is dead on
    arrival."""

    max_lifetime: float = 259200.0
    """Longest a namespace may live from its creation, extensions included, in seconds."""

    prefix: str = "np"
    """Namespace name prefix: names are ``<prefix>-<random>``."""

    selector: str = "controller.observatorium.io=namespace-provisioner"
    """``key=value`` label on everything nsprov creates; nothing without it is touched."""

    tokens: dict[str, str] = field(default_factory=dict, repr=False)
    """Static ``owner -> token`` pairs (from --token / NSPROV_TOKEN)."""

    token_file: Path | None = None
    """File of ``name: token`` pairs, re-read when it changes."""

    policy_file: Path | None = None
    """YAML of trusted OIDC issuers and tenants, re-read when it changes; None = no policy."""

    ca_file: Path | None = None
    """CA bundle written into kubeconfigs, when the client's CA is not the right one."""

    max_namespaces: int = 0
    """Cap on live managed namespaces in total (0 = no cap)."""

    max_namespaces_per_owner: int = 0
    """Cap on live managed namespaces per token owner (0 = no cap)."""

    pod_security: str = "baseline"
    """Pod Security Admission level enforced in each namespace ('' = no label)."""

    request_timeout: float = 30.0
    """Seconds any single Kubernetes call may take."""

    concurrency: int = 40
    """Worker threads for Kubernetes calls; the client's connection pool has the same size."""

    allow_unsafe_grant: bool = False
    """Start even when the grant ClusterRole lets tenants edit Namespaces or RBAC."""

    controller: bool = True
    """Run the expiry/repair controller in this process."""

    leader_elect: bool = True
    """Take a Lease before the controller acts (needed with more than one replica)."""

    leader_elect_namespace: str = "default"
    """Namespace of the Lease (in a cluster: the pod's own namespace)."""

    leader_elect_lease_name: str = "nsprov-controller"
    """Name of the Lease."""

    leader_elect_lease_duration: float = 15.0
    """Seconds a leader's lease lasts without renewal; a successor waits this long."""

    adopt_ttl: float = 86400.0
    """Lifetime, from creation, given to managed namespaces found without an expiry label."""

    resync_period: float = 300.0
    """Seconds between full passes over every managed namespace (the safety net)."""
