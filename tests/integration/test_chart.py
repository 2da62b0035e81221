"""The Helm chart (charts/nsprov) is the kustomize base k8s/, with values on top.

The chart reads k8s/ through a link (charts/nsprov/files/k8s), so the two cannot drift
by hand; these tests keep it so: with default values the chart renders the objects
`kubectl kustomize k8s/` does (but the Namespace, which Helm leaves to the installer),
and every value changes what it says and nothing else. No cluster needed: helm renders
offline, kubectl kustomizes offline.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.cluster import build

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "nsprov"
DEFAULT_SELECTOR = "controller.observatorium.io=namespace-provisioner"
# Labels Helm's convention puts on every object; the base has none of them.
HELM_LABELS = (
    "helm.sh/chart",
    "app.kubernetes.io/managed-by",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/version",
)

Objects = dict[tuple[str, str, str], dict[str, Any]]


@pytest.fixture(scope="module")
def helm() -> Path:
    return build.ensure_tools_built().helm


def _run(*args: str | Path) -> str:
    result = subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, f"{args[0]} {args[1]} failed:\n{result.stderr}"
    return result.stdout


def _by_identity(text: str) -> Objects:
    objects: Objects = {}
    for doc in yaml.safe_load_all(text):
        if not doc:
            continue
        key = (doc["kind"], doc["metadata"].get("namespace", ""), doc["metadata"]["name"])
        assert key not in objects, f"{key} rendered twice"
        objects[key] = doc
    return objects


def _without_helm_labels(objects: Objects) -> Objects:
    for doc in objects.values():
        labels = doc["metadata"].get("labels", {})
        for name in HELM_LABELS:
            labels.pop(name, None)
    return objects


def _template(helm: Path, *flags: str, release: str = "nsprov", namespace: str = "nsprov") -> str:
    return _run(helm, "template", release, CHART, "--namespace", namespace, *flags)


def _kustomized() -> Objects:
    return _by_identity(_run(build.ensure_built().kubectl, "kustomize", REPO / "k8s"))


def test_default_values_render_the_kustomize_base(helm: Path) -> None:
    base = _kustomized()
    chart = _by_identity(_template(helm))
    # Every object carries Helm's labels, with the chart's and the release's names.
    for doc in chart.values():
        labels = doc["metadata"]["labels"]
        assert labels["app.kubernetes.io/managed-by"] == "Helm", doc["metadata"]
        assert labels["app.kubernetes.io/instance"] == "nsprov"
    namespaces = [key for key in base if key[0] == "Namespace"]
    assert namespaces == [("Namespace", "", "nsprov")]
    del base[namespaces[0]]
    assert len(base) > 20, sorted(base)
    assert sorted(chart) == sorted(base)
    chart = _without_helm_labels(chart)
    for key, doc in base.items():
        assert _spaced(chart[key]) == _spaced(doc), f"{key} differs from k8s/"


def test_monitoring_values_render_the_monitoring_component(helm: Path, tmp_path: Path) -> None:
    """serviceMonitor, prometheusRule and dashboard on = k8s/ with k8s/monitoring added,
    as the overlay of docs/operator/install.md adds it."""
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    (overlay / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "resources": [os.path.relpath(REPO / "k8s", overlay)],
                "components": [os.path.relpath(REPO / "k8s" / "monitoring", overlay)],
            }
        )
    )
    base = _by_identity(_run(build.ensure_built().kubectl, "kustomize", overlay))
    del base[("Namespace", "", "nsprov")]
    flags = ("serviceMonitor", "prometheusRule", "dashboard")
    chart = _by_identity(
        _template(helm, *(f for v in flags for f in ("--set", f"{v}.enabled=true")))
    )
    added = {key for key in base if key[0] in ("ServiceMonitor", "PrometheusRule")}
    added.add(("ConfigMap", "nsprov", "nsprov-dashboard"))
    assert added <= set(base), sorted(base)
    assert sorted(chart) == sorted(base)
    chart = _without_helm_labels(chart)
    for key in added:
        assert _spaced(chart[key]) == _spaced(base[key]), f"{key} differs from k8s/monitoring"
    # Off by default, as in k8s/ (their CRDs may be missing).
    assert not added & set(_by_identity(_template(helm)))


def _selector_overlay(tmp_path: Path, values: dict[str, str] | None) -> Path:
    """k8s/ with the component k8s/components/selector and, unless None, its ConfigMap."""
    overlay = tmp_path / "selector-overlay"
    overlay.mkdir()
    resources = [os.path.relpath(REPO / "k8s", overlay)]
    if values is not None:
        resources.append("selector.yaml")
        local = {"config.kubernetes.io/local-config": "true"}
        config = {"apiVersion": "v1", "kind": "ConfigMap", "data": values,
                  "metadata": {"name": "nsprov-selector", "annotations": local}}  # fmt: skip
        (overlay / "selector.yaml").write_text(yaml.safe_dump(config))
    (overlay / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "resources": resources,
                "components": [os.path.relpath(REPO / "k8s" / "components" / "selector", overlay)],
            }
        )
    )
    return overlay


def _usernames(objects: Objects) -> set[str]:
    """The usernames the admission policies' matchConditions name as nsprov."""
    found = set()
    for (kind, _, _), doc in objects.items():
        if kind != "ValidatingAdmissionPolicy":
            continue
        for condition in doc["spec"]["matchConditions"]:
            if condition["name"] in ("not-nsprov", "is-nsprov"):
                found.add(condition["expression"].split("'")[1])
    return found


