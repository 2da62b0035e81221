from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import click
import pytest

from nsprov import cli
from nsprov.core.settings import Settings, flag_specs


def _settings(monkeypatch: pytest.MonkeyPatch, *args: str, **env: str):
    for key in list(os.environ):
        if key.startswith("NSPROV_"):
            monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return cli.settings_from_argv(args)


def test_defaults_follow_the_original_tool(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = _settings(monkeypatch, NSPROV_TOKEN="t" * 20)
    assert settings.listen == ":8080"
    assert settings.listen_internal == ":9090"
    assert settings.cluster_role == "namespace-provisioner-grant"
    assert settings.ttl == 3600
    assert settings.max_ttl == 86400
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
        (["--token=x" * 3, "--max-namespaces=many"], "--max-namespaces must be a whole number"),
        (["--token=x" * 3, "--leader-elect=maybe"], "--leader-elect must be true or false"),
        (["--token=x" * 3, "--leader-elect-lease-duration=1s"], "at least 3s"),
        (["--token=x" * 3, "--listen=8080"], "host:port"),
        (["--token=x" * 3, "--log-level=loud"], "--log-level"),
        (["--token=x" * 3, "--ttl=1m", "--min-ttl=2m"], "--min-ttl must not exceed --ttl"),
        (["--token=x" * 3, "--min-ttl=0s"], "--min-ttl must be positive"),
        (["--token=x" * 3, "--max-ttl=73h"], "--max-ttl must not exceed --max-lifetime"),
        (["--token=x" * 3, "--max-lifetime=soon"], "--max-lifetime: invalid"),
        (
            ["--token=x" * 3, "--ca-file=/nonexistent/ca.crt"],
            "--ca-file /nonexistent/ca.crt: No such",
        ),
        (["--token=x" * 3, "--ca-file=/dev/null"], "no PEM certificate"),
        (["--token=x" * 3, "--pod-security=strict"], "--pod-security"),
        (["--token=x" * 3, "--max-request-head=1000"], "--max-request-head must be at least"),
        (["--token=x" * 3, "--max-connections=0"], "--max-connections must be at least 1"),
        (["--token=x" * 3, "--max-requests-in-flight=0"], "--max-requests-in-flight must be"),
        (["--token=x" * 3, "--request-read-timeout=0s"], "--request-read-timeout must be"),
        (["--token=x" * 3, "--access-log=maybe"], "--access-log must be true or false"),
        # One port for both: whichever binds first takes it, and the other exits after the
        # probes may already have passed (a CI run's nsprov answered POSTs 404 from /readyz's app).
        (
            ["--token=x" * 3, "--listen=127.0.0.1:8080", "--listen-internal=127.0.0.1:8080"],
            "--listen-internal must not be --listen's port",
        ),
        (
            ["--token=x" * 3, "--listen=:8080", "--listen-internal=127.0.0.1:8080"],
            "--listen-internal must not be --listen's port",
        ),
        (
            ["--token=x" * 3, "--listen=[::1]:9", "--listen-internal=[::]:9"],
            "--listen-internal must not be --listen's port",
        ),
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


def test_the_same_port_on_two_addresses_is_allowed(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = _settings(
        monkeypatch, "--token=xxx", "--listen=127.0.0.1:8080", "--listen-internal=127.0.0.2:8080"
    )
    assert settings.listen_internal == "127.0.0.2:8080"


@pytest.mark.parametrize("address", ["8080", "host:", "host:http"])
def test_bad_address(address: str) -> None:
    with pytest.raises(cli.ConfigError, match="host:port"):
        cli.split_address(address)


@pytest.mark.parametrize(
    ("args", "env", "expected"),
    [
        ([], {}, True),
        (["--leader-elect"], {}, True),
        (["--leader-elect=false"], {}, False),
        (["--leader-elect=true"], {}, True),
        (["--leader-elect=0"], {}, False),
        ([], {"NSPROV_LEADER_ELECT": "false"}, False),
        (["--leader-elect"], {"NSPROV_LEADER_ELECT": "false"}, True),
    ],
)
def test_boolean_flags_take_go_forms(
    monkeypatch: pytest.MonkeyPatch, args: list[str], env: dict[str, str], expected: bool
) -> None:
    settings = _settings(monkeypatch, *args, NSPROV_TOKEN="t" * 20, **env)
    assert settings.leader_elect is expected


def test_a_bare_boolean_flag_does_not_swallow_the_next_flag(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = _settings(
        monkeypatch, "--allow-unsafe-grant", "--controller=false", NSPROV_TOKEN="t" * 20
    )
    assert settings.allow_unsafe_grant is True
    assert settings.controller is False


def test_every_default_is_the_settings_default(monkeypatch: pytest.MonkeyPatch) -> None:
    """The flags take their defaults from Settings: nothing is declared twice."""
    parsed = _settings(monkeypatch, NSPROV_TOKEN="t" * 20)
    declared = Settings()
    for spec in flag_specs():
        if spec.shown is None and spec.kind != "token":
            assert getattr(parsed, spec.field) == getattr(declared, spec.field), spec.name


def test_every_setting_has_its_env_var(monkeypatch: pytest.MonkeyPatch) -> None:
    names = {o.name: o for o in cli.serve.params if isinstance(o, click.Option)}
    for spec in flag_specs():
        assert names[spec.field].envvar == "NSPROV_" + spec.name.upper().replace("-", "_")
    settings = _settings(
        monkeypatch,
        NSPROV_TOKEN="t" * 20,
        NSPROV_MIN_TTL="1m",
        NSPROV_MAX_LIFETIME="96h",
        NSPROV_ADOPT_TTL="2h",
        NSPROV_POLICY_FILE="/etc/nsprov/policy.yaml",
        NSPROV_LOG_LEVEL="WARN",
        NSPROV_MAX_NAMESPACES="7",
        NSPROV_POD_SECURITY="",
    )
    assert (settings.min_ttl, settings.max_lifetime, settings.adopt_ttl) == (60, 96 * 3600, 7200)
    assert str(settings.policy_file) == "/etc/nsprov/policy.yaml"
    assert settings.log_level == "warn"
    assert settings.max_namespaces == 7
    assert settings.pod_security == ""


@pytest.mark.parametrize(
    ("seconds", "text"), [(3600, "1h"), (5400, "1h30m"), (30, "30s"), (259200, "72h"), (0, "0s")]
)
def test_go_duration(seconds: float, text: str) -> None:
    assert cli.go_duration(seconds) == text


def test_serve_without_the_server_libraries_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(cli, "missing_server_modules", lambda: ["kubernetes", "uvicorn"])
    monkeypatch.setenv("NSPROV_TOKEN", "t" * 20)
    assert cli.main(["serve"]) == 2
    err = capsys.readouterr().err
    assert err == (
        "nsprov: serve needs the server's libraries (kubernetes, uvicorn missing): "
        "pip install 'nsprov[server]'\n"
    )


def test_an_unknown_command_is_one_line_and_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["serf"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "serf" in err


def test_an_empty_path_or_url_means_none(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = _settings(
        monkeypatch, "--kubeconfig=", "--ca-file=", "--server=", NSPROV_TOKEN_FILE="/t"
    )
    assert (settings.kubeconfig, settings.ca_file, settings.server) == (None, None, None)
    assert settings.tokens == {}
    settings = _settings(monkeypatch, "--kubeconfig=/k", NSPROV_TOKEN_FILE="/t")
    assert settings.kubeconfig == "/k"


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


def test_a_policy_file_alone_is_enough_to_start(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = _settings(monkeypatch, NSPROV_POLICY_FILE="/etc/nsprov/policy.yaml")
    assert str(settings.policy_file) == "/etc/nsprov/policy.yaml"
    assert settings.tokens == {}


def _documented_flag_rows() -> list[tuple[list[str], list[str]]]:
    """(flags, code-formatted defaults) of every table row in the operator docs that documents
    a flag (docs/operator/configuration.md has serve's, controller.md the controller's)."""
    pages = sorted((Path(__file__).resolve().parents[2] / "docs" / "operator").glob("*.md"))
    rows = []
    for line in "\n".join(page.read_text() for page in pages).splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if line.startswith("| `--") and len(cells) >= 3:
            rows.append(
                (re.findall(r"`(--[a-z-]+)`", cells[0]), re.findall(r"`([^`]*)`", cells[1]))
            )
    return rows


def test_the_documented_flag_tables_are_true() -> None:
    """Every serve flag is documented, and every documented default is the one nsprov uses."""
    specs = {f"--{spec.name}": spec for spec in flag_specs()}
    rows = _documented_flag_rows()
    documented = {flag for flags, _ in rows for flag in flags}
    assert documented == set(specs)
    for flags, defaults in rows:
        if not defaults or len(defaults) not in (1, len(flags)):
            continue
        for flag, default in zip(flags, defaults * len(flags) if len(defaults) == 1 else defaults,
                                 strict=False):  # fmt: skip
            if specs[flag].shown is None:
                assert cli.flag_default(specs[flag]) == default, flag


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


def test_a_bad_policy_file_refuses_to_start_with_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
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
