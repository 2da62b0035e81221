"""Taking over from the Go namespace-provisioner (docs/operator/migration.md).

The objects are laid down as that tool's code makes them (observatorium/
namespace-provisioner, server.go): a Namespace ``np-<UUID v1>`` and, inside it, a
ServiceAccount, the Role read from its ``--role`` file and a RoleBinding to it, all named
``namespace-provisioner`` and labelled with its default ``--selector``,
``controller.observatorium.io=namespace-selector`` (not nsprov's ``...=namespace-provisioner``),
and nothing else: no expiry label, since the tool kept its deadlines in memory or had none.
The guide's first step, nsprov with ``--selector`` set to that label, adopts and expires
them; nsprov's default selector never sees them.
"""

from __future__ import annotations

import calendar
import json
import os
import re
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from tests.integration.conftest import (
    CONFIGMAP_GRANT,
    NSPROV_NAMESPACE,
    REPO,
    SELECTOR,
    Cluster,
    delete_namespaces,
)
from tests.integration.service import (
    RunningService,
    metric,
    namespace_status,
    problem,
    running_service,
    start_service,
    wait_expired_line,
)
from tests.support import wait_until

pytestmark = pytest.mark.usefixtures("grants", "clean_namespaces")

GO_SELECTOR = "controller.observatorium.io=namespace-selector"
GO_NAME = "namespace-provisioner"  # the tool's name for every object inside a namespace
EXPIRES_AT = "nsprov.io/expires-at"
# The example Role of the tool's repository (role.yaml), as an operator passed it to --role.
ROLE_FILE = """\
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata:
  name: namespace-provisioner
rules:
- apiGroups: [""]
  resources: [pods]
  verbs: [get, list, watch, create, update, delete]
"""


def _lay_down_go_tool_namespace(cluster: Cluster, role_file: Path) -> client.V1Namespace:
    """What one POST /api/v1/namespace to the Go tool left behind."""
    core = client.CoreV1Api(cluster.api)
    rbac = client.RbacAuthorizationV1Api(cluster.api)
    key, value = GO_SELECTOR.split("=")
    labels = {key: value}
    name = f"np-{uuid.uuid1()}"  # its uuid.NewUUID(): version 1
    namespace = core.create_namespace(
        client.V1Namespace(metadata=client.V1ObjectMeta(name=name, labels=labels))
    )
    core.create_namespaced_service_account(
        name, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name=GO_NAME, labels=labels))
    )
    role = yaml.safe_load(role_file.read_text())
    rbac.create_namespaced_role(
        name,
        client.V1Role(
            metadata=client.V1ObjectMeta(name=role["metadata"]["name"], labels=labels),
            rules=[client.V1PolicyRule(**rule) for rule in _snake(role["rules"])],
        ),
    )
    rbac.create_namespaced_role_binding(
        name,
        client.V1RoleBinding(
            metadata=client.V1ObjectMeta(name=GO_NAME, labels=labels),
            role_ref=client.V1RoleRef(
                api_group="rbac.authorization.k8s.io", kind="Role", name=role["metadata"]["name"]
            ),
            subjects=[client.RbacV1Subject(kind="ServiceAccount", name=GO_NAME, namespace=name)],
        ),
    )
    return namespace


def _snake(rules: list[dict[str, list[str]]]) -> list[dict[str, list[str]]]:
    names = {"apiGroups": "api_groups", "resources": "resources", "verbs": "verbs"}
    return [{names[k]: v for k, v in rule.items()} for rule in rules]


def _expiry(core: client.CoreV1Api, name: str) -> str | None:
    labels: dict[str, str] = core.read_namespace(name).metadata.labels or {}
    return labels.get(EXPIRES_AT)


@pytest.fixture
def role_file(tmp_path: Path) -> Path:
    path = tmp_path / "role.yaml"
    path.write_text(ROLE_FILE)
    return path


@pytest.fixture
def go_tool_namespaces(core: client.CoreV1Api) -> Iterator[list[str]]:
    """Names of the namespaces a test lays down as the Go tool did; deleted afterwards."""
    names: list[str] = []
    yield names
    delete_namespaces(core, names)


