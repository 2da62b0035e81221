from __future__ import annotations

import pytest
import yaml

from nsprov.provision import kubeconfig


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


def test_rendered_as_the_pure_python_emitter_would() -> None:
    """The libyaml emitter (when PyYAML has it) writes what yaml.safe_dump always wrote."""
    for server, token in [
        ("https://127.0.0.1:6443", "eyJhbGciOiJSUzI1NiJ9." + "x" * 900 + ".sig-_"),
        ("https://k8s.example:443/some/path", "yes"),  # a scalar YAML would read as a bool
        ("http://[::1]:8080", "tok: with # odd 'chars' \"and\" - more"),
    ]:
        config = kubeconfig.build(
            server=server, ca_data="Q0E=" * 400, namespace="np-x", token=token
        )
        text = kubeconfig.render(config)
        assert text == yaml.safe_dump(config, sort_keys=False)
        assert yaml.safe_load(text) == config


def test_libyaml_emitter_in_use_when_available() -> None:
    if not yaml.__with_libyaml__:
        pytest.skip("this PyYAML is built without libyaml")
    assert kubeconfig._Dumper is yaml.CSafeDumper
