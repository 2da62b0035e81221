"""What a failed job's namespace looked like, read just before nsprov deletes it.

Once the namespace is gone, so are its events, its pods' states and their logs:
the one moment to keep them is between CMD's end and the delete. The report holds
the namespace's events (oldest first), each pod's phase, conditions, and each
container's state, reason and restarts, and the last lines of each container's log
(the previous container's too after a restart).

It reads with the namespace's own kubeconfig, the one CMD had: it sees what the job
could see and nothing more, and where the tenant's grant does not allow reading
pods or events the report says so. It speaks to the Kubernetes API with urllib (the
client must not import the ``kubernetes`` package: ``pip install nsprov`` is the
client alone) and reads only events, pod status and logs: never a Secret, and never
a pod's spec, where environment values live.

Bounded, because it runs on the way to a delete that must happen: every request
has a timeout, the whole collection a deadline (a hung API server costs at most
that), and the report a size.
"""

from __future__ import annotations

import base64
import datetime
import json
import os
import secrets
import ssl
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote, urlencode

Mode = Literal["on-failure", "always", "never"]
MODES: tuple[Mode, ...] = ("on-failure", "always", "never")
REPORT_DIRECTORY = Path("nsprov-diagnostics")

DEADLINE_SECONDS = 20.0
"""The whole collection: a post step may have little time left, and the delete comes after."""
REQUEST_SECONDS = 5.0
LOG_LINES = 100
LOG_BYTES = 64 * 1024
"""Per container log: 100 lines of a chatty program can be long."""
MAX_PODS = 30
MAX_EVENTS = 300
MAX_REPORT_BYTES = 1024 * 1024


def wanted(mode: str, failed: bool) -> bool:
    """Whether ``mode`` asks for a report of a job that ``failed`` (or did not)."""
    return mode == "always" or (mode == "on-failure" and failed)


class _OutOfTime(Exception):
    """The collection's deadline passed: what is collected so far is the report."""


class _ApiError(Exception):
    """One read failed; the report says which and why, and goes on with the next."""


@dataclass(frozen=True)
class KubeAccess:
    """The API server, credentials and namespace of a kubeconfig nsprov made."""

    server: str
    namespace: str
    token: str = field(repr=False)
    ca_data: bytes | None = field(default=None, repr=False)

    @classmethod
    def from_kubeconfig(cls, text: str) -> KubeAccess:
        """The current context's cluster, user token and namespace; ValueError when absent."""
        import yaml  # only here: a job that passes never pays for it

        try:
            config = yaml.safe_load(text)
        except yaml.YAMLError:
            raise ValueError("the kubeconfig is not YAML") from None
        try:
            context_name = config["current-context"]
            context = _named(config["contexts"], context_name)["context"]
            cluster = _named(config["clusters"], context["cluster"])["cluster"]
            user = _named(config["users"], context["user"])["user"]
            ca = cluster.get("certificate-authority-data")
            return cls(
                server=str(cluster["server"]).rstrip("/"),
                namespace=str(context["namespace"]),
                token=str(user["token"]),
                ca_data=base64.b64decode(ca) if ca else None,
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"the kubeconfig lacks {exc}") from None


def _named(entries: list[dict[str, Any]], name: str) -> dict[str, Any]:
    for entry in entries:
        if entry.get("name") == name:
            return entry
    raise KeyError(name)