def test_with_the_go_tools_selector_nsprov_adopts_and_expires_its_namespaces(
    cluster: Cluster,
    core: client.CoreV1Api,
    role_file: Path,
    go_tool_namespaces: list[str],
    tmp_path: Path,
) -> None:
    rbac = client.RbacAuthorizationV1Api(cluster.api)
    before = _lay_down_go_tool_namespace(cluster, role_file)
    go_tool_namespaces.append(before.metadata.name)
    args = [
        f"--selector={GO_SELECTOR}",
        "--adopt-ttl=30s",  # the guide's advice: the Go tool's --ttl; short here
        f"--cluster-role={CONFIGMAP_GRANT}",
        "--leader-elect-lease-name=nsprov-test-migration",
    ]
    with running_service(cluster.kubeconfig, tmp_path / "nsprov", args) as service:
        wait_until(lambda: metric(service, "nsprov_leader") == 1, timeout=15, message="leader")
        # The admin's kubeconfig: no policy confines it, which nsprov says at start.
        assert "no admission policy guards nsprov's namespaces" in service.log()
        # One left before nsprov started, one made while it runs (the Go tool still serving
        # during the switch): each gets creation + --adopt-ttl, from the list or the watch.
        during = _lay_down_go_tool_namespace(cluster, role_file)
        go_tool_namespaces.append(during.metadata.name)
        for namespace in (before, during):
            name = namespace.metadata.name
            label = wait_until(
                lambda n=name: _expiry(core, n), timeout=10, message=f"{name} adopted"
            )
            created = calendar.timegm(namespace.metadata.creation_timestamp.timetuple())
            assert int(label) == created + 30
            logged = f"adopted namespace={name} reason=no-expiry-label"
            wait_until(lambda s=logged: s in service.log(), timeout=5, message="adoption logged")
        name = during.metadata.name
        assert namespace_status(core, name) == "active"
        # Adopted, not repaired: the Go tool's Role and RoleBinding stay as it made them, and
        # nsprov adds none of its own objects.
        binding = rbac.read_namespaced_role_binding(GO_NAME, name)
        assert (binding.role_ref.kind, binding.role_ref.name) == ("Role", GO_NAME)
        assert [r.metadata.name for r in rbac.list_namespaced_role(name).items] == [GO_NAME]
        assert core.list_namespaced_resource_quota(name).items == []
        _old_routes_answer_as_the_guide_says(service, core, name)
        # Gone when the adoption ttl runs out, as a namespace nsprov made would be.
        for namespace in (before, during):
            name = namespace.metadata.name
            wait_until(lambda n=name: namespace_status(core, n) != "active", timeout=40,
                       interval=0.2, message=f"{name} expired")  # fmt: skip
            line = wait_expired_line(service, name)
            assert "reason=expired" in line


def _old_routes_answer_as_the_guide_says(
    service: RunningService, core: client.CoreV1Api, adopted: str
) -> None:
    """The Go tool's two routes on nsprov: what docs/operator/migration.md tells callers."""
    with service.client() as http:
        # DELETE of a namespace nsprov adopted (or of one that does not exist): the Go tool
        # answered 200 with no body; nsprov answers 404, a problem document, and deletes
        # nothing (an adopted namespace has no owner).
        for name in (adopted, f"np-{uuid.uuid1()}"):
            gone = http.delete(f"/api/v1/namespace/{name}", headers=service.auth())
            assert problem(gone, 404)
        listing = http.get("/api/v1/namespaces", headers=service.auth()).json()
        assert adopted not in [item["name"] for item in listing["items"]]
        # A bad token: 401 as from the Go tool, but a problem document, not text/plain.
        refused = http.post("/api/v1/namespace", headers={"Authorization": "Bearer wrong"})
        assert problem(refused, 401)
        # POST: 201 and a kubeconfig as from the Go tool; the name is np-<10 characters>,
        # labelled with the selector nsprov runs with, and it carries its expiry from birth.
        made = http.post("/api/v1/namespace", headers=service.auth())
        assert made.status_code == 201, made.text
        assert yaml.safe_load(made.text)["kind"] == "Config"
        name = made.headers["x-namespace"]
        assert re.fullmatch(r"np-[a-z0-9]{10}", name), name
        # DELETE on the old route of a namespace the caller made: 202, not 200.
        deleted = http.delete(f"/api/v1/namespace/{name}", headers=service.auth())
        assert deleted.status_code == 202, deleted.text
        assert deleted.json() == {"name": name, "state": "MARKED_FOR_DELETION"}
    assert namespace_status(core, adopted) == "active"


