"""The client commands of ``nsprov``: create, list, get, extend, delete, run and completion.

Output is for two readers: a person (a table, a spinner while waiting) and a
script (``-o json|yaml|name``, nothing but the answer on stdout). Progress goes
to stderr: on a terminal a spinner whose text shows the latest retry; in a CI
log, where nobody watches a spinner, one line per retry (what failed, when the
next attempt goes) and per wait for a free slot, so that a wrong URL or a full
cap is readable from the log while the job still runs. Every error line ends
with the service's request id when there was an answer.

Only what a command uses is imported: ``nsprov run`` sits on the critical path of
a CI job (see ``nsprov.launcher``), so ``run``'s machinery (subprocess, signals)
and YAML load inside the commands that need them.

Exit codes (``nsprov run`` exits with CMD's code once CMD has started):

==  =====================================================================
0   done
1   anything else (an unexpected answer, a file that cannot be written)
2   usage: a bad flag, no NSPROV_URL (or plain http to a remote host), no token or several
3   auth: the service refused the token (401) or the identity (403)
4   refused: the service said no (bad ttl, not found, conflict); a cap's 429 at once
    unless ``--wait``
5   unavailable: no answer within the deadline, a 5xx, a TLS or certificate error,
    a host name that does not resolve
==  =====================================================================
"""

from __future__ import annotations

import datetime
import json
import os
import re
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO

import click

from nsprov.client.calls import (
    CLEANUP_TIMING,
    ClientConfig,
    Failure,
    Kubeconfig,
    NsprovClient,
    Refused,
    RetryNotice,
    Timing,
    Unavailable,
    UsageFailure,
    check_key,
    check_ttl,
    positive_duration,
)

__all__ = ["COMMANDS", "Failure"]

_SPINNER = "|/-\\"


_IDEMPOTENCY_KEY = re.compile(r"[\t -~]*[!-~][\t -~]*")
"""The service's rule for an Idempotency-Key (openapi.IDEMPOTENCY_KEY_PATTERN, which the client
may not import): printable ASCII, not all spaces. Refused here in one line, not as a 400."""


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
        """Progress worth a glance (a retry): the spinner's new text on a terminal, else a line.

        A CI log has no spinner to update, and silence there hid a wrong URL for two
        minutes: each retry is a line of its own.
        """
        if self._tty:
            self._detail = text
        else:
            self.say(text)

    def say(self, text: str) -> None:
        """A line of its own on stderr (a retry, a warning), above the spinner."""
        with self._lock:
            if self._tty:
                self._stream.write("\r\x1b[K")
            self._stream.write(f"nsprov: {text}\n")
            self._stream.flush()


def _client(progress: Progress, before_retry: Callable[[], None] | None = None) -> NsprovClient:
    config = ClientConfig.from_env(os.environ)

    def on_retry(notice: RetryNotice) -> None:
        if before_retry is not None:
            before_retry()
        progress.note(notice.line())

    return NsprovClient(config, on_retry=on_retry)


_COMPLETION_TIMING = Timing(deadline=2.0, attempt_timeout=1.5, backoff=0.5, backoff_max=0.5)
"""A shell waits for completions with the user's finger on Tab: two seconds, then nothing."""


def complete_namespace_names(
    ctx: click.Context, param: click.Parameter, incomplete: str
) -> list[click.shell_completion.CompletionItem]:
    """The caller's namespaces whose names start with ``incomplete``; none when anything fails.

    Called by the shell on Tab: it must never print, raise or hang, so every
    failure (no NSPROV_URL, a refused token, a slow service) completes nothing.
    """
    from click.shell_completion import CompletionItem

    try:
        with NsprovClient(ClientConfig.from_env(os.environ)) as client:
            rows = client.list(timing=_COMPLETION_TIMING)
    except Exception:  # completion is a convenience: any failure means no names
        return []
    names = sorted(str(row.get("name", "")) for row in rows)
    return [CompletionItem(name) for name in names if name.startswith(incomplete)]


# ---- output -------------------------------------------------------------------------------


def short_duration(seconds: float) -> str:
    """``45s``, ``29m``, ``2h5m``, ``3d4h``: kubectl's AGE style, two units at most."""
    whole = int(seconds)
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d{hours}h"
    if hours:
        return f"{hours}h{minutes}m"
    return f"{minutes}m" if minutes else f"{secs}s"


def _instant(text: object) -> float | None:
    """An ``expiresAt``-style instant (``2026-01-02T15:04:05Z``) as Unix seconds."""
    if not isinstance(text, str) or not text:
        return None
    try:
        when = datetime.datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ")
    except ValueError:
        return None
    return when.replace(tzinfo=datetime.UTC).timestamp()


