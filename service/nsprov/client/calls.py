"""The nsprov API (v1) from a CI job or a terminal: where to, as whom, and how hard to try.

The URL and the token come from the environment only: a token on the command
line is readable by every local user through the process list, and CI systems
hand secrets over as variables anyway. Like the GitHub Action, the token never
goes over plain http to anything but loopback unless the user says so.

What is retried, and what fails at once, is chosen for a CI log read after the
fact. Connection errors, timeouts and 502/503/504 (honouring ``Retry-After``)
are retried within one total deadline, each retry announced (``RetryNotice``),
and a create carries one ``Idempotency-Key`` across its attempts, so an answer
lost on the way back never costs a second namespace. A cap's 429, a TLS or
certificate error and a host name that does not resolve are not retried: no
second attempt in the next two minutes will change them, and two minutes of
silence hid them. A caller that wants to wait for a free slot says so
(``wait_for_slot``).

Every failure is a ``Failure`` whose message is one line naming the request and
ending with the service's request id (the ``X-Request-Id`` every nsprov answer
carries, which its log lines carry too), and whose ``exit_code`` tells a script
what kind of failure it was.

HTTP goes through ``client.http`` (urllib, not httpx: that module says why).
This module must not import the server's libraries: ``pip install nsprov``
installs the client without them.
"""

from __future__ import annotations

import dataclasses
import email.utils
import errno
import ipaddress
import random
import re
import secrets
import socket
import ssl
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

from nsprov import __version__
from nsprov.client.http import (
    AnswerLost,
    HttpRequest,
    HttpResponse,
    NotSent,
    Transport,
    UrllibTransport,
)
from nsprov.core.errors import BadRequest
from nsprov.core.ttl import parse_duration

EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_AUTH = 3
EXIT_REFUSED = 4
EXIT_UNAVAILABLE = 5

TOKEN_VARIABLES = ("NSPROV_TOKEN", "NSPROV_TOKEN_FILE", "NSPROV_ID_TOKEN")
"""Every variable the credential can come from: CMD of ``nsprov run`` gets none of them."""
ALLOW_INSECURE_VARIABLE = "NSPROV_ALLOW_INSECURE_URL"
_TRANSIENT_STATUSES = frozenset({502, 503, 504})
_USER_AGENT = f"nsprov-cli/{__version__}"


class Failure(Exception):
    """Something the user should read in one line; ``exit_code`` says what kind."""

    exit_code = EXIT_ERROR


class UsageFailure(Failure):
    """The command or its environment is wrong (no URL, no token, a bad flag)."""

    exit_code = EXIT_USAGE


class AuthFailed(Failure):
    """The service did not accept the token (401) or the identity (403)."""

    exit_code = EXIT_AUTH


class Refused(Failure):
    """The service answered and said no: bad input, not found, conflict, cap reached."""

    exit_code = EXIT_REFUSED

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class Unavailable(Failure):
    """No usable answer: unreachable within the deadline, a 5xx, or a TLS/DNS error."""

    exit_code = EXIT_UNAVAILABLE


