from __future__ import annotations

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

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


# Strings that are plain in YAML and strings that are not: indicators first or after a
# space, ': ' and ' #', breaks, leading and trailing spaces, non-ASCII, words YAML reads
# as something else (yes, null, 1.5, 0x1F, 1:20, 2001-01-01, =, <<, ~).
_TRICKY = st.sampled_from(
    ["yes", "No", "on", "null", "~", "", "=", "<<", "1", "-1", "1.5", ".inf", "0x1F", "1:20",
     "2001-01-01", "---", "...", "- a", "? a", ": a", "a:", "a: b", "a #b", "a#b", "#a",
     "'a'", '"a"', "&a", "*a", "!a", "|", ">", "%a", "@a", "`a", " a", "a ", "a\nb", "\t",
     "é", "\x85", "\u2028", "\ufeff", "\U0001f600", "[::1]", "{a}", "a,b"]
)  # fmt: skip
_PLAIN_ALPHABET = "abcxyzAZ059._~/+=:%[]-#!&*?,'\"@ "
_VALUE = st.one_of(
    _TRICKY,
    st.text(alphabet=_PLAIN_ALPHABET, max_size=40),
    st.lists(st.one_of(_TRICKY, st.text(alphabet=_PLAIN_ALPHABET, max_size=5))).map("".join),
    st.text(),
)


@settings(derandomize=True, database=None, deadline=None, max_examples=1000)
@given(server=_VALUE, ca_data=st.none() | _VALUE, namespace=_VALUE, token=_VALUE)
def test_rendered_as_yaml_dump_would_for_any_strings(
    server: str, ca_data: str | None, namespace: str, token: str
) -> None:
    """What render writes without PyYAML is what yaml.dump writes, and reads back the same."""
    _assert_rendered_as_yaml_dump_would(server, ca_data, namespace, token)


def _assert_rendered_as_yaml_dump_would(
    server: str, ca_data: str | None, namespace: str, token: str
) -> None:
    config = kubeconfig.build(server=server, ca_data=ca_data, namespace=namespace, token=token)
    text = kubeconfig.render(config)
    assert text == yaml.dump(config, Dumper=kubeconfig._Dumper, sort_keys=False)
    assert yaml.safe_load(text) == config


# Strings of the template's characters (and a few of the words above), so that all four
# values are often plain: the template's own path, against yaml.dump's.
_PLAINISH = st.one_of(
    st.from_regex(r"[A-Za-z][A-Za-z0-9._~/+=:%\[\]-]{0,30}", fullmatch=True),
    st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._~/+=:%\[\]-]{0,30}", fullmatch=True),
    _TRICKY,
)


@settings(derandomize=True, database=None, deadline=None, max_examples=1000)
@given(server=_PLAINISH, ca_data=st.none() | _PLAINISH, namespace=_PLAINISH, token=_PLAINISH)
def test_rendered_as_yaml_dump_would_for_plain_looking_strings(
    server: str, ca_data: str | None, namespace: str, token: str
) -> None:
    _assert_rendered_as_yaml_dump_would(server, ca_data, namespace, token)


def test_usual_values_skip_pyyaml(monkeypatch: pytest.MonkeyPatch) -> None:
    """A server URL, base64 CA data, a DNS label and a JWT are written by the template."""
    configs = [
        kubeconfig.build(
            server=server,
            ca_data=ca_data,
            namespace="np-3f9c2a7b1d",
            token="eyJhbGciOiJSUzI1NiJ9." + "x" * 900 + ".sig-_",
        )
        for server in ["https://10.96.0.1:443", "https://[fd00::1]:6443/k8s", "http://k8s"]
        for ca_data in ["LS0tLS1CRUdJTi+/" * 100 + "==", None]
    ]
    dumped = [yaml.dump(config, Dumper=kubeconfig._Dumper, sort_keys=False) for config in configs]

    def no_dump(*args: object, **kwargs: object) -> str:
        raise AssertionError("yaml.dump called")

    monkeypatch.setattr(yaml, "dump", no_dump)
    assert [kubeconfig.render(config) for config in configs] == dumped


def test_other_documents_rendered_by_pyyaml() -> None:
    config = kubeconfig.build(server="https://k8s", ca_data=None, namespace="np-a", token="t")
    config["preferences"] = {"colors": True}
    assert yaml.safe_load(kubeconfig.render(config)) == config