class _Reader:
    """GETs against one API server, each bounded by REQUEST_SECONDS and all by the deadline."""

    def __init__(self, access: KubeAccess, deadline: float) -> None:
        self._access = access
        self._deadline = deadline
        context = ssl.create_default_context()
        if access.ca_data:
            context = ssl.create_default_context(cadata=access.ca_data.decode())
        handlers: list[urllib.request.BaseHandler] = [urllib.request.HTTPSHandler(context=context)]
        self._opener = urllib.request.build_opener(*handlers)

    def get(self, path: str, params: dict[str, str] | None = None, limit: int = 4 * 2**20) -> bytes:
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise _OutOfTime
        url = f"{self._access.server}{path}" + (f"?{urlencode(params)}" if params else "")
        request = urllib.request.Request(  # noqa: S310 - the server nsprov wrote, http(s)
            url, headers={"Authorization": f"Bearer {self._access.token}"}
        )
        try:
            with self._opener.open(request, timeout=min(REQUEST_SECONDS, left)) as answer:
                return bytes(answer.read(limit))
        except urllib.error.HTTPError as exc:
            with exc:
                said = _status_message(exc.read(4096)) or exc.reason
            raise _ApiError(f"{exc.code} {said}") from None
        except (OSError, urllib.error.URLError) as exc:
            if time.monotonic() >= self._deadline:
                raise _OutOfTime from None
            raise _ApiError(" ".join(str(exc).split()) or type(exc).__name__) from None

    def get_json(self, path: str, params: dict[str, str] | None = None) -> Any:
        try:
            return json.loads(self.get(path, params))
        except ValueError:
            raise _ApiError("the answer is not JSON") from None


def _status_message(body: bytes) -> str:
    """The ``message`` of a Kubernetes Status body (``pods is forbidden: ...``), if any."""
    try:
        status = json.loads(body)
    except ValueError:
        return ""
    return str(status.get("message", "")) if isinstance(status, dict) else ""


# ---- the report ---------------------------------------------------------------------------