def test_another_selector_renders_the_same_in_kustomize_and_helm(
    helm: Path, tmp_path: Path
) -> None:
    """The selector component with its ConfigMap = the chart's selector value: every
    object the same, and nothing left of the default selector (a policy still matching it
    would protect nothing nsprov makes)."""
    selector = "example.com/ci=ephemeral"
    values = {"selector": selector, "serviceAccountNamespace": "nsprov",
              "serviceAccountName": "nsprov"}  # fmt: skip
    text = _run(build.ensure_built().kubectl, "kustomize", _selector_overlay(tmp_path, values))
    base = _by_identity(text)
    del base[("Namespace", "", "nsprov")]
    chart_text = _template(helm, "--set", f"selector={selector}")
    chart = _without_helm_labels(_by_identity(chart_text))
    assert sorted(chart) == sorted(base)
    for key, doc in base.items():
        assert _spaced(chart[key]) == _spaced(doc), f"{key} differs from the component's"
    for rendered in (text, chart_text):
        assert "observatorium" not in rendered
        assert "namespace-selector" not in rendered
    assert _usernames(base) == {"system:serviceaccount:nsprov:nsprov"}
    # What the policies match by, and the flag that makes nsprov label by it.
    protect = base[("ValidatingAdmissionPolicy", "", "nsprov-protect")]["spec"]
    variables = {v["name"]: v["expression"] for v in protect["variables"]}
    assert (variables["selectorKey"], variables["selectorValue"]) == (
        "'example.com/ci'",
        "'ephemeral'",
    )
    assert selector in protect["validations"][0]["message"]
    for name in ("finalizers", "grace", "services"):
        policy = base[("ValidatingAdmissionPolicy", "", f"nsprov-{name}")]["spec"]
        assert policy["matchConstraints"]["namespaceSelector"] == {
            "matchExpressions": [
                {"key": "example.com/ci", "operator": "In", "values": ["ephemeral"]}
            ]
        }
    confine = base[("ValidatingAdmissionPolicy", "", "nsprov-confine")]["spec"]
    assert f"labelled {selector}, and may not" in _spaced(confine["validations"][1]["message"])
    container = base[("Deployment", "nsprov", "nsprov")]["spec"]["template"]["spec"]
    env = {e["name"]: e.get("value") for e in container["containers"][0]["env"]}
    assert env["NSPROV_SELECTOR"] == selector
    # Its ConfigMaps are read, never applied.
    assert not {key for key in base if key[0] == "ConfigMap"}


def test_the_selector_component_exempts_the_service_account_it_is_given(tmp_path: Path) -> None:
    values = {"selector": "example.com/ci=ephemeral", "serviceAccountNamespace": "ci-tools",
              "serviceAccountName": "ci-nsprov"}  # fmt: skip
    text = _run(build.ensure_built().kubectl, "kustomize", _selector_overlay(tmp_path, values))
    assert _usernames(_by_identity(text)) == {"system:serviceaccount:ci-tools:ci-nsprov"}
    assert "nsprov:nsprov" not in text


def test_the_example_values_take_over_the_go_tools_namespaces(tmp_path: Path) -> None:
    """k8s/examples/selector.yaml, as an operator copies it, builds with the component."""
    example = yaml.safe_load((REPO / "k8s" / "examples" / "selector.yaml").read_text())
    overlay = _selector_overlay(tmp_path, example["data"])
    objects = _by_identity(_run(build.ensure_built().kubectl, "kustomize", overlay))
    container = objects[("Deployment", "nsprov", "nsprov")]["spec"]["template"]["spec"]
    env = {e["name"]: e.get("value") for e in container["containers"][0]["env"]}
    assert env["NSPROV_SELECTOR"] == "controller.observatorium.io=namespace-selector"
    assert _usernames(objects) == {"system:serviceaccount:nsprov:nsprov"}


