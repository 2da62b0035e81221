"""The client's logic without a service: configuration, retries, errors, output, signals.

The service side is a stand-in handler written with httpx's Request and Response
(this is the client's contract with nsprov's HTTP API, not Kubernetes), put in
place of the client's urllib Transport by ``_via_httpx``;
tests/integration/test_client.py runs the same commands against the real service.
"""

from __future__ import annotations

import io
import json
import os
import re
import signal
import socket
import ssl
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import httpx
import pytest

from nsprov import cli, launcher
from nsprov.client import calls as client_
from nsprov.client import cli as client_cli
from nsprov.client.calls import (
    AuthFailed,
    ClientConfig,
    Failure,
    NsprovClient,
    Refused,
    RetryNotice,
    Unavailable,
    UsageFailure,
)
from nsprov.client.cli import Progress, quota_table, table, write_private_file
from nsprov.client.http import AnswerLost, HttpRequest, HttpResponse, NotSent, Transport
from nsprov.client.run import Interrupted, SignalRouter, run_in_namespace
from tests.support import wait_until

URL = "https://nsprov.test"
TOKEN = "s3cret-token-value"
CREATED = {"namespace": "np-abcdefghij", "expiresAt": "2030-01-01T00:00:00Z", "kubeconfig": "k: v"}


Handler = Callable[[httpx.Request], httpx.Response]


def _via_httpx(handler: Handler) -> Transport:
    """The client's Transport answered by ``handler``: httpx.ConnectError is a request that
    was never sent, httpx.ReadTimeout one whose answer was lost."""

    def exchange(request: HttpRequest) -> HttpResponse:
        outgoing = httpx.Request(request.method, request.url, headers=dict(request.headers))
        try:
            answer = handler(outgoing)
        except httpx.ConnectError as exc:
            raise NotSent(ConnectionRefusedError(111, str(exc))) from None
        except httpx.ReadTimeout:
            raise AnswerLost(TimeoutError("timed out")) from None
        headers = {name.lower(): value for name, value in answer.headers.items()}
        return HttpResponse(answer.status_code, answer.reason_phrase, headers, answer.read())

    return exchange


def _client(
    handler: Handler,
    sleeps: list[float] | None = None,
    notices: list[RetryNotice] | None = None,
) -> NsprovClient:
    config = ClientConfig(url=URL, token=TOKEN)
    record = sleeps if sleeps is not None else []
    return NsprovClient(
        config,
        transport=_via_httpx(handler),
        sleep=record.append,
        on_retry=notices.append if notices is not None else None,
    )


def _problem(status: int, title: str, detail: str, **headers: str) -> httpx.Response:
    """nsprov's answer to a failure: problem+json with the request id, also in a header."""
    body = {
        "type": "about:blank", "title": title, "status": status, "detail": detail,
        "requestId": "rid-1234",
    }  # fmt: skip
    return httpx.Response(status, json=body, headers={"X-Request-Id": "rid-1234", **headers})


# ---- configuration ------------------------------------------------------------------------


def test_config_reads_url_and_exactly_one_token(tmp_path: Path) -> None:
    config = ClientConfig.from_env({"NSPROV_URL": "https://n.example/", "NSPROV_TOKEN": " t \n"})
    assert (config.url, config.token) == ("https://n.example", "t")
    assert TOKEN not in repr(ClientConfig(url=URL, token=TOKEN))
    token_file = tmp_path / "token"
    token_file.write_text("from-file\n")
    env = {"NSPROV_URL": URL, "NSPROV_TOKEN_FILE": str(token_file)}
    assert ClientConfig.from_env(env).token == "from-file"
    assert ClientConfig.from_env({"NSPROV_URL": URL, "NSPROV_ID_TOKEN": "eyJ.x.y"}).token == (
        "eyJ.x.y"
    )


@pytest.mark.parametrize(
    ("env", "reason"),
    [
        ({"NSPROV_TOKEN": "t"}, "NSPROV_URL is not set"),
        ({"NSPROV_URL": URL}, "no token"),
        ({"NSPROV_URL": URL, "NSPROV_TOKEN": "a", "NSPROV_ID_TOKEN": "b"}, "only one of"),
        ({"NSPROV_URL": "https://u:p@h", "NSPROV_TOKEN": "t"}, "credentials"),
        ({"NSPROV_URL": "h:8080", "NSPROV_TOKEN": "t"}, "http(s) URL"),
        ({"NSPROV_URL": URL + "?a=b", "NSPROV_TOKEN": "t"}, "query"),
        ({"NSPROV_URL": URL, "NSPROV_TOKEN": "a b"}, "whitespace"),
        ({"NSPROV_URL": URL, "NSPROV_TOKEN_FILE": "/nonexistent/t"}, "cannot read"),
        ({"NSPROV_URL": URL, "NSPROV_TOKEN": "t", "NSPROV_TIMEOUT": "10"}, "NSPROV_TIMEOUT"),
    ],
)
def test_bad_configuration_is_a_usage_failure(env: dict[str, str], reason: str) -> None:
    with pytest.raises(UsageFailure, match=re.escape(reason)) as caught:
        ClientConfig.from_env(env)
    assert caught.value.exit_code == 2