class _Transient(Exception):
    """One attempt failed in a way another attempt may not."""

    def __init__(
        self,
        message: str,
        retry_after: float | None = None,
        status: int | None = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.status = status
        self.request_id = request_id


def with_request_id(text: str, request_id: str | None) -> str:
    """``text (request id ID)``: the id the operator greps the service's log for."""
    return f"{text} (request id {request_id})" if request_id else text


# ---- configuration ------------------------------------------------------------------------


@dataclass(frozen=True)
class Timing:
    """A retry loop's budget in seconds: the whole loop, one attempt, the first and last backoff."""

    deadline: float
    attempt_timeout: float
    backoff: float
    backoff_max: float


PROVISION_TIMING = Timing(deadline=120.0, attempt_timeout=30.0, backoff=1.0, backoff_max=15.0)
"""Create, list, get, extend and delete: a CI step should fail in two minutes, not hang."""

CLEANUP_TIMING = Timing(deadline=20.0, attempt_timeout=5.0, backoff=0.5, backoff_max=4.0)
"""The delete after ``nsprov run``: the job is ending (maybe cancelled); the TTL is the backstop."""


@dataclass(frozen=True)
class ClientConfig:
    """Where the service is and the bearer token to send it (never printed)."""

    url: str
    token: str = field(repr=False)
    timeout: float | None = None
    """NSPROV_TIMEOUT: the deadline of a command's requests (and a cap on run's cleanup)."""

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> ClientConfig:
        allow_insecure = _true_or_false(ALLOW_INSECURE_VARIABLE, env.get(ALLOW_INSECURE_VARIABLE))
        url = service_url(env.get("NSPROV_URL", ""), allow_insecure=allow_insecure)
        given = [name for name in TOKEN_VARIABLES if env.get(name, "").strip()]
        if not given:
            raise UsageFailure(f"no token: set one of {', '.join(TOKEN_VARIABLES)}")
        if len(given) > 1:
            raise UsageFailure(f"set only one of {', '.join(given)}")
        if given[0] == "NSPROV_TOKEN_FILE":
            token = _read_token_file(Path(env["NSPROV_TOKEN_FILE"].strip()))
        else:
            token = env[given[0]].strip()
        if any(c.isspace() for c in token):
            hint = " (it must hold only the token, not serve's 'name: token' lines)"
            raise UsageFailure(
                f"the token in {given[0]} contains whitespace"
                + (hint if given[0] == "NSPROV_TOKEN_FILE" else "")
            )
        timeout = None
        if env.get("NSPROV_TIMEOUT", "").strip():
            timeout = positive_duration("NSPROV_TIMEOUT", env["NSPROV_TIMEOUT"])
        return cls(url=url, token=token, timeout=timeout)

    def timing(self, base: Timing) -> Timing:
        """``base`` with NSPROV_TIMEOUT as its deadline; the cleanup's short budget only shrinks."""
        if self.timeout is None:
            return base
        deadline = min(self.timeout, base.deadline) if base == CLEANUP_TIMING else self.timeout
        return Timing(
            deadline=deadline,
            attempt_timeout=min(base.attempt_timeout, deadline),
            backoff=base.backoff,
            backoff_max=base.backoff_max,
        )


def service_url(raw: str, *, allow_insecure: bool = False) -> str:
    """NSPROV_URL checked and without trailing slashes; UsageFailure says what is wrong.

    Plain http is for loopback only: anywhere else, anyone on the path could read
    the bearer token (a static token, or an OIDC ID token valid for minutes) and
    use it. ``allow_insecure`` (NSPROV_ALLOW_INSECURE_URL=true) is the user's
    explicit override, as the Action's ``allow-insecure-url`` is.
    """
    text = raw.strip()
    if not text:
        raise UsageFailure("NSPROV_URL is not set (e.g. https://nsprov.example.com)")
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageFailure(f"NSPROV_URL must be an http(s) URL, not {text!r}")
    if parts.username or parts.password:
        raise UsageFailure("NSPROV_URL must not carry credentials: put the token in NSPROV_TOKEN")
    if parts.query or parts.fragment:
        raise UsageFailure(f"NSPROV_URL must not have a query or fragment: {text!r}")
    if parts.scheme == "http" and not allow_insecure and not is_loopback_host(parts.hostname):
        raise UsageFailure(
            f"NSPROV_URL {parts.scheme}://{parts.netloc} is plain http and not loopback, so the "
            f"token would cross the network unencrypted; use https, or set "
            f"{ALLOW_INSECURE_VARIABLE}=true if that is what you want"
        )
    return text.rstrip("/")


def is_loopback_host(hostname: str) -> bool:
    """127.0.0.0/8, ::1 and localhost: the only hosts a token may reach over plain http.

    Only a literal address or the exact name ``localhost`` counts: a name such as
    ``127.0.0.1.nip.io`` resolves wherever its owner decides.
    """
    if hostname.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(hostname).is_loopback
    except ValueError:
        return False


def _true_or_false(name: str, value: str | None) -> bool:
    """A boolean variable: unset, empty or false is False; a typo is a usage error, not a guess."""
    text = (value or "").strip().lower()
    if text not in ("", "true", "false"):
        raise UsageFailure(f"{name} must be true or false, not {value!r}")
    return text == "true"


def _read_token_file(path: Path) -> str:
    try:
        token = path.read_text().strip()
    except OSError as exc:
        raise UsageFailure(f"NSPROV_TOKEN_FILE: cannot read {path}: {exc.strerror}") from None
    if not token:
        raise UsageFailure(f"NSPROV_TOKEN_FILE: {path} is empty")
    return token


def positive_duration(name: str, text: str) -> float:
    """``text`` as seconds; UsageFailure naming ``name`` when it is not a positive duration."""
    try:
        seconds = parse_duration(text)
    except BadRequest as exc:
        raise UsageFailure(f"{name}: {exc.detail}") from None
    if seconds <= 0:
        raise UsageFailure(f"{name} must be positive")
    return seconds


def _trimmed(ttl: str | None) -> str | None:
    """A ttl as sent: check_ttl reads it as Go would after a trim, and the Action trims its
    inputs, but the service refuses spaces around it (ttl.TTL_PATTERN)."""
    return ttl.strip() if ttl is not None else None


def check_ttl(ttl: str | None) -> None:
    """Catch a malformed --ttl before any request (the service still decides the bounds)."""
    if ttl:
        positive_duration("--ttl", ttl)


# The service's rule for a preview key (bundle.KEY_PATTERN; the client imports no server code).
_KEY = re.compile(r"[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?")


def check_key(key: str) -> None:
    """Catch a malformed --key before any request."""
    if not _KEY.fullmatch(key):
        raise UsageFailure(
            f"--key {key!r}: 1 to 63 letters, digits, '.', '_' or '-', beginning and ending "
            "with a letter or digit (e.g. pr-42)"
        )


# ---- results ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Kubeconfig:
    """A create's or extend's answer: which namespace, until when, and its kubeconfig."""

    namespace: str
    expires_at: str
    kubeconfig: str = field(repr=False)
    replayed: bool = False
    reused: bool = False
    """A keyed create found the key's namespace live (200) rather than making it (201)."""


@dataclass(frozen=True)
class RetryNotice:
    """One failed attempt about to be retried: what failed, and when the next attempt goes.

    ``for_slot`` is a cap's 429 under ``wait_for_slot``: a wait, not a failure.
    """

    request: str
    error: str
    attempt: int
    delay: float
    for_slot: bool = False
    request_id: str | None = None

    def line(self) -> str:
        """The one stderr line a CI log gets for this retry."""
        if self.for_slot:
            text = f"{self.request}: {self.error}; waiting {self.delay:.1f}s for a free slot"
        else:
            text = f"{self.request}: {self.error}; attempt {self.attempt + 1} in {self.delay:.1f}s"
        return with_request_id(text, self.request_id)


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """Retry-After as seconds (delay-seconds or an HTTP date); None when absent or unreadable."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def backoff_delay(retry: int, timing: Timing, rand: Callable[[], float] = random.random) -> float:
    """Exponential backoff with jitter: a random point in the upper half of the window."""
    window = min(timing.backoff_max, timing.backoff * 2.0**retry)
    return window / 2 + rand() * window / 2


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _problem(response: HttpResponse) -> dict[str, Any] | None:
    """The RFC 9457 problem nsprov sends with every error; None for anyone else's answer."""
    try:
        body = response.json()
    except ValueError:
        return None
    if isinstance(body, dict) and "title" in body and "status" in body:
        return body
    return None


def describe_failure(response: HttpResponse) -> str:
    """``404 Not Found: namespace 'x' not found`` from a problem body, else from the status."""
    title, detail = response.reason or "error", ""
    problem = _problem(response)
    if problem is not None:
        title = str(problem.get("title") or title)
        detail = str(problem.get("detail") or "")
    elif response.text.strip():
        detail = response.text.strip()[:200]
    return _one_line(f"{response.status} {title}" + (f": {detail}" if detail else ""))


def _request_id(response: HttpResponse) -> str | None:
    problem = _problem(response) or {}
    return response.headers.get("x-request-id") or problem.get("requestId") or None


def _not_sent(describe: str, reason: BaseException, timeout: float) -> Exception:
    """A request that never reached the service: a _Transient to retry, or a Failure now.

    TLS and certificate errors and a name that does not resolve fail at once (exit 5):
    the next attempt meets the same certificate and the same DNS answer.
    """
    if isinstance(reason, ssl.SSLCertVerificationError):
        return Unavailable(
            f"{describe}: TLS certificate not trusted: {_one_line(str(reason))}; "
            "set SSL_CERT_FILE to the CA bundle that signed it"
        )
    if isinstance(reason, ssl.SSLError) and not isinstance(
        reason, (ssl.SSLEOFError, ssl.SSLZeroReturnError)
    ):
        hint = ""
        if "WRONG_VERSION_NUMBER" in str(reason):
            hint = "; is NSPROV_URL https:// for a plain-http service?"
        return Unavailable(f"{describe}: TLS handshake failed: {_one_line(str(reason))}{hint}")
    no_such_name = {socket.EAI_NONAME, getattr(socket, "EAI_NODATA", socket.EAI_NONAME)}
    if isinstance(reason, socket.gaierror) and reason.errno in no_such_name:
        host = urlsplit(describe.split(" ", 1)[1]).hostname
        return Unavailable(f"{describe}: cannot resolve host {host!r}: {reason.strerror}")
    if isinstance(reason, TimeoutError):
        return _Transient(f"no connection within {timeout:.1f}s")
    if isinstance(reason, OSError) and reason.errno == errno.ECONNREFUSED:
        return _Transient("connection refused")
    return _Transient(_one_line(str(reason)) or type(reason).__name__)


# ---- the client ---------------------------------------------------------------------------

RetryHook = Callable[[RetryNotice], None]
"""Called before each backoff sleep with what failed and how long until the next attempt."""


class NsprovClient:
    """Blocking calls to one nsprov service; every call retries within its Timing."""

    def __init__(
        self,
        config: ClientConfig,
        *,
        on_retry: RetryHook | None = None,
        transport: Transport | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.config = config
        self._on_retry = on_retry
        self._sleep = sleep
        self._transport = transport if transport is not None else UrllibTransport()
        self._headers = {
            "Authorization": f"Bearer {config.token}",
            "Accept": "application/json",
            "User-Agent": _USER_AGENT,
        }

    def close(self) -> None:
        """Nothing to release (a connection per request); kept so ``with`` reads naturally."""

    def __enter__(self) -> NsprovClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- the API --------------------------------------------------------------------------

    def create(
        self,
        *,
        ttl: str | None = None,
        server: str | None = None,
        idempotency_key: str | None = None,
        wait_for_slot: float | None = None,
    ) -> Kubeconfig:
        """POST /api/v1/namespaces; every attempt carries the same Idempotency-Key.

        A cap's 429 is a Refused at once, unless ``wait_for_slot`` gives the seconds to
        keep asking (each wait announced through ``on_retry``).
        """
        key = idempotency_key or new_idempotency_key()
        params = {k: v for k, v in (("ttl", _trimmed(ttl)), ("server", server)) if v}
        response = self._call(
            "POST",
            "/api/v1/namespaces",
            params=params,
            headers={"Idempotency-Key": key},
            wait_for_slot=wait_for_slot,
        )
        return self._kubeconfig("POST /api/v1/namespaces", response)

    def create_keyed(
        self,
        key: str,
        *,
        ttl: str | None = None,
        server: str | None = None,
        wait_for_slot: float | None = None,
    ) -> Kubeconfig:
        """POST ?key=: the caller's live namespace for ``key`` (extended) or a new one.

        Repeating it is safe by itself, so it carries no Idempotency-Key. A 409 (the key's
        namespace is being deleted: a closed and reopened pull request) is retried within
        the Timing, like an outage: the name is free once the old namespace is gone.
        """
        params = {k: v for k, v in (("ttl", _trimmed(ttl)), ("server", server), ("key", key)) if v}
        response = self._call(
            "POST",
            "/api/v1/namespaces",
            params=params,
            wait_for_slot=wait_for_slot,
            transient=_TRANSIENT_STATUSES | {409},
        )
        created = self._kubeconfig("POST /api/v1/namespaces", response)
        return dataclasses.replace(created, reused=response.status == 200)

    def delete_keyed(self, key: str, *, timing: Timing = PROVISION_TIMING) -> str | None:
        """DELETE ?key=: the name of the namespace marked for deletion, None when there was none."""
        response = self._call(
            "DELETE",
            "/api/v1/namespaces",
            params={"key": key},
            timing=timing,
            not_found_ok=True,
        )
        if response.status == 404:
            return None
        body = self._json("DELETE /api/v1/namespaces", response)
        return str(body["name"]) if isinstance(body, dict) and "name" in body else key

    def list(self, *, timing: Timing = PROVISION_TIMING) -> list[dict[str, Any]]:
        """Every namespace of the caller (live, and being deleted until gone), following the
        service's pages to the end."""
        items: list[dict[str, Any]] = []
        params: dict[str, str] = {"limit": "500"}
        while True:
            response = self._call("GET", "/api/v1/namespaces", params=params, timing=timing)
            page = self._json("GET /api/v1/namespaces", response)
            if not isinstance(page, dict) or not isinstance(page.get("items"), list):
                raise Failure(f"GET {self.config.url}/api/v1/namespaces: the answer has no items")
            items.extend(page["items"])
            # An older nsprov sends no metadata: its one answer is the whole list.
            token = (page.get("metadata") or {}).get("continue")
            if not token:
                return items
            params = {"limit": "500", "continue": token}

    def get(self, name: str) -> dict[str, Any]:
        info: dict[str, Any] = self._json(f"GET {_path(name)}", self._call("GET", _path(name)))
        return info

    def extend(self, name: str, *, ttl: str) -> Kubeconfig:
        """PATCH ?ttl=: the new expiry is now + ttl (the service has no default for it)."""
        response = self._call("PATCH", _path(name), params={"ttl": ttl.strip()})
        return self._kubeconfig(f"PATCH {_path(name)}", response)

    def delete(self, name: str, *, timing: Timing = PROVISION_TIMING) -> bool:
        """DELETE; True when the service marked it for deletion, False when it was gone (404)."""
        response = self._call("DELETE", _path(name), timing=timing, not_found_ok=True)
        return response.status != 404

    def exists(self, name: str) -> bool:
        """Whether GET still finds the namespace (a terminating one counts)."""
        return self._call("GET", _path(name), not_found_ok=True).status != 404

    # ---- one exchange, retried ------------------------------------------------------------

    def _call(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
        timing: Timing = PROVISION_TIMING,
        not_found_ok: bool = False,
        wait_for_slot: float | None = None,
        transient: frozenset[int] | None = None,
    ) -> HttpResponse:
        timing = self.config.timing(timing)
        describe = f"{method} {self.config.url}{path}"
        url = f"{self.config.url}{path}" + (f"?{urlencode(params)}" if params else "")
        started = time.monotonic()
        deadline = started + timing.deadline
        slot_deadline = started + max(timing.deadline, wait_for_slot or 0.0)
        for attempt in range(1, 1_000_000):
            timeout = max(0.1, min(timing.attempt_timeout, slot_deadline - time.monotonic()))
            try:
                return self._attempt(
                    method, url, describe, headers, timeout, not_found_ok, transient
                )
            except _Transient as exc:
                for_slot = exc.status == 429
                if for_slot and wait_for_slot is None:
                    text = f"{describe}: {exc}; --wait waits for a free slot"
                    raise Refused(with_request_id(text, exc.request_id), 429) from None
                delay = max(backoff_delay(attempt - 1, timing), exc.retry_after or 0.0)
                if time.monotonic() + delay >= (slot_deadline if for_slot else deadline):
                    elapsed = time.monotonic() - started
                    text = (
                        f"{describe}: {exc} (gave up after {attempt} attempt(s) in {elapsed:.1f}s)"
                    )
                    message = with_request_id(text, exc.request_id)
                    if for_slot:  # a cap that stayed reached is a refusal
                        raise Refused(message, 429) from None
                    raise Unavailable(message) from None
                if self._on_retry is not None:
                    notice = RetryNotice(
                        describe, str(exc), attempt, delay, for_slot, exc.request_id
                    )
                    self._on_retry(notice)
                self._sleep(delay)
        raise AssertionError("unreachable")

    def _attempt(
        self,
        method: str,
        url: str,
        describe: str,
        headers: dict[str, str] | None,
        timeout: float,
        not_found_ok: bool,
        transient: frozenset[int] | None = None,
    ) -> HttpResponse:
        # Our own id on every attempt: the service adopts it, so even an answer lost on the
        # way back can be found in its log.
        sent_id = secrets.token_hex(8)
        request = HttpRequest(
            method, url, {**self._headers, "X-Request-Id": sent_id, **(headers or {})}, timeout
        )
        try:
            response = self._transport(request)
        except NotSent as exc:
            raise _not_sent(describe, exc.reason, timeout) from None
        except AnswerLost as exc:
            if isinstance(exc.reason, TimeoutError):
                raise _Transient(f"no answer within {timeout:.1f}s", request_id=sent_id) from None
            what = _one_line(str(exc.reason)) or type(exc.reason).__name__
            raise _Transient(f"the answer was lost: {what}", request_id=sent_id) from None
        status = response.status
        problem = _problem(response)
        if 200 <= status < 300 or (not_found_ok and status == 404 and problem is not None):
            return response
        request_id = _request_id(response)
        said = describe_failure(response)
        if status == 429 or status in (transient or _TRANSIENT_STATUSES):
            retry_after = retry_after_seconds(response.headers.get("retry-after"))
            raise _Transient(said, retry_after, status, request_id)
        if 300 <= status < 400:
            where = response.headers.get("location", "nowhere")
            raise Failure(
                f"{describe}: unexpected redirect ({status}) to {where}: is NSPROV_URL nsprov?"
            )
        if problem is None and status in (404, 405):
            said += "; not an nsprov answer: is NSPROV_URL the service's base URL?"
        message = with_request_id(f"{describe}: {said}", request_id)
        if status in (401, 403):
            raise AuthFailed(message)
        if 400 <= status < 500:
            raise Refused(message, status)
        raise Unavailable(message)

    def _json(self, what: str, response: HttpResponse) -> Any:
        try:
            return response.json()
        except ValueError:
            raise Failure(
                f"{what}: the answer (HTTP {response.status}) is not JSON: "
                "is NSPROV_URL the nsprov service?"
            ) from None

    def _kubeconfig(self, what: str, response: HttpResponse) -> Kubeconfig:
        body = self._json(what, response)
        try:
            return Kubeconfig(
                namespace=str(body["namespace"]),
                expires_at=str(body["expiresAt"]),
                kubeconfig=str(body["kubeconfig"]),
                replayed=response.headers.get("idempotent-replayed") == "true",
            )
        except (KeyError, TypeError):
            raise Failure(
                f"{what}: the answer (HTTP {response.status}) has no kubeconfig"
            ) from None


def new_idempotency_key() -> str:
    return str(uuid.uuid4())


def _path(name: str) -> str:
    return f"/api/v1/namespaces/{quote(name, safe='')}"