def test_the_selector_component_without_its_values_does_not_build(tmp_path: Path) -> None:
    """Forgetting the ConfigMap fails the build rather than keep the default selector."""
    kubectl = build.ensure_built().kubectl
    result = subprocess.run(
        [str(kubectl), "kustomize", str(_selector_overlay(tmp_path, None))],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode != 0
    assert "nsprov-selector" in result.stderr, result.stderr


def _spaced(value: Any) -> Any:
    """Every string with its runs of whitespace made one space.

    kustomize (go-yaml v3) reads a folded scalar's more-indented lines with one line break
    more than the YAML spec (and helm, and PyYAML) do; in the CEL of the admission policies,
    the only such scalars, whitespace means nothing.
    """
    if isinstance(value, str):
        return " ".join(value.split())
    if isinstance(value, dict):
        return {k: _spaced(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_spaced(v) for v in value]
    return value


def test_helm_lint_passes(helm: Path, every_value: Path) -> None:
    out = _run(helm, "lint", "--strict", CHART)
    assert "1 chart(s) linted, 0 chart(s) failed" in out, out
    out = _run(helm, "lint", "--strict", CHART, "--values", every_value)
    assert "1 chart(s) linted, 0 chart(s) failed" in out, out


@pytest.fixture
def every_value(tmp_path: Path) -> Path:
    """A values file that sets every value the chart has."""
    values = {
        "image": {"repository": "registry.example/nsprov", "tag": "9.9.9", "pullPolicy": "Always"},
        "replicas": 3,
        "selector": "example.com/ci=ephemeral",
        "grant": {
            "name": "ci-grant",
            "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list"]}],
        },
        "bindClusterRoles": ["view"],
        "tokens": {"create": {"ci-main": "a" * 64}},
        "policy": {"defaults": {"ttl": "1h"}},
        "resources": {"limits": {"memory": "512Mi"}},
        "env": [{"name": "NSPROV_SERVER", "value": "https://k8s.example:6443"}],
        "podAnnotations": {"example.com/rev": "2"},
    }
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


def test_values_change_what_they_name(helm: Path, every_value: Path) -> None:
    text = _template(helm, "--values", str(every_value), release="ci", namespace="ci-tools")
    objects = _by_identity(text)
    # Names: "nsprov" becomes the release's full name; no cluster-scoped name is shared with
    # a default installation, and every reference follows.
    assert ("ClusterRole", "", "ci-nsprov") in objects
    assert ("ClusterRole", "", "ci-grant") in objects
    assert ("ValidatingAdmissionPolicy", "", "ci-nsprov-protect") in objects
    binding = objects[("ClusterRoleBinding", "", "ci-nsprov")]
    assert binding["roleRef"]["name"] == "ci-nsprov"
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "ci-nsprov", "namespace": "ci-tools"}
    ]
    vap_binding = objects[("ValidatingAdmissionPolicyBinding", "", "ci-nsprov-confine")]
    assert vap_binding["spec"]["policyName"] == "ci-nsprov-confine"
    # Everything in the release's namespace, but the Role that lets nsprov record Events
    # about (cluster-scoped) Namespaces, which live in default.
    assert {(kind, ns) for kind, ns, _ in objects if ns not in ("", "ci-tools")} == {
        ("Role", "default"),
        ("RoleBinding", "default"),
    }
    events = objects[("RoleBinding", "default", "ci-nsprov-events")]
    assert events["subjects"] == [
        {"kind": "ServiceAccount", "name": "ci-nsprov", "namespace": "ci-tools"}
    ]
    # The admission policies protect this installation's selector and exempt its identity:
    # nothing of the defaults is left in them.
    assert "system:serviceaccount:ci-tools:ci-nsprov" in text
    assert "nsprov:nsprov" not in text
    assert "observatorium" not in text
    finalizers = objects[("ValidatingAdmissionPolicy", "", "ci-nsprov-finalizers")]
    assert finalizers["spec"]["matchConstraints"]["namespaceSelector"] == {
        "matchExpressions": [{"key": "example.com/ci", "operator": "In", "values": ["ephemeral"]}]
    }
    # The grant, and nsprov's bind on it and on the policy's roles.
    assert objects[("ClusterRole", "", "ci-grant")]["rules"][0]["resources"] == ["configmaps"]
    binds = [r for r in objects[("ClusterRole", "", "ci-nsprov")]["rules"] if "bind" in r["verbs"]]
    assert [r["resourceNames"] for r in binds] == [["ci-grant", "view"]]
    # The Deployment.
    deployment = objects[("Deployment", "ci-tools", "ci-nsprov")]
    assert deployment["spec"]["replicas"] == 3
    pod = deployment["spec"]["template"]
    assert pod["metadata"]["annotations"] == {"example.com/rev": "2"}
    assert pod["spec"]["serviceAccountName"] == "ci-nsprov"
    container = pod["spec"]["containers"][0]
    assert container["image"] == "registry.example/nsprov:9.9.9"
    assert container["imagePullPolicy"] == "Always"
    assert container["resources"] == {"limits": {"memory": "512Mi"}}
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["NSPROV_SELECTOR"] == "example.com/ci=ephemeral"
    assert env["NSPROV_CLUSTER_ROLE"] == "ci-grant"
    assert env["NSPROV_POLICY_FILE"] == "/etc/nsprov/policy/policy.yaml"
    assert env["NSPROV_SERVER"] == "https://k8s.example:6443"
    assert env["NSPROV_TOKEN_FILE"] == "/etc/nsprov/tokens/tokens"  # the base's, kept
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert volumes["tokens"]["secret"]["secretName"] == "ci-nsprov-tokens"
    assert volumes["policy"]["configMap"]["name"] == "ci-nsprov-policy"
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts["policy"] == "/etc/nsprov/policy"
    # The Secret and the ConfigMap the values made.
    secret = objects[("Secret", "ci-tools", "ci-nsprov-tokens")]
    assert secret["stringData"]["tokens"].strip() == "ci-main: " + "a" * 64
    policy = objects[("ConfigMap", "ci-tools", "ci-nsprov-policy")]
    assert yaml.safe_load(policy["data"]["policy.yaml"]) == {"defaults": {"ttl": "1h"}}


