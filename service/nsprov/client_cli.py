"""The client commands of ``nsprov``: create, list, get, extend, delete and run.

Output is for two readers: a person (a table, a spinner while waiting) and a
script (``-o json|yaml|name``, nothing but the answer on stdout). Progress
(the spinner, retries) goes to stderr and only when stderr is a terminal; a CI
log gets the one-line error or warning and nothing else (the error says how many
attempts were made).

Exit codes (``nsprov run`` exits with CMD's code once CMD has started):

==  =====================================================================
0   done
1   anything else (an unexpected answer, a file that cannot be written)
2   usage: a bad flag, no NSPROV_URL (or plain http to a remote host), no token or several
3   auth: the service refused the token (401) or the identity (403)
4   refused: the service said no (bad ttl, not found, conflict, cap reached)
5   unavailable: no answer within the deadline, or a 5xx
==  =====================================================================
"""

from __future__ import annotations

import datetime
import json
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO

import click

from nsprov.client import (
    CLEANUP_TIMING,
    ClientConfig,
    Failure,
    Kubeconfig,
    NsprovClient,
    Refused,
    Unavailable,
    UsageFailure,
    check_ttl,
    positive_duration,
)
from nsprov.client_run import Interrupted, SignalRouter, run_in_namespace

__all__ = ["COMMANDS", "Failure"]

_SPINNER = "|/-\\"


class Progress:
    """A one-line spinner on stderr while a request is out; silent unless stderr is a terminal."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream or sys.stderr
        self._tty = self._stream.isatty()
        self._text = ""
        self._detail = ""
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    @contextmanager
    def showing(self, text: str) -> Iterator[None]:
        if not self._tty:
            yield
            return
        self._text, self._detail = text, ""
        self._stop.clear()
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()
        try:
            yield
        finally:
            self._stop.set()
            self._thread.join()
            self._clear()

    def _spin(self) -> None:
        frame = 0
        while not self._stop.wait(0.1):
            with self._lock:
                detail = f" ({self._detail})" if self._detail else ""
                self._stream.write(f"\r{_SPINNER[frame % 4]} {self._text}{detail}\x1b[K")
                self._stream.flush()
            frame += 1

    def _clear(self) -> None:
        with self._lock:
            self._stream.write("\r\x1b[K")
            self._stream.flush()

    def note(self, text: str) -> None:
        """Progress worth a glance (a retry): the spinner's new text; nothing without a terminal."""
        if self._tty:
            self._detail = text

    def say(self, text: str) -> None:
        """A line of its own on stderr (a retry, a warning), above the spinner."""
        with self._lock:
            if self._tty:
                self._stream.write("\r\x1b[K")
            self._stream.write(f"nsprov: {text}\n")
            self._stream.flush()


def _client(progress: Progress, before_retry: Callable[[], None] | None = None) -> NsprovClient:
    config = ClientConfig.from_env(os.environ)

    def on_retry(error: str, attempt: int, delay: float) -> None:
        if before_retry is not None:
            before_retry()
        progress.note(f"attempt {attempt} failed ({error}); retrying in {delay:.1f}s")

    return NsprovClient(config, on_retry=on_retry)


# ---- output -------------------------------------------------------------------------------


def _until(expires_at: str | None, now: float | None = None) -> str:
    """``29m`` / ``2h5m`` / ``expired``: how long until an ISO instant."""
    if not expires_at:
        return "-"
    try:
        when = datetime.datetime.strptime(expires_at, "%Y-%m-%dT%H:%M:%SZ")
    except ValueError:
        return "?"
    left = when.replace(tzinfo=datetime.UTC).timestamp() - (time.time() if now is None else now)
    if left <= 0:
        return "expired"
    hours, rest = divmod(int(left), 3600)
    minutes, seconds = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes}m"
    return f"{minutes}m" if minutes else f"{seconds}s"


def table(rows: list[dict[str, Any]], now: float | None = None) -> str:
    """Namespaces as a kubectl-like table: NAME, STATE and, when rows have one, the tenant,
    the expiry and since when a namespace is being deleted."""
    header = ["NAME", "STATE"]
    with_tenant = any(row.get("tenant") for row in rows)
    if with_tenant:
        header.append("TENANT")
    with_expiry = any("expiresAt" in row for row in rows)
    if with_expiry:
        header += ["EXPIRES-AT", "EXPIRES-IN"]
    with_deletion = any(row.get("deletionStartedAt") for row in rows)
    if with_deletion:
        header.append("DELETING-SINCE")
    lines = [header]
    for row in rows:
        line = [str(row.get("name", "")), str(row.get("state", ""))]
        if with_tenant:
            line.append(str(row.get("tenant") or "-"))
        if with_expiry:
            line += [str(row.get("expiresAt") or "-"), _until(row.get("expiresAt"), now)]
        if with_deletion:
            line.append(str(row.get("deletionStartedAt") or "-"))
        lines.append(line)
    return _columns(lines)


