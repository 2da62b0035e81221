"""The test node's network add-ons: Services routed, NetworkPolicy enforced, names served.

A bridge CNI alone gives pods addresses and nothing else: no Service IP routes, no
NetworkPolicy is enforced and no name resolves, so nsprov's ``networkPolicy:
isolated`` would be a promise nobody checks. Three real components close that gap,
each built from its Go module (tests/cluster/go/) and run as a cluster would run it:

- kube-proxy (the control plane's Kubernetes module) in iptables mode, inside the
  node's network namespace. It also routes the ``kubernetes`` Service, whose
  endpoints name the socat forwarder on the host end of the node's veth.
- kube-router's NetworkPolicy firewall (iptables + ipset), inside the node's network
  namespace, with ``--run-router=false --run-service-proxy=false``: security flaws
  are reported against v2.1.0, the one release the module proxy serves, so only the
  part under test runs, only here, and never outside that namespace. The usual
  choice, ``sigs.k8s.io/kube-network-policies``, sends packets to userspace with
  nftables' ``queue`` statement, which this machine's kernel refuses (no nft_queue);
  Calico's module is not served.
- CoreDNS as the ``kube-dns`` Service (10.0.0.10) of a Deployment in kube-system:
  a pod, not a process on the node, because ``isolatedEgress`` admits DNS to
  kube-system's pods and only a pod there tests that rule.

Everything kube-proxy and kube-router write (iptables rules, ipsets, conntrack
entries) lives in the node's network namespace and goes with it.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from tests.cluster import build, images, pki

if TYPE_CHECKING:
    from tests.cluster.controlplane import ControlPlane
    from tests.cluster.node import Node

SERVICE_CIDR = "10.0.0.0/24"  # the API server's --service-cluster-ip-range
DNS_SERVICE_IP = "10.0.0.10"
CLUSTER_DOMAIN = "cluster.local"
KUBE_ROUTER_USER = "nsprov-test:kube-router"
# Built in: the system:node-proxier ClusterRoleBinding names this user.
KUBE_PROXY_USER = "system:kube-proxy"

# What kube-router's firewall watches (its own deployment's ClusterRole, less the
# router's and the service proxy's rights, which are not run here).
KUBE_ROUTER_RBAC: list[dict[str, Any]] = [
    {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": KUBE_ROUTER_USER},
        "rules": [
            {
                "apiGroups": [""],
                "resources": ["namespaces", "pods", "services", "nodes", "endpoints"],
                "verbs": ["get", "list", "watch"],
            },
            {
                "apiGroups": ["networking.k8s.io"],
                "resources": ["networkpolicies"],
                "verbs": ["get", "list", "watch"],
            },
            {
                "apiGroups": ["discovery.k8s.io"],
                "resources": ["endpointslices"],
                "verbs": ["get", "list", "watch"],
            },
        ],
    },
    {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": KUBE_ROUTER_USER},
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": KUBE_ROUTER_USER,
        },
        "subjects": [
            {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": KUBE_ROUTER_USER}
        ],
    },
]


def api_endpoints(address: str, port: int) -> list[dict[str, Any]]:
    """The ``kubernetes`` Service's endpoints, as the API server's reconciler would write
    them if it could advertise a port other than the one it listens on.

    The API server listens on a free port of 127.0.0.1; pods reach it through a
    forwarder at ``address:port``. Both objects: kube-proxy reads the EndpointSlice,
    older clients the Endpoints. The EndpointSlice controller leaves both alone, as
    the Service has no selector.
    """
    meta = {"name": "kubernetes", "namespace": "default"}
    return [
        {
            "apiVersion": "v1",
            "kind": "Endpoints",
            "metadata": meta,
            "subsets": [
                {
                    "addresses": [{"ip": address}],
                    "ports": [{"name": "https", "port": port, "protocol": "TCP"}],
                }
            ],
        },
        {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                **meta,
                "labels": {
                    "kubernetes.io/service-name": "kubernetes",
                    "endpointslice.kubernetes.io/managed-by": "nsprov-test-node",
                },
            },
            "addressType": "IPv4",
            "endpoints": [{"addresses": [address], "conditions": {"ready": True}}],
            "ports": [{"name": "https", "port": port, "protocol": "TCP"}],
        },
    ]


COREFILE = f""".:53 {{
    errors
    health :8080
    ready :8181
    kubernetes {CLUSTER_DOMAIN} in-addr.arpa ip6.arpa {{
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
        ttl 30
    }}
    cache 30
    loadbalance
    reload
}}
"""
# No forward plugin: the node has no upstream resolver, and a test may not send
# traffic outside the node's network namespace. Names outside the cluster fail.


def dns_objects() -> list[dict[str, Any]]:
    """CoreDNS as kubeadm installs it: ServiceAccount, RBAC, Corefile, Deployment, Service."""
    meta = {"namespace": "kube-system"}
    labels = {"k8s-app": "kube-dns"}
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "coredns", **meta}},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": "system:coredns"},
            "rules": [
                {
                    "apiGroups": [""],
                    "resources": ["endpoints", "services", "pods", "namespaces"],
                    "verbs": ["list", "watch"],
                },
                {
                    "apiGroups": ["discovery.k8s.io"],
                    "resources": ["endpointslices"],
                    "verbs": ["list", "watch"],
                },
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": "system:coredns"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "system:coredns",
            },
            "subjects": [{"kind": "ServiceAccount", "name": "coredns", **meta}],
        },
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "coredns", **meta},
            "data": {"Corefile": COREFILE},
        },
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "coredns", "labels": labels, **meta},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "serviceAccountName": "coredns",
                        # Its own resolver is the node's (empty): never itself.
                        "dnsPolicy": "Default",
                        "containers": [
                            {
                                "name": "coredns",
                                "image": images.COREDNS_IMAGE,
                                "imagePullPolicy": "Never",
                                "args": ["-conf", "/etc/coredns/Corefile"],
                                # Port 53 as in every cluster: a NetworkPolicy's port
                                # matches the pod's port, after the Service's DNAT.
                                "ports": [
                                    {"name": "dns", "containerPort": 53, "protocol": "UDP"},
                                    {"name": "dns-tcp", "containerPort": 53, "protocol": "TCP"},
                                ],
                                "readinessProbe": {
                                    "httpGet": {"path": "/ready", "port": 8181},
                                    "periodSeconds": 2,
                                },
                                "livenessProbe": {
                                    "httpGet": {"path": "/health", "port": 8080},
                                    "periodSeconds": 10,
                                },
                                "volumeMounts": [{"name": "config", "mountPath": "/etc/coredns"}],
                            }
                        ],
                        "volumes": [{"name": "config", "configMap": {"name": "coredns"}}],
                    },
                },
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "kube-dns", "labels": labels, **meta},
            "spec": {
                "clusterIP": DNS_SERVICE_IP,
                "selector": labels,
                "ports": [
                    {"name": "dns", "port": 53, "protocol": "UDP"},
                    {"name": "dns-tcp", "port": 53, "protocol": "TCP"},
                ],
            },
        },
    ]


def apply(plane: ControlPlane, objects: list[dict[str, Any]]) -> None:
    """``kubectl apply`` a list of objects as admin."""
    document = yaml.safe_dump({"apiVersion": "v1", "kind": "List", "items": objects})
    result = subprocess.run(
        [str(build.binaries().kubectl), f"--kubeconfig={plane.kubeconfig}", "apply", "-f", "-"],
        input=document,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"kubectl apply failed: {result.stderr.strip()}")


def write_kubeconfig(path: Path, server: str, keys: pki.Pki, client: pki.ClientCert) -> None:
    """A kubeconfig for one add-on's own identity."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "local",
                "cluster": {"server": server, "certificate-authority": str(keys.ca_cert)},
            }
        ],
        "users": [
            {
                "name": "addon",
                "user": {"client-certificate": str(client.cert), "client-key": str(client.key)},
            }
        ],
        "contexts": [{"name": "local", "context": {"cluster": "local", "user": "addon"}}],
        "current-context": "local",
    }
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)


