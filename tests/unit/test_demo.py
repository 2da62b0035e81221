"""make demo's choice of cluster: local unless NSPROV_DEMO_KUBECONFIG names another, which it
then describes before writing anything; and what it says about a missing or empty grant."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests import demo


def _kubeconfig(path: Path, server: str, context: str = "prod-admin") -> Path:
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "prod", "cluster": {"server": server}}],
                "users": [{"name": "admin", "user": {"token": "t"}}],
                "contexts": [{"name": context, "context": {"cluster": "prod", "user": "admin"}}],
                "current-context": context,
            }
        )
    )
    return path


def test_kubeconfig_and_home_config_are_never_chosen_only_named(tmp_path: Path) -> None:
    production = _kubeconfig(tmp_path / "prod", "https://prod.example.com")
    home = tmp_path / "home"
    (home / ".kube").mkdir(parents=True)
    _kubeconfig(home / ".kube" / "config", "https://also-prod.example.com")
    repo = tmp_path / "repo"

    choice = demo.choose_cluster({"KUBECONFIG": str(production)}, home, repo)
    assert choice == demo.ClusterChoice(None, local=True, not_used=str(production))
    choice = demo.choose_cluster({}, home, repo)
    assert choice == demo.ClusterChoice(None, local=True, not_used=str(home / ".kube" / "config"))
    assert demo.choose_cluster({}, tmp_path / "empty-home", repo).not_used is None


def test_make_clusters_control_plane_comes_before_a_fresh_one(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    (repo / ".cluster").mkdir(parents=True)
    local = _kubeconfig(repo / ".cluster" / "kubeconfig", "https://127.0.0.1:6443")
    choice = demo.choose_cluster({}, tmp_path, repo)
    assert choice == demo.ClusterChoice(local, local=True, not_used=None)


def test_another_cluster_only_by_the_explicit_variable(tmp_path: Path) -> None:
    other = _kubeconfig(tmp_path / "staging", "https://staging.example.com:6443", "staging")
    repo = tmp_path / "repo"
    (repo / ".cluster").mkdir(parents=True)
    _kubeconfig(repo / ".cluster" / "kubeconfig", "https://127.0.0.1:6443")
    env = {demo.EXPLICIT: str(other), "KUBECONFIG": str(tmp_path / "prod")}
    assert demo.choose_cluster(env, tmp_path, repo) == demo.ClusterChoice(
        other, local=False, not_used=None
    )
    assert demo.describe_cluster(other) == ("https://staging.example.com:6443", "staging")
    with pytest.raises(SystemExit, match="no such file"):
        demo.choose_cluster({demo.EXPLICIT: str(tmp_path / "missing")}, tmp_path, repo)


def test_a_kubeconfig_without_a_current_context_is_refused(tmp_path: Path) -> None:
    path = _kubeconfig(tmp_path / "kc", "https://x.example.com")
    config = yaml.safe_load(path.read_text())
    config["current-context"] = ""
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(SystemExit, match="no current context"):
        demo.describe_cluster(path)


def test_grant_advice_says_how_to_make_a_missing_or_empty_grant(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kc"
    missing = demo.grant_advice(None, kubeconfig)
    assert missing is not None
    assert "does not exist" in missing
    assert f"KUBECONFIG={kubeconfig} kubectl apply -f " in missing
    assert "deploy/overlay/grant.yaml" in missing
    assert (Path(demo.__file__).parents[1] / "deploy/overlay/grant.yaml").exists()
    empty = demo.grant_advice({"metadata": {"name": demo.GRANT}, "rules": []}, kubeconfig)
    assert empty is not None
    assert "grants nothing" in empty
    rules = [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]}]
    assert demo.grant_advice({"rules": rules}, kubeconfig) is None
