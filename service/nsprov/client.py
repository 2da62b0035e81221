"""The nsprov API (v1) from a CI job or a terminal: where to, as whom, and how hard to try.

The URL and the token come from the environment only: a token on the command
line is readable by every local user through the process list, and CI systems
hand secrets over as variables anyway. Like the GitHub Action, the token never
goes over plain http to anything but loopback unless the user says so, and
every request is retried on connection errors, timeouts, 429 and 502/503/504
(honouring ``Retry-After``) within one total deadline, and a create carries
one ``Idempotency-Key`` across its attempts, so an answer lost on the way back
never costs a second namespace.

Every failure is a ``Failure`` whose message is one line (the service's
problem ``detail`` when it sent one) and whose ``exit_code`` tells a script
what kind of failure it was. This module must not import the server's
libraries: ``pip install nsprov`` installs the client without them.
"""

from __future__ import annotations

import email.utils
import ipaddress
import random
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import httpx

from nsprov import __version__
from nsprov.errors import BadRequest
from nsprov.ttl import parse_duration

EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_AUTH = 3
EXIT_REFUSED = 4
EXIT_UNAVAILABLE = 5

TOKEN_VARIABLES = ("NSPROV_TOKEN", "NSPROV_TOKEN_FILE", "NSPROV_ID_TOKEN")
"""Every variable the credential can come from: CMD of ``nsprov run`` gets none of them."""
ALLOW_INSECURE_VARIABLE = "NSPROV_ALLOW_INSECURE_URL"
_TRANSIENT_STATUSES = frozenset({429, 502, 503, 504})
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
    """No usable answer within the deadline: unreachable, timing out, or 5xx."""

    exit_code = EXIT_UNAVAILABLE


class _Transient(Exception):
    """One attempt failed in a way another attempt may not."""

    def __init__(
        self, message: str, retry_after: float | None = None, status: int | None = None
    ) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.status = status


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


def check_ttl(ttl: str | None) -> None:
    """Catch a malformed --ttl before any request (the service still decides the bounds)."""
    if ttl:
        positive_duration("--ttl", ttl)


# ---- results ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Kubeconfig:
    """A create's or extend's answer: which namespace, until when, and its kubeconfig."""

    namespace: str
    expires_at: str
    kubeconfig: str = field(repr=False)
    replayed: bool = False


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


def describe_failure(response: httpx.Response) -> str:
    """``404 Not Found: namespace 'x' not found`` from a problem body, else from the status."""
    title, detail = response.reason_phrase or "error", ""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        title = str(body.get("title") or title)
        detail = str(body.get("detail") or "")
    elif response.text.strip():
        detail = response.text.strip()[:200]
    text = f"{response.status_code} {title}" + (f": {detail}" if detail else "")
    return _one_line(text)


# ---- the client ---------------------------------------------------------------------------

RetryHook = Callable[[str, int, float], None]
"""Called before each backoff sleep with (what failed, attempt number, seconds to wait)."""