_TOKEN_ENV = {"NSPROV_TOKEN": "t"}


@pytest.mark.parametrize(
    "url",
    [
        "http://nsprov.example.com",
        "http://10.0.0.7:8080",
        "http://0.0.0.0:8080",
        "http://localhost.attacker.example",
        "http://127.0.0.1.nip.io",
        "http://[::ffff:a00:7]",
    ],
)
def test_plain_http_to_a_remote_host_is_refused(url: str) -> None:
    """The bearer token (an OIDC ID token, say) would cross the network readable by anyone."""
    with pytest.raises(UsageFailure) as caught:
        ClientConfig.from_env({"NSPROV_URL": url, **_TOKEN_ENV})
    message = str(caught.value)
    assert caught.value.exit_code == 2
    assert "plain http" in message
    assert "NSPROV_ALLOW_INSECURE_URL=true" in message
    assert "\n" not in message
    for value in ("false", "FALSE", ""):
        with pytest.raises(UsageFailure, match="plain http"):
            ClientConfig.from_env(
                {"NSPROV_URL": url, "NSPROV_ALLOW_INSECURE_URL": value, **_TOKEN_ENV}
            )


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080",
        "http://127.200.3.4",
        "http://[::1]:8080/",
        "http://localhost:8080",
        "http://LocalHost",
        "https://nsprov.example.com",
    ],
)
def test_loopback_and_https_urls_are_accepted(url: str) -> None:
    assert ClientConfig.from_env({"NSPROV_URL": url, **_TOKEN_ENV}).url == url.rstrip("/")


@pytest.mark.parametrize("value", ["true", "True", " TRUE "])
def test_plain_http_to_a_remote_host_only_when_asked_for(value: str) -> None:
    env = {"NSPROV_URL": "http://nsprov.internal", "NSPROV_ALLOW_INSECURE_URL": value}
    assert ClientConfig.from_env({**env, **_TOKEN_ENV}).url == "http://nsprov.internal"


@pytest.mark.parametrize("value", ["1", "yes", "on", "tru"])
def test_the_insecure_override_is_true_or_false(value: str) -> None:
    """A typo is an error, not a silent refusal (or a silent consent) the user cannot explain."""
    env = {"NSPROV_URL": "https://n.example", "NSPROV_ALLOW_INSECURE_URL": value, **_TOKEN_ENV}
    with pytest.raises(UsageFailure, match="NSPROV_ALLOW_INSECURE_URL must be true or false"):
        ClientConfig.from_env(env)