def kube_proxy_config(node: Node, kubeconfig: Path) -> dict[str, Any]:
    """iptables mode, with every host-wide knob left alone.

    ``conntrack.maxPerCore: 0`` and the zero timeouts keep kube-proxy from writing
    ``nf_conntrack_max`` and friends, which are not per network namespace: they
    would change the host's. No ``masqueradeAll``: a Service hop must keep the
    client pod's address, or NetworkPolicy would see the node instead of the pod.
    """
    return {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "mode": "iptables",
        "clientConnection": {"kubeconfig": str(kubeconfig)},
        "hostnameOverride": node.name,
        "bindAddress": node.ip,
        "clusterCIDR": node.network.pod_cidr,
        "healthzBindAddress": "127.0.0.1:10256",
        "metricsBindAddress": "127.0.0.1:10249",
        "nodePortAddresses": [f"{node.ip}/32"],
        "conntrack": {
            "maxPerCore": 0,
            "min": 0,
            "tcpEstablishedTimeout": "0s",
            "tcpCloseWaitTimeout": "0s",
        },
        "iptables": {"masqueradeAll": False, "syncPeriod": "30s", "minSyncPeriod": "0s"},
        "logging": {"format": "text"},
    }


def kube_router_argv(binary: Path, node: Node, kubeconfig: Path) -> list[str]:
    """kube-router with its firewall only: no BGP router, no service proxy."""
    return [
        str(binary),
        "--run-firewall=true",
        "--run-router=false",
        "--run-service-proxy=false",
        f"--kubeconfig={kubeconfig}",
        f"--hostname-override={node.name}",
        f"--service-cluster-ip-range={SERVICE_CIDR}",
        "--enable-ipv4=true",
        "--enable-ipv6=false",
        # A missed event is repaired within this; events themselves sync at once.
        "--iptables-sync-period=30s",
        "--health-port=0",
        "--metrics-port=0",
        "--v=1",
    ]