def _until(expires_at: str | None, now: float | None = None) -> str:
    """``29m`` / ``2h5m`` / ``expired``: how long until an ISO instant."""
    if not expires_at:
        return "-"
    when = _instant(expires_at)
    if when is None:
        return "?"
    left = when - (time.time() if now is None else now)
    return short_duration(left) if left > 0 else "expired"


def _age(created_at: object, now: float | None = None) -> str:
    when = _instant(created_at)
    if when is None:
        return "-"
    return short_duration(max(0.0, (time.time() if now is None else now) - when))


def table(rows: list[dict[str, Any]], now: float | None = None) -> str:
    """Namespaces as a kubectl-like table: NAME and STATE, then each column some row has a
    value for: OWNER, TENANT (with a policy file), AGE, EXPIRES-AT, EXPIRES-IN and
    DELETING-SINCE.

    Fields the table does not know are ignored, so a newer service's rows (a
    MARKED_FOR_DELETION one with ``deletionStartedAt`` and ``blockedBy``) still print;
    a namespace being deleted expires in nothing, so its EXPIRES-IN is ``-``.
    """
    columns: list[tuple[str, Callable[[dict[str, Any]], str]]] = [
        ("NAME", lambda row: str(row.get("name", ""))),
        ("STATE", lambda row: str(row.get("state") or "-")),
    ]
    if any(row.get("owner") for row in rows):
        columns.append(("OWNER", lambda row: str(row.get("owner") or "-")))
    if any(row.get("tenant") for row in rows):
        columns.append(("TENANT", lambda row: str(row.get("tenant") or "-")))
    if any(row.get("createdAt") for row in rows):
        columns.append(("AGE", lambda row: _age(row.get("createdAt"), now)))
    if any("expiresAt" in row for row in rows):
        columns.append(("EXPIRES-AT", lambda row: str(row.get("expiresAt") or "-")))
        columns.append(("EXPIRES-IN", lambda row: _expires_in(row, now)))
    if any(row.get("deletionStartedAt") for row in rows):
        columns.append(("DELETING-SINCE", lambda row: str(row.get("deletionStartedAt") or "-")))
    lines = [[name for name, _ in columns]]
    lines += [[cell(row) for _, cell in columns] for row in rows]
    return _columns(lines)


def _expires_in(row: dict[str, Any], now: float | None) -> str:
    if row.get("state") == "MARKED_FOR_DELETION":
        return "-"
    return _until(row.get("expiresAt"), now)


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
    "--ttl", metavar="DURATION",
    help="lifetime (e.g. 30m, 2h, 1d); default: the service's (your tenant's)",
)  # fmt: skip
_SERVER = click.option(
    "--server", metavar="URL", help="Kubernetes API URL to write into the kubeconfig"
)
_WAIT_FOR_SLOT = click.option(
    "--wait", "wait", is_flag=True,
    help="when a cap is reached (429), wait for a free slot instead of failing (exit 4)",
)  # fmt: skip
_WAIT_TIMEOUT = click.option(
    "--wait-timeout", default="10m", show_default=True, metavar="DURATION",
    help="with --wait: give up after this long",
)  # fmt: skip
_TABLE_OUTPUT = click.option(
    "-o", "--output", type=click.Choice(["table", "json", "yaml"]), default="table",
    show_default=True, help="output format",
)  # fmt: skip
_NAME = click.argument("name", shell_complete=complete_namespace_names)


def _slot_wait(wait: bool, wait_timeout: str) -> float | None:
    """--wait's budget in seconds, None without --wait (a cap's 429 then fails at once)."""
    limit = positive_duration("--wait-timeout", wait_timeout)
    return limit if wait else None