def test_the_cli_refuses_plain_http_in_one_line_before_any_request(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def no_request(*args: object, **kwargs: object) -> None:
        raise AssertionError("a request was made")

    monkeypatch.setattr(NsprovClient, "_call", no_request)
    for name in ("NSPROV_TOKEN_FILE", "NSPROV_ID_TOKEN", "NSPROV_ALLOW_INSECURE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NSPROV_URL", "http://nsprov.example.com")
    monkeypatch.setenv("NSPROV_TOKEN", TOKEN)
    assert cli.main(["list"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("nsprov: NSPROV_URL http://nsprov.example.com is plain http")
    assert "NSPROV_ALLOW_INSECURE_URL=true" in err
    assert err.count("\n") == 1
    assert TOKEN not in err


def test_timeout_overrides_the_deadline() -> None:
    config = ClientConfig.from_env({"NSPROV_URL": URL, "NSPROV_TOKEN": "t", "NSPROV_TIMEOUT": "3s"})
    timing = config.timing(client_.PROVISION_TIMING)
    assert (timing.deadline, timing.attempt_timeout) == (3.0, 3.0)
    assert config.timing(client_.CLEANUP_TIMING).deadline == 3.0
    longer = ClientConfig(url=URL, token="t", timeout=600.0)
    assert longer.timing(client_.PROVISION_TIMING).deadline == 600.0
    assert longer.timing(client_.CLEANUP_TIMING) == client_.CLEANUP_TIMING


# ---- retries ------------------------------------------------------------------------------


def test_create_retries_with_one_idempotency_key() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if len(seen) == 1:
            raise httpx.ConnectError("connection refused")
        if len(seen) == 2:
            return _problem(503, "Cluster Unavailable", "try later", **{"Retry-After": "2"})
        return httpx.Response(201, json=CREATED)

    sleeps: list[float] = []
    with _client(handler, sleeps) as nsprov:
        created = nsprov.create(ttl="30m")
    assert created.namespace == "np-abcdefghij"
    keys = {r.headers["idempotency-key"] for r in seen}
    assert len(seen) == 3
    assert len(keys) == 1
    assert sleeps[1] >= 2  # Retry-After wins over the shorter backoff
    assert all(r.headers["authorization"] == f"Bearer {TOKEN}" for r in seen)
    assert seen[0].url.params["ttl"] == "30m"


def test_a_retry_after_past_the_deadline_gives_up_at_once() -> None:
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return _problem(503, "Cluster Unavailable", "down", **{"Retry-After": "3600"})

    sleeps: list[float] = []
    with _client(handler, sleeps) as nsprov, pytest.raises(Unavailable) as caught:
        nsprov.list()
    assert len(calls) == 1
    assert sleeps == []
    assert "gave up after 1 attempt(s)" in str(caught.value)
    assert caught.value.exit_code == 5


def test_a_cap_is_refused_at_once_naming_the_request_and_its_id() -> None:
    """Retrying a full cap for two minutes hid it (and counted 14 refusals): fail, say --wait."""
    calls: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return _problem(429, "Too Many Namespaces", "cap of 2 reached", **{"Retry-After": "5"})

    with _client(handler) as nsprov, pytest.raises(Refused) as caught:
        nsprov.create()
    assert len(calls) == 1
    assert caught.value.exit_code == 4
    assert str(caught.value) == (
        f"POST {URL}/api/v1/namespaces: 429 Too Many Namespaces: cap of 2 reached; "
        "--wait waits for a free slot (request id rid-1234)"
    )


def test_wait_for_slot_asks_again_announcing_each_wait() -> None:
    answers = [
        _problem(429, "Too Many Namespaces", "cap of 2 reached", **{"Retry-After": "5"}),
        _problem(429, "Too Many Namespaces", "cap of 2 reached"),
        httpx.Response(201, json=CREATED),
    ]
    notices: list[RetryNotice] = []
    sleeps: list[float] = []
    with _client(lambda r: answers.pop(0), sleeps, notices) as nsprov:
        assert nsprov.create(wait_for_slot=600).namespace == "np-abcdefghij"
    assert [n.for_slot for n in notices] == [True, True]
    assert sleeps[0] >= 5
    assert notices[0].line() == (
        f"POST {URL}/api/v1/namespaces: 429 Too Many Namespaces: cap of 2 reached; "
        f"waiting {sleeps[0]:.1f}s for a free slot (request id rid-1234)"
    )


def test_a_slot_that_never_frees_gives_up_at_the_wait_deadline() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return _problem(429, "Too Many Namespaces", "full", **{"Retry-After": "3600"})

    with _client(handler) as nsprov, pytest.raises(Refused) as caught:
        nsprov.create(wait_for_slot=60)
    assert caught.value.exit_code == 4
    assert "gave up after 1 attempt(s)" in str(caught.value)


def test_each_retry_is_announced_with_what_failed_and_when_the_next_attempt_goes() -> None:
    answers: list[httpx.Response | Exception] = [
        httpx.ConnectError("refused"),
        _problem(503, "Cluster Unavailable", "the API server is away"),
        httpx.ReadTimeout("slow"),
        httpx.Response(200, json={"items": []}),
    ]

    def handler(request: httpx.Request) -> httpx.Response:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    notices: list[RetryNotice] = []
    sleeps: list[float] = []
    with _client(handler, sleeps, notices) as nsprov:
        assert nsprov.list() == []
    lines = [n.line() for n in notices]
    where = f"GET {URL}/api/v1/namespaces"
    assert lines[0] == f"{where}: connection refused; attempt 2 in {sleeps[0]:.1f}s"
    assert lines[1] == (
        f"{where}: 503 Cluster Unavailable: the API server is away; "
        f"attempt 3 in {sleeps[1]:.1f}s (request id rid-1234)"
    )
    # An answer lost on the way back still names the id the client sent, which the service
    # adopted: the operator can find what happened to it.
    assert re.fullmatch(
        rf"{where}: no answer within \d+\.\ds; attempt 4 in [\d.]+s \(request id [0-9a-f]{{16}}\)",
        lines[2],
    )


@pytest.mark.parametrize(
    ("reason", "says"),
    [
        (ssl.SSLCertVerificationError(1, "[SSL: CERTIFICATE_VERIFY_FAILED] self-signed"),
         "TLS certificate not trusted"),
        (ssl.SSLError(1, "[SSL: WRONG_VERSION_NUMBER] wrong version number"),
         "TLS handshake failed: .*WRONG_VERSION_NUMBER.*https:// for a plain-http service"),
        (socket.gaierror(socket.EAI_NONAME, "Name or service not known"),
         "cannot resolve host 'nsprov.test': Name or service not known"),
    ],
)  # fmt: skip
def test_tls_and_unknown_hosts_fail_at_once_with_exit_5(reason: OSError, says: str) -> None:
    calls: list[HttpRequest] = []

    def transport(request: HttpRequest) -> HttpResponse:
        calls.append(request)
        raise NotSent(reason)

    config = ClientConfig(url=URL, token=TOKEN)
    with NsprovClient(config, transport=transport) as nsprov, pytest.raises(Unavailable) as e:
        nsprov.list()
    assert len(calls) == 1
    assert e.value.exit_code == 5
    assert re.search(says, str(e.value)), str(e.value)


def test_a_404_that_is_not_nsprovs_says_the_url_is_wrong() -> None:
    with _client(lambda r: httpx.Response(404, text="<html>nope</html>")) as nsprov:
        with pytest.raises(Refused, match="not an nsprov answer: is NSPROV_URL the service's base"):
            nsprov.list()
        # A delete must not take someone else's 404 for "already gone".
        with pytest.raises(Refused):
            nsprov.delete("np-x")


def test_an_answer_that_is_not_json_is_one_line_not_a_traceback() -> None:
    login_page = httpx.Response(200, text="<html>login</html>")
    with (
        _client(lambda r: login_page) as nsprov,
        pytest.raises(Failure, match="is not JSON: is NSPROV_URL the nsprov service"),
    ):
        nsprov.list()


@pytest.mark.parametrize(
    ("status", "kind", "code"),
    [
        (400, Refused, 4),
        (401, AuthFailed, 3),
        (403, AuthFailed, 3),
        (404, Refused, 4),
        (409, Refused, 4),
        (500, Unavailable, 5),
    ],
)
def test_statuses_map_to_exit_codes(status: int, kind: type[Failure], code: int) -> None:
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return _problem(status, "Title", "the detail\nsplit over lines")

    with _client(handler) as nsprov, pytest.raises(kind) as caught:
        nsprov.get("np-x")
    assert len(calls) == 1  # none of these is retried
    assert caught.value.exit_code == code
    assert str(caught.value) == (
        f"GET {URL}/api/v1/namespaces/np-x: {status} Title: the detail split over lines"
        " (request id rid-1234)"
    )


def test_a_redirect_is_not_followed() -> None:
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(302, headers={"Location": "https://elsewhere.example/"})

    with _client(handler) as nsprov, pytest.raises(Failure, match=r"redirect .*elsewhere"):
        nsprov.list()
    assert [c.url.host for c in calls] == ["nsprov.test"]


def test_delete_of_a_gone_namespace_is_not_an_error() -> None:
    with _client(lambda r: _problem(404, "Not Found", "gone")) as nsprov:
        assert nsprov.delete("np-x") is False
    with _client(lambda r: httpx.Response(202, json={"name": "np-x"})) as nsprov:
        assert nsprov.delete("np-x") is True


def test_a_name_cannot_escape_its_path() -> None:
    paths = []

    def handler(request: httpx.Request) -> httpx.Response:
        paths.append(request.url.raw_path)
        return httpx.Response(200, json={"name": "x"})

    with _client(handler) as nsprov:
        nsprov.get("../../openapi.json")
    assert paths == [b"/api/v1/namespaces/..%2F..%2Fopenapi.json"]


def test_retry_after_as_an_http_date() -> None:
    assert client_.retry_after_seconds("Wed, 21 Oct 2015 07:28:10 GMT", now=1445412480.0) == 10
    assert client_.retry_after_seconds("7") == 7
    assert client_.retry_after_seconds("soon") is None


# ---- output -------------------------------------------------------------------------------


def test_table_shows_time_left() -> None:
    rows = [{"name": "np-a", "state": "ACTIVE", "expiresAt": "2030-01-01T01:30:00Z"}]
    now = 1893456000.0  # 2030-01-01T00:00:00Z
    assert table(rows, now).splitlines() == [
        "NAME   STATE    EXPIRES-AT             EXPIRES-IN",
        "np-a   ACTIVE   2030-01-01T01:30:00Z   1h30m",
    ]
    assert table([{"name": "np-a", "state": "DELETED"}]).splitlines()[1] == "np-a   DELETED"


def test_table_shows_the_tenant_when_a_row_has_one() -> None:
    rows = [
        {"name": "np-a", "state": "ACTIVE", "tenant": "web"},
        {"name": "np-b", "state": "ACTIVE", "tenant": None},
    ]
    assert table(rows).splitlines() == [
        "NAME   STATE    TENANT",
        "np-a   ACTIVE   web",
        "np-b   ACTIVE   -",
    ]
    assert table([{"name": "np-a", "state": "ACTIVE", "tenant": None}]).splitlines()[0] == (
        "NAME   STATE"
    )


def test_table_shows_owner_age_and_a_terminating_namespace_from_a_newer_service() -> None:
    now = 1893456000.0  # 2030-01-01T00:00:00Z
    rows = [
        {"name": "np-a", "state": "ACTIVE", "owner": "alice", "tenant": None,
         "createdAt": "2029-12-31T22:55:00Z", "expiresAt": "2030-01-02T01:00:00Z"},
        {"name": "np-b", "state": "MARKED_FOR_DELETION", "owner": "alice", "tenant": None,
         "createdAt": "2029-12-31T23:59:15Z", "expiresAt": "2030-01-01T00:10:00Z",
         "deletionStartedAt": "2029-12-31T23:59:50Z", "blockedBy": ["pods"]},
    ]  # fmt: skip
    assert table(rows, now).splitlines() == [
        "NAME   STATE                 OWNER   AGE    EXPIRES-AT             EXPIRES-IN   DELETING-SINCE",  # noqa: E501
        "np-a   ACTIVE                alice   1h5m   2030-01-02T01:00:00Z   1d1h         -",
        "np-b   MARKED_FOR_DELETION   alice   45s    2030-01-01T00:10:00Z   -            2029-12-31T23:59:50Z",  # noqa: E501
    ]  # fmt: skip


def _fake_service(monkeypatch: pytest.MonkeyPatch, handler: Handler) -> list[httpx.Request]:
    """Commands run through cli.main talk to ``handler`` instead of a network."""
    seen: list[httpx.Request] = []

    def recording(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return handler(request)

    monkeypatch.setattr(client_, "UrllibTransport", lambda: _via_httpx(recording))
    monkeypatch.setenv("NSPROV_URL", URL)
    monkeypatch.setenv("NSPROV_TOKEN", TOKEN)
    for name in ("NSPROV_TOKEN_FILE", "NSPROV_ID_TOKEN", "NSPROV_TIMEOUT"):
        monkeypatch.delenv(name, raising=False)
    return seen


def test_extend_without_ttl_is_a_usage_error_and_the_help_says_it_is_required(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    seen = _fake_service(monkeypatch, lambda r: httpx.Response(500))
    assert launcher.main(["extend", "np-x"]) == 2
    assert capsys.readouterr().err == "nsprov: Missing option '--ttl'.\n"
    assert seen == []
    assert launcher.main(["extend", "--help"]) == 0
    assert "required: the new lifetime from now" in " ".join(capsys.readouterr().out.split())


def test_extend_sends_days_as_they_are(monkeypatch: pytest.MonkeyPatch) -> None:
    answer = {"namespace": "np-x", "expiresAt": "2030-01-02T00:00:00Z", "kubeconfig": "k: v"}
    seen = _fake_service(monkeypatch, lambda r: httpx.Response(200, json=answer))
    assert launcher.main(["extend", "np-x", "--ttl", "1d", "-o", "json"]) == 0
    assert seen[0].method == "PATCH"
    assert seen[0].url.params["ttl"] == "1d"


def test_delete_ignore_not_found(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _fake_service(monkeypatch, lambda r: _problem(404, "Not Found", "namespace 'np-x' not found"))
    assert launcher.main(["delete", "np-x"]) == 4
    assert launcher.main(["delete", "np-x", "--ignore-not-found", "-o", "json"]) == 0
    out = capsys.readouterr().out
    assert json.loads(out) == {"name": "np-x", "state": "NOT_FOUND"}


def test_a_full_cap_in_a_ci_log_is_one_line_and_exit_4(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    seen = _fake_service(monkeypatch, lambda r: _problem(429, "Too Many Namespaces", "full"))
    assert launcher.main(["run", "--", "true"]) == 4
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.endswith("full; --wait waits for a free slot (request id rid-1234)\n")
    assert len(seen) == 1


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_completion_prints_a_script_that_calls_back_nsprov(
    shell: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["completion", shell]) == 0
    script = capsys.readouterr().out
    assert "_NSPROV_COMPLETE" in script
    assert f"{shell}_complete" in script


def test_names_complete_from_the_service_and_a_failure_completes_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rows = {"items": [{"name": "np-abc"}, {"name": "np-abd"}, {"name": "np-xyz"}]}
    _fake_service(monkeypatch, lambda r: httpx.Response(200, json=rows))
    command = client_cli.get
    param = command.params[0]
    context = click.Context(command)
    names = client_cli.complete_namespace_names(context, param, "np-a")
    assert [item.value for item in names] == ["np-abc", "np-abd"]
    monkeypatch.delenv("NSPROV_URL")
    assert client_cli.complete_namespace_names(context, param, "np-a") == []


def test_a_client_command_loads_neither_the_servers_cli_nor_httpx() -> None:
    """What ``nsprov run`` imports before CMD starts is its start-up time (launcher.py)."""
    probe = (
        "import sys; from nsprov import launcher; "
        "code = launcher.main(['run', '--help']); "
        "print(sorted({m for m in sys.modules if m.split('.')[0] in ('httpx', 'yaml')"
        " or m in ('nsprov.cli', 'nsprov.core.settings', 'nsprov.provision.bundle', 'logging')}))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip().splitlines()[-1] == "[]"


def test_quota_table_lists_each_limited_resource() -> None:
    quota = {"hard": {"pods": "3", "requests.memory": "1Gi"}, "used": {"pods": "1"}}
    assert quota_table(quota).splitlines() == [
        "RESOURCE          USED   HARD",
        "pods              1      3",
        "requests.memory   -      1Gi",
    ]


def test_private_file_is_0600_and_replaces_a_symlink(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("keep me")
    link = tmp_path / "kubeconfig"
    link.symlink_to(victim)
    write_private_file(link, "secret")
    assert victim.read_text() == "keep me"
    assert not link.is_symlink()
    assert link.read_text() == "secret"
    assert stat.S_IMODE(link.stat().st_mode) == 0o600


def test_without_a_terminal_progress_is_a_line_per_retry_and_no_spinner() -> None:
    stream = io.StringIO()
    progress = Progress(stream)
    with progress.showing("provisioning"):
        progress.note("GET x: connection refused; attempt 2 in 1.0s")
    progress.say("warning: kept")
    assert stream.getvalue() == (
        "nsprov: GET x: connection refused; attempt 2 in 1.0s\nnsprov: warning: kept\n"
    )


# ---- signals ------------------------------------------------------------------------------


def test_first_signal_while_provisioning_waits_for_the_request_second_gives_up() -> None:
    router = SignalRouter()
    router.enter("provisioning")
    router._handle(signal.SIGINT, None)  # recorded, the request in flight goes on
    assert router.received == [signal.SIGINT]
    with pytest.raises(Interrupted):
        router.stop_retrying()  # but no further attempt
    with pytest.raises(Interrupted):
        router._handle(signal.SIGTERM, None)


def test_signals_during_cleanup_abandon_it_and_quiet_phase_records_only() -> None:
    router = SignalRouter()
    router.enter("quiet")
    router._handle(signal.SIGTERM, None)
    router.enter("cleanup")
    with pytest.raises(Interrupted):
        router._handle(signal.SIGINT, None)


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_on_a_terminal_spins_and_clears_its_line() -> None:
    stream = _Terminal()
    progress = Progress(stream)
    with progress.showing("provisioning"):
        progress.note("attempt 1 failed")
        wait_until(lambda: "attempt 1 failed" in stream.getvalue(), timeout=5)
    shown = stream.getvalue()
    assert "provisioning (attempt 1 failed)" in shown
    assert shown.endswith("\r\x1b[K")
    assert "\n" not in shown


# ---- run, against a stand-in service ------------------------------------------------------


class _Service:
    """A stand-in nsprov: creates one namespace, records deletes, can refuse them."""

    def __init__(
        self,
        delete_status: int = 202,
        during_create: Callable[[], None] = lambda: None,
        patch_status: int = 200,
    ):
        self.deleted: list[str] = []
        self.patched: list[str] = []
        self.delete_status = delete_status
        self.patch_status = patch_status
        self.during_create = during_create

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            self.during_create()
            return httpx.Response(201, json=CREATED)
        if request.method == "DELETE":
            self.deleted.append(request.url.path.rsplit("/", 1)[1])
            if self.delete_status != 202:
                return _problem(self.delete_status, "Cluster Unavailable", "down",
                                **{"Retry-After": "3600"})  # fmt: skip
            return httpx.Response(202, json={"name": "x", "state": "MARKED_FOR_DELETION"})
        if request.method == "PATCH":
            self.patched.append(request.url.params["ttl"])
            if self.patch_status != 200:
                return _problem(self.patch_status, "Bad Request", "ttl '9d' exceeds the maximum")
            later = {**CREATED, "expiresAt": "2030-01-01T02:00:00Z", "kubeconfig": "fresh: yes"}
            return httpx.Response(200, json=later)
        raise AssertionError(request)


def _run(service: _Service, argv: list[str], said: list[str], **options: Any) -> int:
    router = SignalRouter()
    with router.installed(), _client(service) as nsprov:
        return run_in_namespace(
            nsprov, argv, ttl=None, server=None, keep=False, say=said.append, router=router,
            **options,
        )  # fmt: skip


def test_keep_on_failure_extends_instead_of_deleting_and_says_where(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    summary = tmp_path / "summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    service = _Service()
    said: list[str] = []
    seen = tmp_path / "seen"
    code = _run(service, ["sh", "-c", f'echo "$KUBECONFIG" > {seen}; exit 5'], said,
                keep_on_failure="2h")  # fmt: skip
    kubeconfig = Path(seen.read_text().strip())
    assert code == 5
    assert service.deleted == []
    assert service.patched == ["2h"]
    assert said[-1] == (
        "CMD failed (exit 5): kept namespace np-abcdefghij for a look until "
        f"2030-01-01T02:00:00Z; kubeconfig: {kubeconfig}; `nsprov delete np-abcdefghij` ends it"
    )
    assert kubeconfig.read_text() == "fresh: yes"  # the extension's credentials
    assert stat.S_IMODE(kubeconfig.stat().st_mode) == 0o600
    assert "namespace `np-abcdefghij` kept until 2030-01-01T02:00:00Z" in summary.read_text()
    kubeconfig.unlink()
    kubeconfig.parent.rmdir()

    # A CMD that passes is deleted as ever.
    passing = _Service()
    assert _run(passing, ["true"], [], keep_on_failure="2h") == 0
    assert passing.deleted == ["np-abcdefghij"]
    assert passing.patched == []


def test_keep_on_failure_beyond_the_tenants_bounds_keeps_it_until_its_expiry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)
    service = _Service(patch_status=400)
    said: list[str] = []
    assert _run(service, ["false"], said, keep_on_failure="9d") == 1
    assert service.deleted == []
    assert said[-1].startswith(
        "CMD failed (exit 1): kept namespace np-abcdefghij for a look until 2030-01-01T00:00:00Z "
        "(not extended by 9d: PATCH"
    )
    kubeconfig = Path(said[-1].split("kubeconfig: ")[1].split(";")[0])
    kubeconfig.unlink()
    kubeconfig.parent.rmdir()


def test_diagnostics_on_failure_come_before_the_delete(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("GITHUB_ACTIONS", raising=False)
    events: list[str] = []
    service = _Service()
    original = service.__call__

    def recording(request: httpx.Request) -> httpx.Response:
        events.append(request.method)
        return original(request)

    def collect(kubeconfig: str, *, why: str) -> str:
        events.append(f"collect {why}")
        return "the report\n"

    monkeypatch.setattr("nsprov.client.diagnostics.collect", collect)
    written: list[str] = []
    router = SignalRouter()
    with router.installed(), _client(recording) as nsprov:
        code = run_in_namespace(
            nsprov, ["false"], ttl=None, server=None, keep=False, say=written.append,
            router=router, diagnostics="on-failure", write=written.append,
        )  # fmt: skip
    assert code == 1
    assert events == ["POST", "collect CMD exited 1", "DELETE"]
    assert "the report" in written
    assert (tmp_path / "nsprov-diagnostics" / "np-abcdefghij.txt").read_text() == "the report\n"
    events.clear()
    with router.installed(), _client(recording) as nsprov:
        run_in_namespace(
            nsprov, ["true"], ttl=None, server=None, keep=False, say=written.append,
            router=router, diagnostics="on-failure", write=written.append,
        )  # fmt: skip
    assert events == ["POST", "DELETE"]


def test_run_exits_with_cmd_code_and_a_failed_delete_is_a_warning(tmp_path: Path) -> None:
    service = _Service(delete_status=503)
    said: list[str] = []
    seen = tmp_path / "seen"
    code = _run(service, ["sh", "-c", f'echo "$KUBECONFIG" > {seen}; exit 7'], said)
    assert code == 7
    assert service.deleted == ["np-abcdefghij"]
    assert said[-1].startswith("warning: namespace np-abcdefghij was not deleted")
    kubeconfig = Path(seen.read_text().strip())
    assert not kubeconfig.exists()
    assert not kubeconfig.parent.exists()


def test_cmd_does_not_get_the_nsprov_credential(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """CMD is often code under test: with the token it could make, renew or delete namespaces."""
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    monkeypatch.setenv("NSPROV_TOKEN", TOKEN)
    monkeypatch.setenv("NSPROV_TOKEN_FILE", str(token_file))
    monkeypatch.setenv("NSPROV_ID_TOKEN", "eyJ.id.token")
    monkeypatch.setenv("NSPROV_URL", URL)
    monkeypatch.setenv("KUBECONFIG", "/the/callers/kubeconfig")
    monkeypatch.setenv("NSPROV_NAMESPACE", "np-callers0000")
    monkeypatch.setenv("CI_JOB_ID", "42")
    seen = tmp_path / "environment"
    code = _run(_Service(), [sys.executable, "-c", _DUMP_ENVIRONMENT, str(seen)], [])
    assert code == 0
    environment = json.loads(seen.read_text())
    assert not {"NSPROV_TOKEN", "NSPROV_TOKEN_FILE", "NSPROV_ID_TOKEN"} & set(environment)
    assert TOKEN not in seen.read_text()
    assert str(token_file) not in seen.read_text()
    assert environment["NSPROV_NAMESPACE"] == "np-abcdefghij"
    assert environment["KUBECONFIG"] != "/the/callers/kubeconfig"
    assert environment["NSPROV_URL"] == URL  # not a secret: kept
    assert environment["CI_JOB_ID"] == "42"  # the rest of the job's environment is CMD's
    assert os.environ["NSPROV_TOKEN"] == TOKEN  # nsprov's own environment is untouched


_DUMP_ENVIRONMENT = (
    "import json, os, sys; open(sys.argv[1], 'w').write(json.dumps(dict(os.environ)))"
)


def test_a_signal_while_provisioning_deletes_what_the_request_made(tmp_path: Path) -> None:
    """SIGTERM lands while the POST is out: it finishes, its namespace goes, CMD never runs."""
    service = _Service(during_create=lambda: os.kill(os.getpid(), signal.SIGTERM))
    ran = tmp_path / "ran"
    code = _run(service, ["touch", str(ran)], [])
    assert code == 128 + signal.SIGTERM
    assert service.deleted == ["np-abcdefghij"]
    assert not ran.exists()


def test_list_follows_the_services_pages_to_the_end() -> None:
    pages = {
        None: {"items": [{"name": "np-a"}], "metadata": {"continue": "t1"}},
        "t1": {"items": [{"name": "np-b"}], "metadata": {"continue": "t2"}},
        "t2": {"items": [{"name": "np-c"}], "metadata": {}},
    }
    asked: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        token = request.url.params.get("continue")
        asked.append(token)
        return httpx.Response(200, json=pages[token])

    with _client(handler) as nsprov:
        assert [item["name"] for item in nsprov.list()] == ["np-a", "np-b", "np-c"]
    assert asked == [None, "t1", "t2"]
    # An older nsprov answers everything at once, without metadata.
    with _client(lambda r: httpx.Response(200, json={"items": [{"name": "np-z"}]})) as nsprov:
        assert [item["name"] for item in nsprov.list()] == ["np-z"]


@pytest.mark.parametrize("key", ["   ", "cl\u00e9", "k" * 256])
def test_an_idempotency_key_the_service_would_refuse_is_a_usage_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], key: str
) -> None:
    """The service's rule (openapi.IDEMPOTENCY_KEY_PATTERN), in one line and no request."""
    seen = _fake_service(monkeypatch, lambda r: httpx.Response(500))
    assert launcher.main(["create", "--idempotency-key", key]) == 2
    assert capsys.readouterr().err == (
        "nsprov: --idempotency-key must be 1 to 255 printable ASCII characters, not all spaces\n"
    )
    assert seen == []


def test_a_ttl_with_spaces_around_it_is_sent_without_them(monkeypatch: pytest.MonkeyPatch) -> None:
    """The service refuses ` 30m` (the OpenAPI pattern has no spaces) while --ttl's own check
    takes it, as Go does after a trim; the Action trims its inputs, and so does the client."""
    created = {"namespace": "np-x", "expiresAt": "2030-01-02T00:00:00Z", "kubeconfig": "k: v"}
    seen = _fake_service(monkeypatch, lambda r: httpx.Response(201, json=created))
    assert launcher.main(["create", "--ttl", " 30m\n", "-o", "name"]) == 0
    assert launcher.main(["create", "--key", "pr-1", "--ttl", "1h ", "-o", "name"]) == 0
    assert launcher.main(["extend", "np-x", "--ttl", "\t1d", "-o", "json"]) == 0
    assert [r.url.params["ttl"] for r in seen] == ["30m", "1h", "1d"]