def test_switches_and_an_existing_secret(helm: Path) -> None:
    flags = (
        "--set", "admissionPolicies.enabled=false", "--set", "networkPolicy.enabled=false",
        "--set", "serviceMonitor.enabled=false", "--set", "prometheusRule.enabled=false",
        "--set", "tokens.existingSecret=ci-tokens", "--set", "tokens.create.x=y",
        "--set-string", "policy=defaults: {ttl: 2h}",
    )  # fmt: skip
    objects = _by_identity(_template(helm, *flags))
    kinds = {kind for kind, _, _ in objects}
    assert not kinds & {"ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"}
    assert not kinds & {"NetworkPolicy", "ServiceMonitor", "PrometheusRule"}
    # Nothing else of the base is left out.
    left_out = {"ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding", "NetworkPolicy",
                "ServiceMonitor", "PrometheusRule", "Namespace"}  # fmt: skip
    base = {(kind, name) for kind, _, name in _kustomized() if kind not in left_out}
    assert base <= {(kind, name) for kind, _, name in objects}
    assert "Secret" not in kinds  # an existing Secret wins over create
    pod = objects[("Deployment", "nsprov", "nsprov")]["spec"]["template"]["spec"]
    tokens = next(v for v in pod["volumes"] if v["name"] == "tokens")
    assert tokens["secret"]["secretName"] == "ci-tokens"
    policy = objects[("ConfigMap", "nsprov", "nsprov-policy")]["data"]["policy.yaml"]
    assert yaml.safe_load(policy) == {"defaults": {"ttl": "2h"}}


def test_a_selector_without_a_value_is_refused(helm: Path) -> None:
    def refusal(*flags: str) -> str:
        result = subprocess.run(
            [str(helm), "template", "nsprov", str(CHART), "--set", "selector=novalue", *flags],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode != 0
        return result.stderr

    # values.schema.json refuses it, and so does the template where the schema is skipped.
    assert "at '/selector': 'novalue' does not match pattern" in refusal()
    skipped = refusal("--skip-schema-validation")
    assert 'selector "novalue" is not key=value' in skipped


def test_the_schema_refuses_a_misspelt_value(helm: Path) -> None:
    result = subprocess.run(
        [str(helm), "template", "nsprov", str(CHART), "--set", "replica=3"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    assert "additional properties 'replica' not allowed" in result.stderr


@pytest.mark.parametrize(
    "selector",
    [
        "example.com/ci = ephemeral",  # nsprov strips the spaces, the policies' CEL did not
        "example.com/ci=ephemeral,team=a",
        "a'b=c",
        "example.com/ci=a\\b",
        "-ci=ephemeral",
    ],
)
def test_a_selector_that_is_no_label_is_refused(helm: Path, tmp_path: Path, selector: str) -> None:
    """The policies would guard a label nsprov never writes (or none): refused at render."""
    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump({"selector": selector}))
    result = subprocess.run(
        [str(helm), "template", "nsprov", str(CHART), "-f", str(values)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0, f"rendered policies for {selector!r}"
    assert "at '/selector'" in result.stderr