def quota_table(quota: dict[str, Any]) -> str:
    """A namespace's quota as RESOURCE, USED, HARD, one line per resource it limits."""
    hard, used = quota.get("hard") or {}, quota.get("used") or {}
    lines = [["RESOURCE", "USED", "HARD"]]
    lines += [[str(r), str(used.get(r, "-")), str(hard[r])] for r in sorted(hard)]
    return _columns(lines)


def blockers_table(blockers: list[dict[str, Any]]) -> str:
    """What keeps a namespace being deleted: CONDITION, MESSAGE, one line per condition."""
    lines = [["CONDITION", "MESSAGE"]]
    lines += [[str(b.get("condition", "")), str(b.get("message", ""))] for b in blockers]
    return _columns(lines)


def _columns(lines: list[list[str]]) -> str:
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    return "\n".join(
        "   ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in lines
    )


def _emit(data: Any, output: str, rows: list[dict[str, Any]]) -> None:
    if output == "json":
        click.echo(json.dumps(data, indent=2))
    elif output == "yaml":
        import yaml  # only here: importing it costs a CI job's every command ~50 ms

        click.echo(yaml.safe_dump(data, sort_keys=False), nl=False)
    else:
        click.echo(table(rows))


def write_private_file(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` with mode 0600, replacing the file (or a symlink) atomically."""
    directory = path.parent if str(path.parent) else Path(".")
    fd, temporary = tempfile.mkstemp(dir=directory, prefix=f".{path.name}.")  # mode 0600
    try:
        with os.fdopen(fd, "w") as out:
            out.write(text)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _save_kubeconfig(
    client: NsprovClient, created: Kubeconfig, path: Path, progress: Progress
) -> None:
    """Save the kubeconfig; if that fails, the namespace is useless: delete it and fail."""
    try:
        write_private_file(path, created.kubeconfig)
    except OSError as exc:
        try:
            client.delete(created.namespace, timing=CLEANUP_TIMING)
        except Failure as cleanup:
            progress.say(f"warning: namespace {created.namespace} was not deleted: {cleanup}")
        raise Failure(f"cannot write the kubeconfig to {path}: {exc.strerror}") from None


# ---- commands -----------------------------------------------------------------------------

_TTL = click.option(
    "--ttl", metavar="DURATION", help="lifetime (Go duration, e.g. 30m); default: the service's"
)
_SERVER = click.option(
    "--server", metavar="URL", help="Kubernetes API URL to write into the kubeconfig"
)
_TABLE_OUTPUT = click.option(
    "-o", "--output", type=click.Choice(["table", "json", "yaml"]), default="table",
    show_default=True, help="output format",
)  # fmt: skip


@click.command(short_help="provision a namespace, print its kubeconfig")
@_TTL
@_SERVER
@click.option(
    "--idempotency-key",
    help="retrying with the same key returns the same namespace (default: a fresh one)",
)
@click.option(
    "-o", "--output", type=click.Choice(["kubeconfig", "json", "name"]), default="kubeconfig",
    show_default=True, help="what to print on stdout",
)  # fmt: skip
@click.option(
    "--kubeconfig-out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="write the kubeconfig to this file (mode 0600) instead of stdout",
)
def create(
    ttl: str | None,
    server: str | None,
    idempotency_key: str | None,
    output: str,
    kubeconfig_out: Path | None,
) -> int:
    """Provision a namespace. Prints its kubeconfig (or, with -o, JSON or its name)."""
    check_ttl(ttl)
    if idempotency_key is not None and not 0 < len(idempotency_key.strip()) <= 255:
        raise UsageFailure("--idempotency-key must be 1 to 255 characters")
    progress = Progress()
    with _client(progress) as client:
        with progress.showing("provisioning a namespace"):
            created = client.create(ttl=ttl, server=server, idempotency_key=idempotency_key)
        if kubeconfig_out is not None:
            _save_kubeconfig(client, created, kubeconfig_out, progress)
    if output == "name":
        click.echo(created.namespace)
    elif output == "json":
        body = {"namespace": created.namespace, "expiresAt": created.expires_at}
        if kubeconfig_out is None:
            body["kubeconfig"] = created.kubeconfig
        click.echo(json.dumps(body, indent=2))
    elif kubeconfig_out is None:
        click.echo(created.kubeconfig, nl=False)
    else:
        progress.say(f"namespace {created.namespace} (expires {created.expires_at})")
    return 0


@click.command(name="list", short_help="your namespaces")
@_TABLE_OUTPUT
def list_(output: str) -> int:
    """The namespaces your token owns: live, and being deleted (MARKED_FOR_DELETION) until
    they are gone, since until then they count against your caps."""
    progress = Progress()
    with _client(progress) as client, progress.showing("listing namespaces"):
        items = client.list()
    _emit({"items": items}, output, items)
    return 0


@click.command(short_help="one of your namespaces")
@click.argument("name")
@_TABLE_OUTPUT
def get(name: str, output: str) -> int:
    """One of your namespaces: its state, tenant, expiry and quota usage; being deleted,
    what still keeps it."""
    progress = Progress()
    with _client(progress) as client, progress.showing(f"reading {name}"):
        info = client.get(name)
    _emit(info, output, [info])
    if output == "table" and info.get("quota"):
        click.echo()
        click.echo(quota_table(info["quota"]))
    if output == "table" and info.get("blockedBy"):
        click.echo()
        click.echo(blockers_table(info["blockedBy"]))
    return 0


@click.command(short_help="give a namespace more time")
@click.argument("name")
@_TTL
@_TABLE_OUTPUT
@click.option(
    "--kubeconfig-out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="also write the fresh kubeconfig to this file (mode 0600)",
)
def extend(name: str, ttl: str | None, output: str, kubeconfig_out: Path | None) -> int:
    """Set NAME's expiry to now + --ttl (within the service's maximum)."""
    check_ttl(ttl)
    progress = Progress()
    with _client(progress) as client:
        with progress.showing(f"extending {name}"):
            extended = client.extend(name, ttl=ttl)
        if kubeconfig_out is not None:
            try:
                write_private_file(kubeconfig_out, extended.kubeconfig)
            except OSError as exc:
                raise Failure(f"cannot write the kubeconfig to {kubeconfig_out}: {exc}") from None
    row = {"name": extended.namespace, "state": "ACTIVE", "expiresAt": extended.expires_at}
    _emit(row, output, [row])
    return 0


@click.command(short_help="delete a namespace now")
@click.argument("name")
@click.option("--wait", is_flag=True, help="return once the namespace is gone")
@click.option(
    "--wait-timeout", default="5m", show_default=True, help="give up waiting after this long"
)
@_TABLE_OUTPUT
def delete(name: str, wait: bool, wait_timeout: str, output: str) -> int:
    """Delete NAME and everything in it (exit 4 if it is not yours or does not exist)."""
    limit = positive_duration("--wait-timeout", wait_timeout)
    progress = Progress()
    with _client(progress) as client:
        with progress.showing(f"deleting {name}"):
            if not client.delete(name):
                raise Refused(f"404 Not Found: namespace {name!r} not found", 404)
        state = "MARKED_FOR_DELETION"
        if wait:
            deadline = time.monotonic() + limit
            with progress.showing(f"waiting until {name} is gone"):
                while client.exists(name):
                    if time.monotonic() >= deadline:
                        raise Unavailable(f"namespace {name} still exists after {wait_timeout}")
                    time.sleep(0.25)
            state = "DELETED"
    row = {"name": name, "state": state}
    _emit(row, output, [row])
    return 0


@click.command(
    short_help="run a command with a namespace, then delete it",
    context_settings={"allow_interspersed_args": False},
)
@_TTL
@_SERVER
@click.option("--keep", is_flag=True, help="keep the namespace (and kubeconfig) afterwards")
@click.argument(
    "command", nargs=-1, required=True, type=click.UNPROCESSED, metavar="[--] CMD [ARGS]..."
)
def run(ttl: str | None, server: str | None, keep: bool, command: tuple[str, ...]) -> int:
    """Provision a namespace, run CMD with KUBECONFIG and NSPROV_NAMESPACE set, delete it.

    Exits with CMD's exit code. SIGINT and SIGTERM are passed on to CMD;
    the namespace and the kubeconfig file go however CMD ends.
    """
    check_ttl(ttl)
    progress = Progress()
    router = SignalRouter()
    with router.installed(), _client(progress, router.stop_retrying) as client:
        try:
            return run_in_namespace(
                client,
                command,
                ttl=ttl,
                server=server,
                keep=keep,
                say=progress.say,
                router=router,
                showing=progress.showing,
            )
        except Interrupted as exc:  # a second signal in the instant between two phases
            progress.say(f"interrupted ({exc}); the namespace's TTL deletes what is left")
            return 128 + exc.signum


COMMANDS = [create, list_, get, extend, delete, run]