def test_with_nsprovs_default_selector_the_go_tools_namespaces_are_never_adopted(
    cluster: Cluster,
    core: client.CoreV1Api,
    role_file: Path,
    go_tool_namespaces: list[str],
    tmp_path: Path,
) -> None:
    """The trap the guide warns of: nsprov's default selector is not the Go tool's."""
    go_tool = _lay_down_go_tool_namespace(cluster, role_file).metadata.name
    go_tool_namespaces.append(go_tool)
    # One with nsprov's default label and no expiry, made after the Go tool's: once nsprov
    # has adopted it, it has seen the Go tool's namespace too (listed before, or watched).
    key, value = SELECTOR.split("=")
    marker = f"np-marker{uuid.uuid4().hex[:6]}"
    args = ["--leader-elect-lease-name=nsprov-test-migration-default"]
    with running_service(cluster.kubeconfig, tmp_path / "nsprov", args) as service:
        wait_until(lambda: metric(service, "nsprov_leader") == 1, timeout=15, message="leader")
        core.create_namespace(
            client.V1Namespace(metadata=client.V1ObjectMeta(name=marker, labels={key: value}))
        )
        wait_until(lambda: _expiry(core, marker), timeout=10, message="the marker adopted")
        assert _expiry(core, go_tool) is None
        assert f"namespace={go_tool}" not in service.log()
    assert namespace_status(core, go_tool) == "active"


# ---- the guide's step 3: the admission policies follow the selector ------------------------

RBAC_GROUP = "rbac.authorization.k8s.io"
NEIGHBOUR = "nsprov-test-migration-neighbour"
GO_TOOL_USER = "system:serviceaccount:namespace-provisioner:namespace-provisioner"
ADMISSION_KINDS = ("ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding")


def _admission_policies(cluster: Cluster, source: Path) -> str:
    """The ValidatingAdmissionPolicies and their bindings of a kustomization, as YAML."""
    built = subprocess.run([cluster.kubectl, "kustomize", str(source)], capture_output=True,
                           text=True, timeout=120, check=False)  # fmt: skip
    assert built.returncode == 0, built.stderr
    docs = [d for d in yaml.safe_load_all(built.stdout) if d and d["kind"] in ADMISSION_KINDS]
    assert len(docs) == 10, [d["metadata"]["name"] for d in docs]
    return yaml.safe_dump_all(docs)


def _apply(cluster: Cluster, text: str) -> None:
    env = {**os.environ, "KUBECONFIG": str(cluster.kubeconfig)}
    applied = subprocess.run([cluster.kubectl, "apply", "-f", "-"], input=text, env=env,
                             capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
    assert applied.returncode == 0, applied.stderr


def _refused_by_policy(call: object) -> str | None:
    """The policy's message if ``call()`` was refused by an admission policy, else None."""
    try:
        call()  # type: ignore[operator]
    except ApiException as exc:
        message = str(json.loads(exc.body)["message"])
        if exc.status == 403 and "ValidatingAdmissionPolicy" in message:
            return message
        raise
    return None


def _labelled(name: str, selector: str) -> client.V1Namespace:
    key, value = selector.split("=")
    return client.V1Namespace(metadata=client.V1ObjectMeta(name=name, labels={key: value}))


@pytest.fixture
def impersonated(cluster: Cluster) -> Iterator[dict[str, client.CoreV1Api]]:
    """The Go tool's ServiceAccount with its ClusterRole's namespace rights (its manifest),
    and a neighbour who may patch namespaces: neither in system:masters, so only the
    policies can refuse them what RBAC allows."""
    rbac = client.RbacAuthorizationV1Api(cluster.api)
    verbs = {GO_TOOL_USER: ["create", "delete", "list", "watch"],
             NEIGHBOUR: ["get", "list", "patch", "update"]}  # fmt: skip
    apis: dict[str, client.ApiClient] = {}
    for user, allowed in verbs.items():
        name = f"{NEIGHBOUR}-{len(apis)}"
        rule = client.V1PolicyRule(api_groups=[""], resources=["namespaces"], verbs=allowed)
        rbac.create_cluster_role(
            client.V1ClusterRole(metadata=client.V1ObjectMeta(name=name), rules=[rule])
        )
        rbac.create_cluster_role_binding(
            client.V1ClusterRoleBinding(
                metadata=client.V1ObjectMeta(name=name),
                role_ref=client.V1RoleRef(api_group=RBAC_GROUP, kind="ClusterRole", name=name),
                subjects=[client.RbacV1Subject(api_group=RBAC_GROUP, kind="User", name=user)],
            )
        )
        api = config.new_client_from_config(config_file=str(cluster.kubeconfig))
        api.set_default_header("Impersonate-User", user)
        apis[user] = api
    try:
        yield {user: client.CoreV1Api(api) for user, api in apis.items()}
    finally:
        for index, api in enumerate(apis.values()):
            api.close()
            rbac.delete_cluster_role_binding(f"{NEIGHBOUR}-{index}")
            rbac.delete_cluster_role(f"{NEIGHBOUR}-{index}")


@pytest.fixture
def go_selector_policies(
    cluster: Cluster,
    manifest_kubeconfig: Path,
    impersonated: dict[str, client.CoreV1Api],
    tmp_path: Path,
) -> Iterator[None]:
    """k8s/'s admission policies replaced by the selector component's, with the values of
    k8s/examples/selector.yaml (the Go tool's selector), as the guide's overlay applies them;
    k8s/'s own are put back afterwards (``manifest_kubeconfig`` keeps them for the session)."""
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    (overlay / "selector.yaml").write_text((REPO / "k8s/examples/selector.yaml").read_text())
    (overlay / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "resources": [os.path.relpath(REPO / "k8s", overlay), "selector.yaml"],
                "components": [os.path.relpath(REPO / "k8s/components/selector", overlay)],
            }
        )
    )
    go_tool = impersonated[GO_TOOL_USER]

    def enforced(selector: str) -> bool:
        probe = _labelled("nsprov-test-migration-probe", selector)
        return (
            _refused_by_policy(lambda: go_tool.create_namespace(probe, dry_run="All")) is not None
        )

    _apply(cluster, _admission_policies(cluster, overlay))
    try:
        wait_until(lambda: enforced(GO_SELECTOR) and not enforced(SELECTOR), timeout=15,
                   interval=0.2, message="the component's policies enforced")  # fmt: skip
        yield
    finally:
        _apply(cluster, _admission_policies(cluster, REPO / "k8s"))
        wait_until(lambda: enforced(SELECTOR) and not enforced(GO_SELECTOR), timeout=15,
                   interval=0.2, message="k8s/'s policies enforced again")  # fmt: skip