def collect(
    kubeconfig: str,
    *,
    why: str,
    deadline_seconds: float = DEADLINE_SECONDS,
    now: Callable[[], float] = time.time,
) -> str:
    """The report of the namespace ``kubeconfig`` is for, as text; never raises for the
    cluster's sake (a failed read is a line of the report)."""
    try:
        access = KubeAccess.from_kubeconfig(kubeconfig)
    except ValueError as exc:
        return f"nsprov diagnostics: cannot read the kubeconfig: {exc}\n"
    stamp = datetime.datetime.fromtimestamp(now(), datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    lines = [f"nsprov diagnostics: namespace {access.namespace} at {stamp} ({why})"]
    reader = _Reader(access, time.monotonic() + deadline_seconds)
    size = len(lines[0])
    try:
        for line in _sections(reader, access.namespace):
            size += len(line.encode()) + 1
            if size > MAX_REPORT_BYTES:
                lines.append(f"(the report stops here: it reached {MAX_REPORT_BYTES} bytes)")
                break
            lines.append(line)
    except _OutOfTime:
        lines.append(f"(the report stops here: the {deadline_seconds:.0f}s budget ran out)")
    return "\n".join(lines) + "\n"


def _sections(reader: _Reader, namespace: str) -> Iterator[str]:
    base = f"/api/v1/namespaces/{quote(namespace, safe='')}"
    yield ""
    yield "== events (oldest first)"
    try:
        events = reader.get_json(f"{base}/events", {"limit": str(MAX_EVENTS)}).get("items", [])
        yield from _event_lines(events) if events else ["(none)"]
    except _ApiError as exc:
        yield f"(cannot list events: {exc})"
    yield ""
    yield "== pods"
    try:
        pods = reader.get_json(f"{base}/pods", {"limit": str(MAX_PODS)}).get("items", [])
    except _ApiError as exc:
        yield f"(cannot list pods: {exc})"
        return
    if not pods:
        yield "(none)"
    for pod in pods:
        yield from _pod_lines(pod)
    for pod in pods:
        yield from _log_lines(reader, base, pod)


def _event_time(event: dict[str, Any]) -> str:
    return str(
        event.get("lastTimestamp")
        or event.get("eventTime")
        or event.get("firstTimestamp")
        or (event.get("metadata") or {}).get("creationTimestamp")
        or ""
    )


def _event_lines(events: list[dict[str, Any]]) -> Iterator[str]:
    for event in sorted(events, key=_event_time):
        involved = event.get("involvedObject") or {}
        what = f"{str(involved.get('kind', '?')).lower()}/{involved.get('name', '?')}"
        count = event.get("count") or 1
        times = f" (x{count})" if count > 1 else ""
        message = " ".join(str(event.get("message", "")).split())
        yield (
            f"{_event_time(event)[:20]:<20}  {event.get('type', '-'):<7}  "
            f"{event.get('reason', '-')}  {what}{times}: {message}"
        )


def _container_statuses(pod: dict[str, Any]) -> list[dict[str, Any]]:
    status = pod.get("status") or {}
    init = status.get("initContainerStatuses") or []
    return [*init, *(status.get("containerStatuses") or [])]


def _state(state: dict[str, Any] | None) -> str:
    """``running``, ``waiting (CrashLoopBackOff, back-off ...)``, ``terminated (Error, exit 1)``."""
    if not state:
        return "unknown"
    kind, detail = next(iter(state.items()))
    detail = detail or {}
    said = [str(detail[key]) for key in ("reason",) if detail.get(key)]
    if "exitCode" in detail:
        said.append(f"exit {detail['exitCode']}")
    if detail.get("message"):
        said.append(" ".join(str(detail["message"]).split())[:300])
    return f"{kind} ({', '.join(said)})" if said else str(kind)


def _pod_lines(pod: dict[str, Any]) -> Iterator[str]:
    status = pod.get("status") or {}
    name = (pod.get("metadata") or {}).get("name", "?")
    reason = f" ({status['reason']}: {status.get('message', '')})" if status.get("reason") else ""
    yield f"pod/{name}: phase {status.get('phase', '?')}{reason}"
    for condition in status.get("conditions") or []:
        if condition.get("status") != "True":
            why = condition.get("reason", "")
            message = " ".join(str(condition.get("message", "")).split())
            yield f"  {condition.get('type')}=False {why}: {message}".rstrip(": ")
    for container in _container_statuses(pod):
        line = (
            f"  container {container.get('name')}: {_state(container.get('state'))}, "
            f"restarts {container.get('restartCount', 0)}"
        )
        if container.get("lastState"):
            line += f", last {_state(container['lastState'])}"
        yield line


def _log_lines(reader: _Reader, base: str, pod: dict[str, Any]) -> Iterator[str]:
    name = str((pod.get("metadata") or {}).get("name", ""))
    for container in _container_statuses(pod):
        state = container.get("state") or {}
        if not ("running" in state or "terminated" in state or container.get("restartCount")):
            continue  # never started: no log to read
        runs = [False, True] if container.get("restartCount") else [False]
        for previous in runs:
            which = ", previous" if previous else ""
            yield ""
            title = f"pod/{name} container {container.get('name')}{which}"
            yield f"== log of {title} (last {LOG_LINES} lines)"
            params = {"container": str(container.get("name")), "tailLines": str(LOG_LINES),
                      "limitBytes": str(LOG_BYTES)}  # fmt: skip
            if previous:
                params["previous"] = "true"
            try:
                text = reader.get(f"{base}/pods/{quote(name, safe='')}/log", params, LOG_BYTES)
            except _ApiError as exc:
                yield f"(cannot read the log: {exc})"
                continue
            yield from text.decode("utf-8", errors="replace").splitlines() or ["(empty)"]


# ---- where the report goes ----------------------------------------------------------------


def write_report(namespace: str, text: str, directory: Path = REPORT_DIRECTORY) -> Path:
    """``nsprov-diagnostics/<namespace>.txt``, for an artifact upload step after the job."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{namespace}.txt"
    fd, temporary = tempfile.mkstemp(dir=directory, prefix=f".{namespace}.")
    with os.fdopen(fd, "w") as out:
        out.write(text)
    os.replace(temporary, path)
    return path


def log_lines(title: str, text: str, *, github: bool) -> Iterator[str]:
    """The report as the job log shows it: on GitHub a collapsed group, in which no line of
    a pod's log can act as a workflow command (``::stop-commands::``); elsewhere framed."""
    if not github:
        yield f"---- {title} ----"
        yield from text.splitlines()
        yield f"---- end of {title} ----"
        return
    resume = secrets.token_hex(16)
    yield f"::group::{title}"
    yield f"::stop-commands::{resume}"
    yield from text.splitlines()
    yield f"::{resume}::"
    yield "::endgroup::"