class NsprovClient:
    """Blocking calls to one nsprov service; every call retries within its Timing."""

    def __init__(
        self,
        config: ClientConfig,
        *,
        on_retry: RetryHook | None = None,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.config = config
        self._on_retry = on_retry
        self._sleep = sleep
        self._http = httpx.Client(
            base_url=config.url,
            headers={
                "Authorization": f"Bearer {config.token}",
                "Accept": "application/json",
                "User-Agent": _USER_AGENT,
            },
            # A redirect would mean a misconfigured URL: never replay the token elsewhere.
            follow_redirects=False,
            transport=transport,
        )

    def close(self) -> None:
        self._http.close()

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
    ) -> Kubeconfig:
        """POST /api/v1/namespaces; every attempt carries the same Idempotency-Key."""
        key = idempotency_key or new_idempotency_key()
        params = {k: v for k, v in (("ttl", ttl), ("server", server)) if v}
        response = self._call(
            "POST", "/api/v1/namespaces", params=params, headers={"Idempotency-Key": key}
        )
        return _kubeconfig(response)

    def list(self) -> list[dict[str, Any]]:
        """Every namespace of the caller (live, and being deleted until gone), following the
        service's pages to the end."""
        items: list[dict[str, Any]] = []
        params: dict[str, str] = {"limit": "500"}
        while True:
            page = self._call("GET", "/api/v1/namespaces", params=params).json()
            items.extend(page["items"])
            # An older nsprov sends no metadata: its one answer is the whole list.
            token = (page.get("metadata") or {}).get("continue")
            if not token:
                return items
            params = {"limit": "500", "continue": token}

    def get(self, name: str) -> dict[str, Any]:
        info: dict[str, Any] = self._call("GET", _path(name)).json()
        return info

    def extend(self, name: str, *, ttl: str | None = None) -> Kubeconfig:
        params = {"ttl": ttl} if ttl else {}
        return _kubeconfig(self._call("PATCH", _path(name), params=params))

    def delete(self, name: str, *, timing: Timing = PROVISION_TIMING) -> bool:
        """DELETE; True when the service marked it for deletion, False when it was gone (404)."""
        response = self._call("DELETE", _path(name), timing=timing, not_found_ok=True)
        return response.status_code != 404

    def exists(self, name: str) -> bool:
        """Whether GET still finds the namespace (a terminating one counts)."""
        return self._call("GET", _path(name), not_found_ok=True).status_code != 404

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
    ) -> httpx.Response:
        timing = self.config.timing(timing)
        describe = f"{method} {self.config.url}{path}"
        started = time.monotonic()
        deadline = started + timing.deadline
        for attempt in range(1, 1_000_000):
            timeout = max(0.1, min(timing.attempt_timeout, deadline - time.monotonic()))
            try:
                return self._attempt(method, path, params, headers, timeout, not_found_ok)
            except _Transient as exc:
                delay = max(backoff_delay(attempt - 1, timing), exc.retry_after or 0.0)
                if time.monotonic() + delay >= deadline:
                    elapsed = time.monotonic() - started
                    message = (
                        f"{describe}: {exc} (gave up after {attempt} attempt(s) in {elapsed:.1f}s)"
                    )
                    if exc.status == 429:  # a cap that stayed reached is a refusal
                        raise Refused(message, 429) from None
                    raise Unavailable(message) from None
                if self._on_retry is not None:
                    self._on_retry(str(exc), attempt, delay)
                self._sleep(delay)
        raise AssertionError("unreachable")

    def _attempt(
        self,
        method: str,
        path: str,
        params: dict[str, str] | None,
        headers: dict[str, str] | None,
        timeout: float,
        not_found_ok: bool,
    ) -> httpx.Response:
        try:
            response = self._http.request(
                method, path, params=params, headers=headers, timeout=timeout
            )
        except httpx.TimeoutException:
            raise _Transient(f"no answer within {timeout:.1f}s") from None
        except httpx.TransportError as exc:
            raise _Transient(_one_line(str(exc)) or type(exc).__name__) from None
        status = response.status_code
        if response.is_success or (not_found_ok and status == 404):
            return response
        message = describe_failure(response)
        if status in _TRANSIENT_STATUSES:
            retry_after = retry_after_seconds(response.headers.get("retry-after"))
            raise _Transient(message, retry_after, status)
        if 300 <= status < 400:
            where = response.headers.get("location", "nowhere")
            raise Failure(f"unexpected redirect ({status}) to {where}: is NSPROV_URL nsprov?")
        if status in (401, 403):
            raise AuthFailed(message)
        if 400 <= status < 500:
            raise Refused(message, status)
        raise Unavailable(message)


def new_idempotency_key() -> str:
    return str(uuid.uuid4())


def _path(name: str) -> str:
    return f"/api/v1/namespaces/{quote(name, safe='')}"


def _kubeconfig(response: httpx.Response) -> Kubeconfig:
    try:
        body = response.json()
        return Kubeconfig(
            namespace=str(body["namespace"]),
            expires_at=str(body["expiresAt"]),
            kubeconfig=str(body["kubeconfig"]),
            replayed=response.headers.get("idempotent-replayed") == "true",
        )
    except (ValueError, KeyError, TypeError):
        raise Failure(
            f"the service's answer has no kubeconfig (HTTP {response.status_code})"
        ) from None
