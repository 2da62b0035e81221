from __future__ import annotations

import yaml

from nsprov import kubeconfig


def test_one_cluster_user_context_with_namespace() -> None:
    config = kubeconfig.build(
        server="https://k8s:6443", ca_data="Q0E=", namespace="np-abc", token="tok"
    )
    parsed = yaml.safe_load(kubeconfig.render(config))
    assert parsed["current-context"] == "np-abc"
    (cluster,) = parsed["clusters"]
    (user,) = parsed["users"]
    (context,) = parsed["contexts"]
    assert cluster["cluster"] == {
        "server": "https://k8s:6443",
        "certificate-authority-data": "Q0E=",
    }
    assert user["user"] == {"token": "tok"}
    assert context["context"] == {
        "cluster": cluster["name"],
        "user": user["name"],
        "namespace": "np-abc",
    }


def test_no_ca_means_no_ca_field() -> None:
    config = kubeconfig.build(server="http://k8s", ca_data=None, namespace="n", token="t")
    assert config["clusters"][0]["cluster"] == {"server": "http://k8s"}
