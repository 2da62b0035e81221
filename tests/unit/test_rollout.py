"""The roll-out's decisions and its patch, without a cluster (a small fake of Kube)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest

from nsprov import cli, rollout
from nsprov.core.kube import KubeError
from nsprov.core.settings import Settings
from nsprov.policy.file import parse_policy
from nsprov.policy.model import Policy, flags_profile, resolve
from nsprov.provision import bundle
from nsprov.provision.template import Template

SELECTOR = bundle.Selector.parse("controller.observatorium.io=namespace-provisioner")
PSA = "pod-security.kubernetes.io/"
NOW = 1_900_000_000

POLICY = """
tenants:
  - name: web
    match: {token: alice}
    clusterRole: [grant-a, grant-b]
    podSecurity: restricted
    labels: {cost-centre: "42"}
    template:
      resourceQuota: {hard: {pods: "5"}}
  - name: data
    match: {token: bob}
"""


def _template(**kw: Any) -> Template:
    kw.setdefault("cluster_roles", ("grant-a",))
    for key in ("labels", "annotations", "resource_quota"):
        if key in kw:
            kw[key] = MappingProxyType(kw[key])
    return Template(**kw)


def _namespace(
    template: Template | None,
    *,
    tenant: str | None = "web",
    owner: str | None = "alice",
    rv: str = "7",
    terminating: bool = False,
    expires_at: int = NOW + 3600,
) -> dict[str, Any]:
    if template is not None:
        ns = bundle.namespace(
            "np-abc",
            selector=SELECTOR,
            owner=owner or "x",
            template=template,
            expires_at=expires_at,
            tenant=tenant,
        )
    else:  # made before templates: the flags' labels, the cluster-role annotation
        ns = {
            "metadata": {
                "name": "np-abc",
                "labels": bundle.namespace_labels(SELECTOR, expires_at, "baseline", None),
                "annotations": {bundle.OWNER_ANNOTATION: owner or "x",
                                bundle.CLUSTER_ROLE_ANNOTATION: "old-grant"},
            }
        }  # fmt: skip
        if tenant:
            ns["metadata"]["annotations"][bundle.TENANT_ANNOTATION] = tenant
    if owner is None:
        del ns["metadata"]["annotations"][bundle.OWNER_ANNOTATION]
    ns["metadata"]["resourceVersion"] = rv
    if terminating:
        ns["metadata"]["deletionTimestamp"] = "2030-01-01T00:00:00Z"
    return ns


# ---- the patch ----------------------------------------------------------------------------


def test_patch_writes_the_record_and_what_derives_from_it() -> None:
    old = _template(labels={"team": "a", "gone": "x"}, annotations={"note": "n"},
                    pod_security="baseline")  # fmt: skip
    new = _template(cluster_roles=("grant-b", "grant-c"), labels={"team": "b", "new": "y"},
                    pod_security="restricted", resource_quota={"pods": "5"},
                    max_grace_seconds=120, service_types=("ClusterIP", "LoadBalancer"),
                    finalizers=("example.com/a", "example.com/b"))  # fmt: skip
    patch = bundle.template_patch(_namespace(old)["metadata"], SELECTOR, new, "web")["metadata"]
    assert patch["resourceVersion"] == "7"
    assert patch["labels"] == {
        "team": "b",
        "new": "y",
        "gone": None,
        PSA + "enforce": "restricted",
        PSA + "enforce-version": "latest",
        bundle.TENANT_LABEL: "web",
    }
    assert patch["annotations"] == {
        "note": None,
        bundle.CLUSTER_ROLE_ANNOTATION: "grant-b",
        bundle.TEMPLATE_ANNOTATION: new.record(),
        # What the admission policies read: a roll-out carries a tenant's new bounds too.
        bundle.MAX_GRACE_ANNOTATION: "120",
        bundle.SERVICE_TYPES_ANNOTATION: "ClusterIP,LoadBalancer",
        bundle.FINALIZERS_ANNOTATION: "example.com/a,example.com/b",
    }


def test_patch_never_touches_expiry_owner_or_selector() -> None:
    old = _template(labels={"team": "a"})
    # A record that names nsprov's own keys (it never should) cannot make a patch drop them.
    forged = Template.from_record(
        old.record().replace('"team":"a"', f'"team":"a","{SELECTOR.key}":"x","nsprov.io/z":"1"')
    )
    assert forged is not None
    ns = _namespace(old)
    ns["metadata"]["annotations"][bundle.TEMPLATE_ANNOTATION] = forged.record()
    patch = bundle.template_patch(ns["metadata"], SELECTOR, _template(), None)["metadata"]
    touched = set(patch["labels"]) | set(patch["annotations"])
    kept = (SELECTOR.key, bundle.EXPIRES_AT_LABEL, bundle.OWNER_HASH_LABEL, "nsprov.io/z",
            bundle.OWNER_ANNOTATION, bundle.TENANT_ANNOTATION, bundle.TENANT_LABEL)  # fmt: skip
    for key in kept:
        assert key not in touched, key
    assert patch["labels"]["team"] is None


def test_patch_without_a_level_removes_pod_security() -> None:
    metadata = _namespace(None)["metadata"]
    patch = bundle.template_patch(metadata, SELECTOR, _template(), None)["metadata"]
    assert patch["labels"] == {PSA + "enforce": None, PSA + "enforce-version": None}


def test_applying_the_patch_gives_what_a_new_namespace_gets() -> None:
    """The merge patch on an old namespace = the labels and annotations provisioning writes."""
    old = _template(labels={"team": "a", "gone": "x"}, annotations={"note": "n"},
                    pod_security="baseline")  # fmt: skip
    new = _template(cluster_roles=("grant-b",), labels={"team": "b"}, annotations={"k": "v"})
    ns = _namespace(old)
    patch = bundle.template_patch(ns["metadata"], SELECTOR, new, "web")["metadata"]
    for part in ("labels", "annotations"):
        merged = {**ns["metadata"][part], **patch[part]}
        ns["metadata"][part] = {k: v for k, v in merged.items() if v is not None}
    fresh = bundle.namespace("np-abc", selector=SELECTOR, owner="alice", template=new,
                             expires_at=NOW + 3600, tenant="web")  # fmt: skip
    assert ns["metadata"]["labels"] == fresh["metadata"]["labels"]
    assert ns["metadata"]["annotations"] == fresh["metadata"]["annotations"]


# ---- decisions ----------------------------------------------------------------------------


class FakeKube:
    """Answers GETs of ClusterRoles and Namespaces from dicts; records merge patches."""

    def __init__(self, roles: dict[str, dict[str, Any]], conflicts: int = 0) -> None:
        self.roles = roles
        self.conflicts = conflicts
        self.patches: list[tuple[str, dict[str, Any]]] = []
        self.namespace: dict[str, Any] | None = None
        self.unbindable: set[str] = set()

    def get(self, path: str, **kw: Any) -> dict[str, Any]:
        name = path.rsplit("/", 1)[1]
        if "/clusterroles/" in path:
            if name not in self.roles:
                raise KubeError(404, "NotFound", "")
            return self.roles[name]
        assert self.namespace is not None
        return self.namespace

    def post(self, path: str, body: dict[str, Any], **kw: Any) -> dict[str, Any]:
        assert path.endswith("/selfsubjectaccessreviews")
        name = body["spec"]["resourceAttributes"]["name"]
        return {"status": {"allowed": name not in self.unbindable}}

    def merge_patch(self, path: str, body: dict[str, Any], **kw: Any) -> dict[str, Any]:
        self.patches.append((path, body))
        if self.conflicts:
            self.conflicts -= 1
            raise KubeError(409, "Conflict", "the object has been modified")
        return {}


SAFE = {"rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]}]}
QUOTA_WRITER = {
    "rules": [{"apiGroups": [""], "resources": ["resourcequotas"], "verbs": ["update"]}]
}


def _rollout(
    kube: FakeKube,
    policy: Policy | None,
    *,
    dry_run: bool = False,
    settings: Settings | None = None,
) -> rollout.Rollout:
    return rollout.Rollout(
        kube,  # type: ignore[arg-type]
        selector=SELECTOR,
        base=flags_profile(settings or Settings()),
        policy=policy,
        dry_run=dry_run,
        clock=lambda: NOW,
    )


def _web(policy: Policy) -> Template:
    return resolve(flags_profile(Settings()), policy.defaults, policy.tenant_named("web")).template


def test_a_namespace_with_an_old_record_is_patched_to_the_tenants_template() -> None:
    policy = parse_policy(POLICY)
    kube = FakeKube({"grant-a": SAFE, "grant-b": SAFE})
    old = _template(resource_quota={"pods": "2"})
    outcome = _rollout(kube, policy).apply(_namespace(old))
    assert outcome.state == "changed"
    assert (outcome.old, outcome.new) == (old.digest(), _web(policy).digest())
    assert "clusterRoles" in outcome.detail
    assert "resourceQuota" in outcome.detail
    assert outcome.line().startswith(f"np-abc web {old.digest()} -> {_web(policy).digest()} ")
    [(path, patch)] = kube.patches
    assert path == "/api/v1/namespaces/np-abc"
    assert patch["metadata"]["annotations"][bundle.TEMPLATE_ANNOTATION] == _web(policy).record()


def test_a_record_from_before_the_tenant_bounds_gets_them_written() -> None:
    """A namespace made before maxGracePeriod, serviceTypes and finalizers existed: its
    record reads as the defaults, and the roll-out writes them out for the admission
    policies (which give a namespace without them the same defaults meanwhile)."""
    policy = parse_policy(POLICY)
    kube = FakeKube({"grant-a": SAFE, "grant-b": SAFE})
    ns = _namespace(_web(policy))
    older = _web(policy).to_json()
    for key in ("maxGracePeriodSeconds", "serviceTypes", "finalizers"):
        del older[key]
    ns["metadata"]["annotations"][bundle.TEMPLATE_ANNOTATION] = json.dumps(older)
    for key in (bundle.MAX_GRACE_ANNOTATION, bundle.SERVICE_TYPES_ANNOTATION,
                bundle.FINALIZERS_ANNOTATION):  # fmt: skip
        del ns["metadata"]["annotations"][key]
    outcome = _rollout(kube, policy).apply(ns)
    assert (outcome.state, outcome.detail) == ("changed", "record in the current format")
    [(_, patch)] = kube.patches
    assert patch["metadata"]["annotations"][bundle.MAX_GRACE_ANNOTATION] == "30"
    assert patch["metadata"]["annotations"][bundle.SERVICE_TYPES_ANNOTATION] == "ClusterIP"


def test_unchanged_dry_run_and_skips_send_nothing() -> None:
    policy = parse_policy(POLICY)
    kube = FakeKube({"grant-a": SAFE, "grant-b": SAFE})
    assert _rollout(kube, policy).apply(_namespace(_web(policy))).state == "unchanged"
    dry = _rollout(kube, policy, dry_run=True).apply(_namespace(_template()))
    assert dry.state == "would-change"
    cases = {
        "tenant not in the policy": _namespace(_template(), tenant="gone"),
        "no tenant recorded": _namespace(_template(), tenant=None),
        "adopted": _namespace(None, owner=None),
        "expired": _namespace(_template(), expires_at=NOW - 1),
        "being deleted": _namespace(_template(), terminating=True),
    }
    for reason, namespace in cases.items():
        outcome = _rollout(kube, policy).apply(namespace)
        assert outcome.state == "skipped", reason
        assert reason in outcome.detail
    assert kube.patches == []


@pytest.mark.parametrize(
    ("roles", "reason"),
    [
        ({"grant-a": SAFE}, "'grant-b' does not exist"),
        ({"grant-a": SAFE, "grant-b": QUOTA_WRITER}, "'grant-b' is unsafe"),
    ],
)
def test_a_grant_that_is_missing_or_unsafe_fails_the_namespace(
    roles: dict[str, Any], reason: str
) -> None:
    kube = FakeKube(roles)
    outcome = _rollout(kube, parse_policy(POLICY)).apply(_namespace(_template()))
    assert outcome.state == "failed"
    assert reason in outcome.detail
    assert kube.patches == []


def test_a_grant_nsprov_may_not_bind_fails_the_namespace() -> None:
    kube = FakeKube({"grant-a": SAFE, "grant-b": SAFE})
    kube.unbindable = {"grant-b"}
    outcome = _rollout(kube, parse_policy(POLICY)).apply(_namespace(_template()))
    assert outcome.state == "failed"
    assert "nsprov may not bind grant ClusterRole 'grant-b'" in outcome.detail
    assert kube.patches == []


def test_a_conflict_reads_the_namespace_again_and_retries() -> None:
    kube = FakeKube({"grant-a": SAFE, "grant-b": SAFE}, conflicts=1)
    kube.namespace = _namespace(_template(), rv="8")  # extended meanwhile
    outcome = _rollout(kube, parse_policy(POLICY)).apply(_namespace(_template()))
    assert outcome.state == "changed"
    assert [p["metadata"]["resourceVersion"] for _, p in kube.patches] == ["7", "8"]


def test_a_namespace_that_keeps_changing_fails_after_a_few_attempts() -> None:
    kube = FakeKube({"grant-a": SAFE, "grant-b": SAFE}, conflicts=99)
    kube.namespace = _namespace(_template())
    outcome = _rollout(kube, parse_policy(POLICY)).apply(_namespace(_template()))
    assert outcome.state == "failed"
    assert len(kube.patches) == rollout.ATTEMPTS


def test_without_a_policy_the_flags_template_applies_to_every_namespace() -> None:
    settings = Settings(cluster_role="grant-a", pod_security="restricted")
    kube = FakeKube({"grant-a": SAFE})
    outcome = _rollout(kube, None, settings=settings).apply(_namespace(None, tenant=None))
    assert outcome.state == "changed"
    assert outcome.old == rollout.NONE
    labels = kube.patches[0][1]["metadata"]["labels"]
    assert labels[PSA + "enforce"] == "restricted"
    assert bundle.TENANT_LABEL not in labels


def test_summary_counts_states() -> None:
    outcomes = [
        rollout.Outcome("a", "web", "1", "2", "changed"),
        rollout.Outcome("b", "web", "2", "2", "unchanged"),
        rollout.Outcome("c", None, "-", "-", "skipped"),
    ]
    assert rollout.summary(outcomes) == "3 namespace(s): 1 changed, 1 unchanged, 1 skipped"
    assert rollout.summary([]) == "0 namespace(s)"


# ---- usage --------------------------------------------------------------------------------


def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("NSPROV_"):
            monkeypatch.delenv(key)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "either --tenant NAME (repeatable) or --all"),
        (["--all", "--tenant=web"], "either --tenant"),
        (["--tenant=web"], "there is no policy file"),
        (
            ["--tenant=web", "--tenant=nope", "--policy-file={policy}"],
            "the policy has no tenant 'nope'; its tenants: web, data",
        ),
        (["--all", "--policy-file={policy}.missing"], "No such file"),
    ],
)
def test_bad_usage_is_one_line_and_exit_2(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    args: list[str],
    message: str,
) -> None:
    _clean_env(monkeypatch)
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    assert cli.main(["rollout", *(a.format(policy=policy) for a in args)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert message in err


def test_rollout_needs_no_token(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _clean_env(monkeypatch)
    settings = cli.settings_from_options(
        {"selector": "a=b", "policy_file": tmp_path / "p.yaml"}, serving=False
    )
    assert settings.tokens == {}
    with pytest.raises(cli.ConfigError, match="no token"):
        cli.settings_from_options({"selector": "a=b"})


def test_without_a_policy_a_tenants_namespace_is_skipped_not_stripped() -> None:
    # `nsprov rollout --all` run without the policy file (from a laptop with an admin
    # kubeconfig, or a pod without NSPROV_POLICY_FILE) must not rewrite every tenant's
    # namespace to the flags' template: that drops its quota, limits and isolation and
    # rebinds it to --cluster-role.
    kube = FakeKube({"grant-a": SAFE})
    tenants = _namespace(_template(resource_quota={"pods": "2"}), tenant="web")
    outcome = _rollout(kube, None, settings=Settings(cluster_role="grant-a")).apply(tenants)
    assert outcome.state == "skipped"
    assert "tenant 'web'" in outcome.detail
    assert "no policy file" in outcome.detail
    assert kube.patches == []
