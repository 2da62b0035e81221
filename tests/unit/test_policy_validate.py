"""``nsprov policy validate``: offline, a reload's checks and messages, exit 0 or 2."""

from __future__ import annotations

import io
import os
import sys
from pathlib import Path

import pytest

from nsprov import cli
from nsprov.policy.file import PolicyError, PolicyFile

GOOD = "tenants: [{name: ci, match: {token: ci}, ttl: 30m}]\n"
BAD = "tenants: [{name: ci, match: {tokn: ci}}]\n"


@pytest.fixture(autouse=True)
def _no_nsprov_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("NSPROV_"):
            monkeypatch.delenv(key)
    # Offline means offline: no kubeconfig to find, nothing to talk to.
    monkeypatch.setenv("KUBECONFIG", "/nonexistent/kubeconfig")


def test_a_valid_file_exits_0_and_says_what_was_not_checked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(GOOD)
    assert cli.main(["policy", "validate", str(path)]) == 0
    out, err = capsys.readouterr()
    assert out == f"policy file {path}: valid (0 issuer(s), 1 tenant(s))\n"
    assert err == cli.OFFLINE_NOTE + "\n"


def test_a_bad_file_exits_2_with_the_message_a_refused_reload_has(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(GOOD)
    reloading = PolicyFile(path, recheck_seconds=0)
    path.write_text(BAD)
    reload_error = reloading.status().error
    assert reload_error is not None
    assert "unknown key 'tokn' (did you mean 'token'?)" in reload_error
    assert cli.main(["policy", "validate", str(path)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.splitlines() == [f"nsprov: policy file {path}: {reload_error}", cli.OFFLINE_NOTE]


def test_every_file_is_judged_and_stdin_is_dash(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(GOOD)
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(BAD.encode())))
    missing = tmp_path / "missing.yaml"
    assert cli.main(["policy", "validate", "-", str(good), str(missing)]) == 2
    out, err = capsys.readouterr()
    assert out == f"policy file {good}: valid (0 issuer(s), 1 tenant(s))\n"
    assert err.splitlines()[:2] == [
        "nsprov: policy file <stdin>: tenants[0].match: unknown key 'tokn' (did you mean "
        "'token'?); known: issuer, claims, token",
        f"nsprov: policy file {missing}: No such file or directory",
    ]


def test_tenants_resolve_over_the_flags_as_in_serve(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """ttl 30m is fine under the default --max-ttl, not under the deployment's 10m."""
    path = tmp_path / "policy.yaml"
    path.write_text(GOOD)
    assert cli.main(["policy", "validate", "--max-ttl=10m", "--ttl=5m", str(path)]) == 2
    assert "tenant 'ci': ttl 30m0s is above its maxTTL 10m0s" in capsys.readouterr().err
    monkeypatch.setenv("NSPROV_MAX_TTL", "10m")
    monkeypatch.setenv("NSPROV_TTL", "5m")
    assert cli.main(["policy", "validate", str(path)]) == 2
    assert "above its maxTTL 10m0s" in capsys.readouterr().err


def test_a_ca_file_is_where_nsprov_runs_unless_asked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text("issuers: [{name: a, issuer: 'https://a', audience: x, caFile: ca.crt}]\n")
    assert cli.main(["policy", "validate", str(path)]) == 0
    assert cli.main(["policy", "validate", "--ca-files", str(path)]) == 2
    assert f"issuers[0].caFile: {tmp_path / 'ca.crt'} is not a readable file" in (
        capsys.readouterr().err
    )


def test_the_schema_command_prints_the_shipped_schema(capsys: pytest.CaptureFixture[str]) -> None:
    from nsprov.policy.schema import render

    assert cli.main(["policy", "schema"]) == 0
    assert capsys.readouterr().out == render()


def test_without_the_server_libraries_it_says_what_to_install(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(GOOD)
    monkeypatch.setattr(cli, "missing_server_modules", lambda: ["kubernetes"])
    assert cli.main(["policy", "validate", str(path)]) == 2
    assert capsys.readouterr().err == (
        "nsprov: policy validate needs the server's libraries (kubernetes missing): "
        f"{cli.INSTALL_SERVER}\n"
    )


# Files no YAML reader should choke on: not UTF-8, and nested past Python's recursion limit.
UNREADABLE = {
    "latin-1": ("tenants: []\n# caf\xe9\n".encode("latin-1"), "not UTF-8 text"),
    "deep": (b"tenants: " + b"[" * 5000 + b"]" * 5000 + b"\n", "nested too deeply"),
}


@pytest.mark.parametrize("name", sorted(UNREADABLE))
def test_a_file_no_yaml_reader_takes_is_refused_in_one_line(
    name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    content, reason = UNREADABLE[name]
    path = tmp_path / "policy.yaml"
    path.write_bytes(content)
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(content)))
    assert cli.main(["policy", "validate", str(path), "-"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == 3
    assert lines[0].startswith(f"nsprov: policy file {path}: {reason}")
    assert lines[1].startswith(f"nsprov: policy file <stdin>: {reason}")


@pytest.mark.parametrize("name", sorted(UNREADABLE))
def test_a_reload_of_a_file_no_yaml_reader_takes_keeps_the_last_good_policy(
    name: str, tmp_path: Path
) -> None:
    """Not an exception out of current() (every request's path) once a second."""
    content, reason = UNREADABLE[name]
    path = tmp_path / "policy.yaml"
    path.write_text(GOOD)
    policy = PolicyFile(path, recheck_seconds=0)
    path.write_bytes(content)
    assert [t.name for t in policy.current().tenants] == ["ci"]
    error = policy.status().error
    assert error is not None
    assert error.startswith(reason)
    with pytest.raises(PolicyError, match=reason):
        PolicyFile(path)


@pytest.mark.parametrize("name", sorted(UNREADABLE))
def test_rollout_refuses_a_file_no_yaml_reader_takes_as_serve_does(
    name: str, tmp_path: Path
) -> None:
    from nsprov.core.settings import Settings
    from nsprov.rollout import load_policy

    content, reason = UNREADABLE[name]
    path = tmp_path / "policy.yaml"
    path.write_bytes(content)
    with pytest.raises(PolicyError, match=f"policy file {path}: {reason}"):
        load_policy(Settings(policy_file=path))


def test_a_file_larger_than_any_configmap_is_refused_before_it_is_read_whole(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """/dev/zero, or a log file given by mistake: read at most MAX_POLICY_BYTES + 1 bytes."""
    from nsprov.core.settings import Settings
    from nsprov.policy.file import MAX_POLICY_BYTES
    from nsprov.rollout import load_policy

    path = tmp_path / "policy.yaml"
    path.write_text(GOOD)
    reloading = PolicyFile(path, recheck_seconds=0)
    with path.open("a") as grown:
        grown.truncate(MAX_POLICY_BYTES + 1)
    reason = f"larger than {MAX_POLICY_BYTES} bytes"
    assert [t.name for t in reloading.current().tenants] == ["ci"]
    assert reason in (reloading.status().error or "")
    with pytest.raises(PolicyError, match=reason):
        load_policy(Settings(policy_file=path))
    assert cli.main(["policy", "validate", str(path)]) == 2
    assert f"nsprov: policy file {path}: {reason}" in capsys.readouterr().err
    with path.open("a") as shrunk:
        shrunk.truncate(MAX_POLICY_BYTES)  # as large as a ConfigMap can be: read, then judged
    with pytest.raises(PolicyError) as judged:
        PolicyFile(path)
    assert "larger than" not in str(judged.value)
