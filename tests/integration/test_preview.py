"""A preview per pull request: POST ?key= returns the caller's live namespace for the key.

Against the real service and control plane: the second create with a key is the same
namespace (200, not 201), extended, with a fresh kubeconfig that works; another owner's
same key is another namespace; concurrent creates with one key make one namespace;
DELETE ?key= ends it, and the key is free again once the namespace is gone. The
``nsprov`` client's ``create --key`` and ``delete --key`` run as a CI job runs them.
"""

from __future__ import annotations

import calendar
import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import yaml
from kubernetes import client, config

from nsprov.provision import bundle
from tests.integration.conftest import CONFIGMAP_GRANT, SELECTOR, Cluster
from tests.integration.service import (
    RunningService,
    kubeconfig_from,
    problem,
    running_service,
)
from tests.integration.test_client import EXIT_REFUSED, EXIT_USAGE, client_env, nsprov
from tests.support import wait_until

pytestmark = pytest.mark.usefixtures("grants", "clean_namespaces")

MAX_LIFETIME = 3600


@pytest.fixture(scope="module")
def service(cluster: Cluster, grants: None, tmp_path_factory) -> Iterator[RunningService]:
    with running_service(
        cluster.kubeconfig,
        tmp_path_factory.mktemp("nsprov"),
        [f"--cluster-role={CONFIGMAP_GRANT}", "--max-ttl=1h", f"--max-lifetime={MAX_LIFETIME}s"],
    ) as running:
        yield running


def _post(service: RunningService, key: str, ttl: str, owner: str = "alice") -> httpx.Response:
    with service.client() as http:
        return http.post(
            "/api/v1/namespaces",
            params={"key": key, "ttl": ttl},
            headers={**service.auth(owner), "Accept": "application/json"},
        )


def _delete(service: RunningService, key: str, owner: str = "alice") -> httpx.Response:
    with service.client() as http:
        return http.delete("/api/v1/namespaces", params={"key": key}, headers=service.auth(owner))


def _unix(iso: str) -> int:
    return calendar.timegm(time.strptime(iso, "%Y-%m-%dT%H:%M:%SZ"))


def _token(response: httpx.Response) -> str:
    kubeconfig = yaml.safe_load(response.json()["kubeconfig"])
    token: str = kubeconfig["users"][0]["user"]["token"]
    return token


def _tenant(path: Path) -> client.CoreV1Api:
    return client.CoreV1Api(config.new_client_from_config(config_file=str(path)))


def _configmap(name: str) -> client.V1ConfigMap:
    return client.V1ConfigMap(metadata=client.V1ObjectMeta(name=name), data={"k": "v"})


def _keyed(core: client.CoreV1Api, name: str) -> list[str]:
    """The live managed namespaces carrying ``name``'s key label (by the API server)."""
    digest = core.read_namespace(name).metadata.labels[bundle.KEY_LABEL]
    listed = core.list_namespace(label_selector=f"{SELECTOR},{bundle.KEY_LABEL}={digest}")
    return [ns.metadata.name for ns in listed.items if ns.metadata.deletion_timestamp is None]


# ---- the API ------------------------------------------------------------------------------


def test_a_second_create_with_the_key_is_the_same_namespace_extended_with_a_fresh_kubeconfig(
    service: RunningService, core: client.CoreV1Api, tmp_path: Path
) -> None:
    first = _post(service, "pr-1", "10m")
    assert first.status_code == 201, first.text
    name = first.json()["namespace"]
    assert first.headers["x-namespace"] == name
    _tenant(kubeconfig_from(first, tmp_path / "first")).create_namespaced_config_map(
        name, _configmap("first-push")
    )
    metadata = core.read_namespace(name).metadata
    assert metadata.annotations[bundle.KEY_ANNOTATION] == "pr-1"

    second = _post(service, "pr-1", "30m")
    assert second.status_code == 200, second.text
    assert second.json()["namespace"] == name
    first_expiry = _unix(first.json()["namespaceExpiresAt"])
    second_expiry = _unix(second.json()["namespaceExpiresAt"])
    assert second_expiry >= first_expiry + 19 * 60, "extended to 30m from now"
    assert core.read_namespace(name).metadata.labels[bundle.EXPIRES_AT_LABEL] == str(second_expiry)
    assert _token(second) != _token(first), "a fresh kubeconfig"
    fresh = _tenant(kubeconfig_from(second, tmp_path / "second"))
    assert fresh.read_namespaced_config_map("first-push", name).data == {"k": "v"}
    fresh.create_namespaced_config_map(name, _configmap("second-push"))
    assert _keyed(core, name) == [name]


def test_another_owner_with_the_same_key_gets_its_own_namespace(
    service: RunningService, core: client.CoreV1Api
) -> None:
    alices = _post(service, "pr-2", "10m")
    bobs = _post(service, "pr-2", "10m", owner="bob")
    assert (alices.status_code, bobs.status_code) == (201, 201), (alices.text, bobs.text)
    alice, bob = alices.json()["namespace"], bobs.json()["namespace"]
    assert alice != bob

    # bob's delete by the same key ends bob's namespace only.
    deleted = _delete(service, "pr-2", owner="bob")
    assert deleted.status_code == 202, deleted.text
    assert deleted.json() == {"name": bob, "key": "pr-2", "state": "MARKED_FOR_DELETION"}
    assert core.read_namespace(alice).metadata.deletion_timestamp is None
    again = _post(service, "pr-2", "10m")
    assert (again.status_code, again.json()["namespace"]) == (200, alice)