@click.command(short_help="provision a namespace, print its kubeconfig")
@_TTL
@_SERVER
@click.option(
    "--idempotency-key",
    help="retrying with the same key returns the same namespace (default: a fresh one)",
)
@click.option(
    "--key", metavar="KEY",
    help="a preview key (e.g. pr-42): your live namespace for it, extended to --ttl with a "
    "fresh kubeconfig, or a new one; `delete --key` ends it",
)  # fmt: skip
@click.option(
    "-o", "--output", type=click.Choice(["kubeconfig", "json", "name"]), default="kubeconfig",
    show_default=True, help="what to print on stdout",
)  # fmt: skip
@click.option(
    "--kubeconfig-out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="write the kubeconfig to this file (mode 0600) instead of stdout",
)
@_WAIT_FOR_SLOT
@_WAIT_TIMEOUT
def create(
    ttl: str | None,
    server: str | None,
    idempotency_key: str | None,
    key: str | None,
    output: str,
    kubeconfig_out: Path | None,
    wait: bool,
    wait_timeout: str,
) -> int:
    """Provision a namespace. Prints its kubeconfig (or, with -o, JSON or its name).

    With --key, a second create with the same key returns the same namespace (while it
    lives), its expiry moved to now + --ttl: one namespace per pull request."""
    check_ttl(ttl)
    wait_for_slot = _slot_wait(wait, wait_timeout)
    if idempotency_key is not None and not (
        len(idempotency_key) <= 255 and _IDEMPOTENCY_KEY.fullmatch(idempotency_key)
    ):
        raise UsageFailure(
            "--idempotency-key must be 1 to 255 printable ASCII characters, not all spaces"
        )
    if key is not None:
        check_key(key)
        if idempotency_key is not None:
            raise UsageFailure("--key and --idempotency-key do not go together")
    progress = Progress()
    with _client(progress) as client:
        with progress.showing("provisioning a namespace"):
            if key is not None:
                created = client.create_keyed(
                    key, ttl=ttl, server=server, wait_for_slot=wait_for_slot
                )
            else:
                created = client.create(
                    ttl=ttl,
                    server=server,
                    idempotency_key=idempotency_key,
                    wait_for_slot=wait_for_slot,
                )
        if kubeconfig_out is not None and not created.reused:
            _save_kubeconfig(client, created, kubeconfig_out, progress)
        elif kubeconfig_out is not None:
            # The key's namespace lives on for the next push: never delete it over a file.
            try:
                write_private_file(kubeconfig_out, created.kubeconfig)
            except OSError as exc:
                raise Failure(f"cannot write the kubeconfig to {kubeconfig_out}: {exc}") from None
    if key is not None:
        what = "reused" if created.reused else "created"
        progress.say(f"{what} namespace {created.namespace} for key {key}")
    if output == "name":
        click.echo(created.namespace)
    elif output == "json":
        body: dict[str, object] = {"namespace": created.namespace, "expiresAt": created.expires_at}
        if key is not None:
            body["key"] = key
            body["reused"] = created.reused
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
    """The namespaces your token owns, with their state, owner, tenant, age and expiry: live,
    and being deleted (MARKED_FOR_DELETION) until they are gone, since until then they count
    against your caps."""
    progress = Progress()
    with _client(progress) as client, progress.showing("listing namespaces"):
        items = client.list()
    _emit({"items": items}, output, items)
    return 0


@click.command(short_help="one of your namespaces")
@_NAME
@_TABLE_OUTPUT
def get(name: str, output: str) -> int:
    """One of your namespaces: its state, owner, tenant, age, expiry and quota usage; being
    deleted, what still keeps it."""
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
@_NAME
@click.option(
    "--ttl", metavar="DURATION", required=True,
    help="required: the new lifetime from now (e.g. 2h, 1d), within your tenant's maximum; "
    "an extension has no default",
)  # fmt: skip
@_TABLE_OUTPUT
@click.option(
    "--kubeconfig-out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="also write the fresh kubeconfig to this file (mode 0600)",
)
def extend(name: str, ttl: str, output: str, kubeconfig_out: Path | None) -> int:
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
@click.argument("name", required=False, shell_complete=complete_namespace_names)
@click.option("--key", metavar="KEY", help="delete your namespace for this preview key")
@click.option("--wait", is_flag=True, help="return once the namespace is gone")
@click.option(
    "--wait-timeout", default="5m", show_default=True, help="give up waiting after this long"
)
@click.option(
    "--ignore-not-found", is_flag=True,
    help="a namespace that is gone (or not yours) is no error: state NOT_FOUND, exit 0",
)  # fmt: skip
@_TABLE_OUTPUT
def delete(
    name: str | None,
    key: str | None,
    wait: bool,
    wait_timeout: str,
    ignore_not_found: bool,
    output: str,
) -> int:
    """Delete NAME (or, with --key, your namespace for that key) and everything in it
    (exit 4 if it is not yours or does not exist, unless --ignore-not-found)."""
    limit = positive_duration("--wait-timeout", wait_timeout)
    if (name is None) == (key is None):
        raise UsageFailure("name a namespace or give --key, not both")
    if key is not None:
        check_key(key)
    progress = Progress()
    with _client(progress) as client:
        if key is not None:
            with progress.showing(f"deleting the namespace for key {key}"):
                found = client.delete_keyed(key)
            marked = found is not None
            if not marked and not ignore_not_found:
                raise Refused(f"404 Not Found: no namespace for key {key!r}", 404)
            name = found or key
        else:
            assert name is not None
            with progress.showing(f"deleting {name}"):
                marked = client.delete(name)
        if not marked and not ignore_not_found:
            raise Refused(f"404 Not Found: namespace {name!r} not found", 404)
        state = "MARKED_FOR_DELETION" if marked else "NOT_FOUND"
        if wait and marked:
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
@_WAIT_FOR_SLOT
@_WAIT_TIMEOUT
@click.option(
    "--diagnostics", type=click.Choice(["on-failure", "always", "never"]), default="never",
    show_default=True,
    help="before deleting, print the namespace's events, pods and logs (a collapsed group on "
    "GitHub) and write them to nsprov-diagnostics/NAMESPACE.txt",
)  # fmt: skip
@click.option(
    "--keep-on-failure", metavar="DURATION",
    help="when CMD fails, extend the namespace by this (e.g. 2h) instead of deleting it",
)  # fmt: skip
@click.argument(
    "command", nargs=-1, required=True, type=click.UNPROCESSED, metavar="[--] CMD [ARGS]..."
)
def run(
    ttl: str | None,
    server: str | None,
    keep: bool,
    wait: bool,
    wait_timeout: str,
    diagnostics: str,
    keep_on_failure: str | None,
    command: tuple[str, ...],
) -> int:
    """Provision a namespace, run CMD with KUBECONFIG and NSPROV_NAMESPACE set, delete it.

    Exits with CMD's exit code. SIGINT and SIGTERM are passed on to CMD;
    the namespace and the kubeconfig file go however CMD ends.
    """
    from nsprov.client.run import Interrupted, SignalRouter, run_in_namespace

    check_ttl(ttl)
    if keep_on_failure is not None:
        positive_duration("--keep-on-failure", keep_on_failure)
    wait_for_slot = _slot_wait(wait, wait_timeout)
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
                wait_for_slot=wait_for_slot,
                diagnostics=diagnostics,
                keep_on_failure=keep_on_failure,
            )
        except Interrupted as exc:  # a second signal in the instant between two phases
            progress.say(f"interrupted ({exc}); the namespace's TTL deletes what is left")
            return 128 + exc.signum