def test_the_policies_from_the_component_protect_the_go_tools_namespaces(
    cluster: Cluster,
    core: client.CoreV1Api,
    manifest_kubeconfig: Path,
    go_selector_policies: None,
    impersonated: dict[str, client.CoreV1Api],
    role_file: Path,
    go_tool_namespaces: list[str],
    tmp_path: Path,
) -> None:
    left = _lay_down_go_tool_namespace(cluster, role_file).metadata.name
    go_tool_namespaces.append(left)
    # The guide's step 5: with the policies in place, the Go tool can no longer make a
    # namespace under its label (RBAC lets it; the policy refuses), but may make others.
    go_tool = impersonated[GO_TOOL_USER]
    refused = _refused_by_policy(
        lambda: go_tool.create_namespace(_labelled("np-gotool-after", GO_SELECTOR), dry_run="All")
    )
    assert refused is not None
    assert f"only nsprov may add, change or remove the {GO_SELECTOR} label" in refused
    unlabelled = client.V1Namespace(metadata=client.V1ObjectMeta(name="np-gotool-unlabelled"))
    assert _refused_by_policy(lambda: go_tool.create_namespace(unlabelled, dry_run="All")) is None
    # nsprov, as k8s/ installs it (its ServiceAccount, which the policies exempt and confine),
    # with the Go tool's selector: adopts the namespace the Go tool left.
    args = [
        f"--selector={GO_SELECTOR}",
        f"--leader-elect-namespace={NSPROV_NAMESPACE}",  # k8s/'s Role: its Lease only
    ]
    with running_service(manifest_kubeconfig, tmp_path / "nsprov", args) as service:
        wait_until(lambda: _expiry(core, left), timeout=30, message=f"{left} adopted")
        assert f"adopted namespace={left} " in service.log()
        assert f"admission policies guard --selector={GO_SELECTOR}" in service.log()
    # nsprov started with a selector the policies were not rendered for refuses to start,
    # and says why, rather than label namespaces nothing protects.
    stale = start_service(manifest_kubeconfig, tmp_path / "stale", args[1:], wait_ready=False)
    try:
        wait_until(lambda: stale.process.poll() is not None, timeout=30, message="refused")
        assert stale.process.returncode != 0
        said = stale.log()
        assert f"refuse a namespace as nsprov makes it under --selector={SELECTOR}" in said
        assert "k8s/components/selector" in said
    finally:
        stale.stop()
    # A neighbour with patch rights on namespaces cannot bring its end forward, nor take the
    # namespace out of nsprov's hands, under the Go tool's label as under nsprov's.
    neighbour = impersonated[NEIGHBOUR]
    for labels in ({EXPIRES_AT: "1"}, {EXPIRES_AT: None}, {GO_SELECTOR.split("=")[0]: None}):
        patch = {"metadata": {"labels": labels}}
        message = _refused_by_policy(lambda p=patch: neighbour.patch_namespace(left, p))
        assert message is not None, labels
        assert "nsprov-protect" in message
    assert _expiry(core, left) is not None
    assert namespace_status(core, left) == "active"