def test_concurrent_creates_with_one_key_make_one_namespace(
    service: RunningService, core: client.CoreV1Api
) -> None:
    with ThreadPoolExecutor(max_workers=6) as pool:
        answers = list(pool.map(lambda _: _post(service, "pr-3", "10m"), range(6)))
    assert sorted(a.status_code for a in answers) == [200] * 5 + [201], [a.text for a in answers]
    names = {a.json()["namespace"] for a in answers}
    assert len(names) == 1
    (name,) = names
    assert _keyed(core, name) == [name]
    # Every answer's kubeconfig works: the losers finished the winner's bundle, not a copy.
    tokens = {_token(a) for a in answers}
    assert len(tokens) == 6


def test_a_keyed_create_never_shortens_and_stops_at_the_total_lifetime(
    service: RunningService, core: client.CoreV1Api
) -> None:
    first = _post(service, "pr-4", "50m")
    assert first.status_code == 201, first.text
    name = first.json()["namespace"]
    expiry = _unix(first.json()["namespaceExpiresAt"])

    shorter = _post(service, "pr-4", "5m")
    assert shorter.status_code == 200, shorter.text
    assert _unix(shorter.json()["namespaceExpiresAt"]) == expiry, "never shortened"

    longer = _post(service, "pr-4", "1h")  # within --max-ttl, past --max-lifetime
    assert longer.status_code == 200, longer.text
    created = calendar.timegm(core.read_namespace(name).metadata.creation_timestamp.timetuple())
    assert _unix(longer.json()["namespaceExpiresAt"]) == created + MAX_LIFETIME


def test_delete_by_key_ends_it_and_frees_the_key(
    service: RunningService, core: client.CoreV1Api
) -> None:
    created = _post(service, "pr-5", "10m")
    assert created.status_code == 201, created.text
    name = created.json()["namespace"]
    deleted = _delete(service, "pr-5")
    assert deleted.status_code == 202, deleted.text
    assert deleted.json()["name"] == name
    assert core.read_namespace(name).metadata.deletion_timestamp is not None
    # While it goes, the key's name is taken: a create is told to retry, not given a dying one.
    while_going = _post(service, "pr-5", "10m")
    if while_going.status_code != 201:  # (unless the namespace was gone already)
        assert "retry once it is gone" in problem(while_going, 409)["detail"]

    def gone() -> bool:
        try:
            core.read_namespace(name)
        except client.ApiException as exc:
            return exc.status == 404
        return False

    wait_until(gone, timeout=60, message=f"{name} gone")
    problem(_delete(service, "pr-5"), 404)
    recreated = _post(service, "pr-5", "10m")
    assert recreated.status_code == 201, recreated.text
    assert recreated.json()["namespace"] == name, "the key's name again"


def test_bad_keys_and_mixed_keys_are_refused(service: RunningService) -> None:
    for bad in ("", "-pr", "pr_", "a" * 64, "pr/1", "pr 1"):
        assert "key must be" in problem(_post(service, bad, "10m"), 400)["detail"]
    with service.client() as http:
        both = http.post(
            "/api/v1/namespaces",
            params={"key": "pr-6"},
            headers={**service.auth(), "Idempotency-Key": "abc"},
        )
        assert "either ?key= or Idempotency-Key" in problem(both, 400)["detail"]
        everything = http.delete("/api/v1/namespaces", headers=service.auth())
        assert "needs ?key=" in problem(everything, 400)["detail"]


# ---- the client ---------------------------------------------------------------------------


def test_client_create_and_delete_by_key(
    cluster: Cluster, service: RunningService, core: client.CoreV1Api, tmp_path: Path
) -> None:
    env = client_env(cluster, service.url, service.tokens["alice"])
    first = nsprov(env, "create", "--key=pr-7", "--ttl=10m", "-o", "json", "--kubeconfig-out=kc",
                   cwd=tmp_path)  # fmt: skip
    assert first.returncode == 0, first.stderr
    made = json.loads(first.stdout)
    assert made["key"] == "pr-7"
    assert made["reused"] is False
    assert f"created namespace {made['namespace']} for key pr-7" in first.stderr

    second = nsprov(env, "create", "--key=pr-7", "--ttl=20m", "-o", "json", "--kubeconfig-out=kc",
                    cwd=tmp_path)  # fmt: skip
    assert second.returncode == 0, second.stderr
    again = json.loads(second.stdout)
    assert again["namespace"] == made["namespace"]
    assert again["reused"] is True
    assert f"reused namespace {made['namespace']} for key pr-7" in second.stderr
    _tenant(tmp_path / "kc").create_namespaced_config_map(made["namespace"], _configmap("x"))

    mixed = nsprov(env, "create", "--key=pr-7", "--idempotency-key=x")
    assert mixed.returncode == EXIT_USAGE
    bad = nsprov(env, "create", "--key=pr/7")
    assert bad.returncode == EXIT_USAGE
    assert "--key 'pr/7'" in bad.stderr

    deleted = nsprov(env, "delete", "--key=pr-7", "--wait", "-o", "json")
    assert deleted.returncode == 0, deleted.stderr
    assert json.loads(deleted.stdout) == {"name": made["namespace"], "state": "DELETED"}
    missing = nsprov(env, "delete", "--key=pr-7")
    assert missing.returncode == EXIT_REFUSED
    assert "no namespace for key 'pr-7'" in missing.stderr
    ignored = nsprov(env, "delete", "--key=pr-7", "--ignore-not-found", "-o", "json")
    assert ignored.returncode == 0, ignored.stderr
    assert json.loads(ignored.stdout)["state"] == "NOT_FOUND"
    neither = nsprov(env, "delete")
    assert neither.returncode == EXIT_USAGE