@click.command(short_help="print a shell completion script")
@click.argument("shell", type=click.Choice(["bash", "zsh", "fish"]))
def completion(shell: str) -> int:
    """Print the completion script for SHELL: commands, flags and your namespaces' names.

    bash: eval "$(nsprov completion bash)" in ~/.bashrc; zsh: the same in ~/.zshrc;
    fish: nsprov completion fish > ~/.config/fish/completions/nsprov.fish. Names are
    listed from the service (NSPROV_URL and the token from the environment) and give
    up after two seconds.
    """
    from click.shell_completion import get_completion_class

    root = click.get_current_context().find_root()
    prog = root.info_name or "nsprov"
    shell_class = get_completion_class(shell)
    assert shell_class is not None  # click.Choice admitted only the shells click knows
    complete_var = f"_{prog}_COMPLETE".replace("-", "_").upper()
    click.echo(shell_class(root.command, {}, prog, complete_var).source())
    return 0


COMMANDS = [create, list_, get, extend, delete, run, completion]


def click_error_line(exc: click.ClickException) -> str:
    """A click error as ``--flag: reason`` (no usage block): one line for logs and CI."""
    missing = isinstance(exc, click.MissingParameter)
    if isinstance(exc, click.BadParameter) and exc.param is not None and not missing:
        names = [o for o in getattr(exc.param, "opts", []) if o.startswith("--")]
        name = names[0] if names else exc.param.name
        # "--ttl must be positive", but "--ttl: missing unit in duration '5'"
        return (
            f"{name} {exc.message}" if exc.message.startswith("must") else f"{name}: {exc.message}"
        )
    return " ".join(exc.format_message().split())


COMMAND_NAMES = frozenset(command.name for command in COMMANDS if command.name)


def main(args: Sequence[str]) -> int:
    """Run one client command without ``cli`` (see ``nsprov.launcher``): the same commands,
    the same one-line errors and exit codes as through the ``nsprov`` group."""
    group = click.Group(
        name="nsprov", commands=COMMANDS, context_settings={"help_option_names": ["-h", "--help"]}
    )
    return run_group(group, list(args))


def run_group(group: click.Group, args: list[str] | None) -> int:
    """Run ``group`` as ``nsprov``: every failure one line on stderr and its exit code (the
    client's and the full CLI's ``main`` both end here; other exceptions propagate)."""
    try:
        result = group.main(args=args, prog_name="nsprov", standalone_mode=False)
    except Failure as exc:
        click.echo(f"nsprov: {exc}", err=True)
        return exc.exit_code
    except click.ClickException as exc:
        click.echo(f"nsprov: {click_error_line(exc)}", err=True)
        return exc.exit_code
    except click.exceptions.Abort:
        return 130
    return result if isinstance(result, int) else 0
