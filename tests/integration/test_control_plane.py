"""The test control plane is a real cluster: controllers act, RBAC decides, tokens are bound."""

from __future__ import annotations

import json
import os
import subprocess

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tests.cluster import build, controlplane
from tests.integration.conftest import Cluster
from tests.support import wait_until


def _exists(read: object, *args: str) -> bool:
    try:
        read(*args)  # type: ignore[operator]
    except ApiException as exc:
        if exc.status == 404:
            return False
        raise
    return True


def test_new_namespace_gets_default_serviceaccount_and_root_ca(
    core: client.CoreV1Api, make_namespace
) -> None:
    name = make_namespace()
    wait_until(
        lambda: _exists(core.read_namespaced_service_account, "default", name),
        timeout=30,
        message="default ServiceAccount",
    )
    configmap = wait_until(
        lambda: (
            _exists(core.read_namespaced_config_map, "kube-root-ca.crt", name)
            and core.read_namespaced_config_map("kube-root-ca.crt", name)
        ),
        timeout=30,
        message="kube-root-ca.crt ConfigMap",
    )
    assert "BEGIN CERTIFICATE" in configmap.data["ca.crt"]


def test_deleted_namespace_is_gone_within_60s(core: client.CoreV1Api, make_namespace) -> None:
    name = make_namespace()
    core.create_namespaced_config_map(
        name, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="content"), data={"a": "b"})
    )
    core.delete_namespace(name)
    # The namespace controller must empty it (the configmap) and then remove it.
    wait_until(lambda: not _exists(core.read_namespace, name), timeout=60, message="namespace 404")


def test_audit_log_records_each_namespace_delete_with_its_answer(
    cluster: Cluster, core: client.CoreV1Api, make_namespace
) -> None:
    plane = cluster.require_local()
    assert plane.audit_log is not None
    name, other = make_namespace(), make_namespace()
    # As nsprov deletes: only this version of this namespace; a second try finds it changed.
    metadata = core.read_namespace(name).metadata
    exactly = client.V1DeleteOptions(
        preconditions=client.V1Preconditions(
            uid=metadata.uid, resource_version=metadata.resource_version
        )
    )
    core.delete_namespace(name, body=exactly)
    with pytest.raises(ApiException) as again:  # 409 (changed: terminating), or 404 (gone)
        core.delete_namespace(name, body=exactly)
    assert again.value.status in (409, 404)
    core.read_namespace(other)  # neither a read nor another verb is recorded

    def deletes() -> list[tuple[str, str, int]] | None:
        found = [
            (event["user"]["username"], event["verb"], event["responseStatus"]["code"])
            for event in controlplane.audit_events(plane.audit_log)  # type: ignore[arg-type]
            if event["objectRef"].get("name") in (name, other)
            and "kube-controller-manager" not in event.get("userAgent", "")
        ]
        return found if len(found) >= 2 else None

    found = wait_until(deletes, timeout=10, message="both DELETEs in the audit log")
    assert found == [("nsprov-test-admin", "delete", 200),
                     ("nsprov-test-admin", "delete", again.value.status)]  # fmt: skip


def _token_client(cluster: Cluster, token: str) -> client.CoreV1Api:
    configuration = client.Configuration()
    configuration.host = cluster.server
    configuration.ssl_ca_cert = cluster.api.configuration.ssl_ca_cert
    configuration.verify_ssl = True
    configuration.api_key = {"authorization": f"Bearer {token}"}
    return client.CoreV1Api(client.ApiClient(configuration))


def _status_listing_pods(api: client.CoreV1Api, namespace: str) -> int:
    try:
        api.list_namespaced_pod(namespace)
    except ApiException as exc:
        return int(exc.status)
    return 200


def test_token_request_token_is_governed_by_rbac(
    cluster: Cluster, core: client.CoreV1Api, make_namespace
) -> None:
    name, other = make_namespace(), make_namespace()
    core.create_namespaced_service_account(
        name, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name="tenant"))
    )
    request = client.AuthenticationV1TokenRequest(
        spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=600)
    )
    token = core.create_namespaced_service_account_token("tenant", name, request).status.token
    tenant = _token_client(cluster, token)
    try:
        assert _status_listing_pods(tenant, name) == 403

        rbac = client.RbacAuthorizationV1Api(cluster.api)
        role_name = f"pod-reader-{name}"
        rbac.create_cluster_role(
            client.V1ClusterRole(
                metadata=client.V1ObjectMeta(name=role_name),
                rules=[client.V1PolicyRule(api_groups=[""], resources=["pods"], verbs=["list"])],
            )
        )
        try:
            rbac.create_namespaced_role_binding(
                name,
                client.V1RoleBinding(
                    metadata=client.V1ObjectMeta(name="tenant-pods"),
                    role_ref=client.V1RoleRef(
                        api_group="rbac.authorization.k8s.io", kind="ClusterRole", name=role_name
                    ),
                    subjects=[
                        client.RbacV1Subject(kind="ServiceAccount", name="tenant", namespace=name)
                    ],
                ),
            )
            wait_until(
                lambda: _status_listing_pods(tenant, name) == 200,
                timeout=10,
                message="200 after the RoleBinding",
            )
            assert _status_listing_pods(tenant, other) == 403
        finally:
            rbac.delete_cluster_role(role_name)
    finally:
        tenant.api_client.close()


def test_kubectl_works_with_the_admin_kubeconfig(cluster: Cluster) -> None:
    env = {**os.environ, "KUBECONFIG": str(cluster.kubeconfig)}
    result = subprocess.run(
        [cluster.kubectl, "get", "namespace", "default", "-o", "json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert json.loads(result.stdout)["metadata"]["name"] == "default"
    version = subprocess.run(
        [cluster.kubectl, "version", "-o", "json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    server_version = json.loads(version.stdout)["serverVersion"]["gitVersion"]
    if cluster.plane is not None:
        assert server_version == build.KUBERNETES_VERSION


def test_stopping_the_control_plane_leaves_no_process(cluster: Cluster) -> None:
    cluster.require_local()
    with controlplane.running() as plane:
        pids = plane.pids
        workdir = plane.workdir
        assert len(pids) == 3
        assert all(controlplane.pid_alive(pid) for pid in pids)
    assert not [pid for pid in pids if controlplane.pid_alive(pid)]
    assert not workdir.exists()
    leftovers = subprocess.run(
        ["pgrep", "-f", str(workdir)], capture_output=True, text=True, check=False
    )
    assert leftovers.stdout == "", f"processes still running: {leftovers.stdout}"


def test_a_component_that_fails_reports_its_log(tmp_path, monkeypatch) -> None:
    # etcd refuses an unknown flag and exits: start() must name it and show its log.
    real = controlplane._etcd

    def broken(bins, workdir):
        component, port = real(bins, workdir)
        component.argv.append("--no-such-flag")
        return component, port

    monkeypatch.setattr(controlplane, "_etcd", broken)
    if not build.binaries().etcd.exists():
        pytest.skip("etcd not built")
    with pytest.raises(controlplane.ControlPlaneError, match=r"(?s)etcd exited.*no-such-flag"):
        controlplane.start(timeout=30)
