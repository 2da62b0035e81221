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
import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from kubernetes import client

from tests.integration.conftest import CONFIGMAP_GRANT, SELECTOR, Cluster, delete_namespaces
from tests.integration.service import (
    RunningService,
    metric,
    namespace_status,
    problem,
    running_service,
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
