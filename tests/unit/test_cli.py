from __future__ import annotations

import logging
import os

import pytest

from nsprov import cli


def _settings(monkeypatch: pytest.MonkeyPatch, *args: str, **env: str):
    for key in list(os.environ):
        if key.startswith("NSPROV_"):
            monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    parsed = cli._parser().parse_args(["serve", *args])
    return cli.settings_from_args(parsed)


def test_defaults_follow_the_original_tool(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = _settings(monkeypatch, NSPROV_TOKEN="t" * 20)
    assert settings.listen == ":8080"
    assert settings.listen_internal == ":9090"
    assert settings.cluster_role == "namespace-provisioner-grant"
    assert settings.ttl == 3600
    assert settings.max_ttl == 86400
    assert settings.min_ttl == 30
    assert settings.max_lifetime == 72 * 3600
    assert settings.prefix == "np"
    assert settings.selector == "controller.observatorium.io=namespace-provisioner"
    assert settings.tokens == {"default": "t" * 20}


def test_env_fallback_and_flag_precedence(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = _settings(
        monkeypatch, "--ttl=10m", NSPROV_TOKEN_FILE="/x", NSPROV_TTL="5m", NSPROV_MAX_TTL="2h"
    )
    assert settings.ttl == 600
    assert settings.max_ttl == 7200
    assert str(settings.token_file) == "/x"


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        ([], "no token configured"),
        (["--token=x" * 3, "--ttl=5"], "--ttl: missing unit"),
        (["--token=x" * 3, "--ttl=3h", "--max-ttl=2h"], "must not exceed"),
        (["--token=x" * 3, "--max-ttl=-1h"], "--max-ttl must be positive"),
        (["--token=x" * 3, "--prefix=NP"], "prefix"),
        (["--token=x" * 3, "--selector=nolabel"], "key=value"),
        (["--token=x" * 3, "--max-namespaces=many"], "whole number"),
        (["--token=x" * 3, "--pod-security=strict"], "--pod-security"),
        (["--token=x" * 3, "--ttl=1m", "--min-ttl=2m"], "--min-ttl must not exceed --ttl"),
        (["--token=x" * 3, "--min-ttl=0s"], "--min-ttl must be positive"),
        (["--token=x" * 3, "--max-ttl=73h"], "--max-ttl must not exceed --max-lifetime"),
        (["--token=x" * 3, "--max-lifetime=soon"], "--max-lifetime: invalid"),
        (
            ["--token=x" * 3, "--ca-file=/nonexistent/ca.crt"],
            "--ca-file /nonexistent/ca.crt: No such",
        ),
        (["--token=x" * 3, "--ca-file=/dev/null"], "no PEM certificate"),
    ],
)
def test_bad_configuration_names_the_flag(
    monkeypatch: pytest.MonkeyPatch, args: list[str], reason: str
) -> None:
    with pytest.raises(cli.ConfigError, match=reason):
        _settings(monkeypatch, *args)


def test_refuses_to_start_without_a_token(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for key in list(os.environ):
        if key.startswith("NSPROV_"):
            monkeypatch.delenv(key)
    assert cli.main(["serve"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "no token configured" in err


@pytest.mark.parametrize(
    ("address", "split"),
    [(":8080", ("0.0.0.0", 8080)), ("127.0.0.1:9", ("127.0.0.1", 9)), ("[::1]:80", ("::1", 80))],
)
def test_split_address(address: str, split: tuple[str, int]) -> None:
    assert cli.split_address(address) == split


@pytest.mark.parametrize("address", ["8080", "host:", "host:http"])
def test_bad_address(address: str) -> None:
    with pytest.raises(cli.ConfigError, match="host:port"):
        cli.split_address(address)


@pytest.mark.parametrize(
    ("name", "level"),
    [
        ("all", logging.DEBUG),
        ("debug", logging.DEBUG),
        ("INFO", logging.INFO),
        ("warn", logging.WARNING),
        ("warning", logging.WARNING),
        ("error", logging.ERROR),
        ("none", logging.CRITICAL + 10),
    ],
)
def test_log_levels_of_the_go_tool_and_of_python(name: str, level: int) -> None:
    assert cli.log_level(name) == level


@pytest.mark.parametrize(
    "args",
    [
        ["serve", "--log-level=verbose"],
        ["serve", "--ca-file=/nonexistent/ca.crt"],
    ],
)
def test_bad_flags_are_one_line_and_exit_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], args: list[str]
) -> None:
    for key in list(os.environ):
        if key.startswith("NSPROV_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("NSPROV_TOKEN", "t" * 20)
    assert cli.main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert err.startswith("nsprov: --")


def test_a_policy_file_alone_is_enough_to_start(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = _settings(monkeypatch, NSPROV_POLICY_FILE="/etc/nsprov/policy.yaml")
    assert str(settings.policy_file) == "/etc/nsprov/policy.yaml"
    assert settings.tokens == {}
    assert settings.token_file is None


def test_a_bad_policy_file_refuses_to_start_with_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path
) -> None:
    for key in list(os.environ):
        if key.startswith("NSPROV_"):
            monkeypatch.delenv(key)
    policy = tmp_path / "policy.yaml"
    policy.write_text("tenants: [{name: t, match: {tokn: ci}}]")
    assert cli.main(["serve", f"--policy-file={policy}"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "tenants[0].match: unknown key 'tokn'" in err
    policy.write_text("tenants: []")
    assert cli.main(["serve", f"--policy-file={policy}"]) == 2
    assert "trusts no issuer and no token is configured" in capsys.readouterr().err
