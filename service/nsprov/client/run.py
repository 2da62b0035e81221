"""``nsprov run``: a namespace for exactly as long as one command runs.

The contract: CMD runs with ``KUBECONFIG`` (a private file) and
``NSPROV_NAMESPACE`` set, and without nsprov's credential; when it ends,
however it ends, the file is removed and the namespace deleted, and nsprov
exits with CMD's code. A failed delete is only a warning: the namespace's TTL
reclaims it anyway.

Two things can come between CMD's end and the delete, for a CI author whose job
failed: a diagnostics report (``client.diagnostics``: events, pods, logs), read
while there is still something to read; and, with ``keep_on_failure``, an
extension instead of the delete, so a person can look (the kubeconfig file then
stays too, with the extension's fresh credentials).

Signals are where the care goes. Handlers never interrupt an HTTP exchange on
the first signal, because an interrupted POST may have made a namespace we
would then not know about:

- while provisioning, the first SIGINT/SIGTERM stops further retries and lets the
  request in flight finish, so what it made is deleted; a second one gives up at
  once (the TTL is the backstop);
- while CMD runs, SIGTERM is passed on to it, and so is SIGINT unless it came
  from the terminal: Ctrl-C reaches every process of the terminal's foreground
  group, CMD included, and a second copy would turn a program's graceful first
  interrupt into its forced second one. nsprov waits for CMD, whatever CMD
  decides to do with the signal;
- while cleaning up, a new signal abandons the delete, with a warning.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, Literal

from nsprov.client.calls import (
    CLEANUP_TIMING,
    TOKEN_VARIABLES,
    Failure,
    Kubeconfig,
    NsprovClient,
    new_idempotency_key,
)

FORWARDED = (signal.SIGINT, signal.SIGTERM)
EXIT_CANNOT_EXECUTE = 126
EXIT_NOT_FOUND = 127

Phase = Literal["provisioning", "child", "quiet", "cleanup"]
Warn = Callable[[str], None]


class Interrupted(BaseException):
    """A signal that ends what nsprov is doing now (a BaseException, like KeyboardInterrupt)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _terminal_signals_our_group() -> bool:
    """Whether our process group is the foreground group of a controlling terminal.

    If it is, a SIGINT most likely came from Ctrl-C, which the terminal sent to
    CMD as well (CMD is in our group).
    """
    if not hasattr(os, "tcgetpgrp"):
        return False
    try:
        fd = os.open("/dev/tty", os.O_RDONLY)
    except OSError:
        return False
    try:
        return os.tcgetpgrp(fd) == os.getpgrp()
    except OSError:
        return False
    finally:
        os.close(fd)


@dataclass
class SignalRouter:
    """SIGINT and SIGTERM handling for the phases of ``nsprov run`` (see the module doc)."""

    phase: Phase = "provisioning"
    received: list[int] = field(default_factory=list)
    child: subprocess.Popen[bytes] | None = None
    terminal_has_cmd: bool = False
    in_phase: int = 0
    """Signals received since the current phase began."""
    _previous: dict[int, Any] = field(default_factory=dict)

    @contextlib.contextmanager
    def installed(self) -> Iterator[SignalRouter]:
        for signum in FORWARDED:
            self._previous[signum] = signal.signal(signum, self._handle)
        try:
            yield self
        finally:
            for number, handler in self._previous.items():
                signal.signal(number, handler)

    def enter(self, phase: Phase) -> None:
        self.phase = phase
        self.in_phase = 0

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.received.append(signum)
        self.in_phase += 1
        if self.phase == "child":
            self.forward(signum)
        elif (self.phase == "provisioning" and self.in_phase > 1) or self.phase == "cleanup":
            raise Interrupted(signum)

    def forward(self, signum: int) -> None:
        if self.child is None or self.child.poll() is not None:
            return
        if signum == signal.SIGINT and self.terminal_has_cmd:
            return
        with contextlib.suppress(ProcessLookupError):
            self.child.send_signal(signum)

    def stop_retrying(self) -> None:
        """Called before each retry while provisioning: a signal means no further attempts."""
        if self.phase == "provisioning" and self.in_phase:
            raise Interrupted(self.received[-1])


def _signal_exit(signum: int) -> int:
    return 128 + signum


def write_private_kubeconfig(text: str) -> Path:
    """The kubeconfig in a new directory only we can enter, in a file only we can read."""
    directory = Path(tempfile.mkdtemp(prefix="nsprov-"))  # mode 0700
    path = directory / "kubeconfig"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    return path


def _remove(path: Path) -> None:
    shutil.rmtree(path.parent, ignore_errors=True)


def _exit_code(returncode: int) -> int:
    """CMD's exit code; a CMD killed by signal N is 128 + N, as a shell reports it."""
    return _signal_exit(-returncode) if returncode < 0 else returncode


def run_in_namespace(
    client: NsprovClient,
    argv: Sequence[str],
    *,
    ttl: str | None,
    server: str | None,
    keep: bool,
    say: Warn,
    router: SignalRouter,
    showing: Callable[[str], contextlib.AbstractContextManager[None]] = (
        lambda _: contextlib.nullcontext()
    ),
    wait_for_slot: float | None = None,
    diagnostics: str = "never",
    keep_on_failure: str | None = None,
    write: Warn = lambda line: print(line, file=sys.stderr, flush=True),
) -> int:
    """Provision, run ``argv`` with the namespace, clean up; CMD's exit code (see module doc).

    ``diagnostics`` (on-failure, always, never) says when to report the namespace before it
    goes, ``write`` prints the report's lines; ``keep_on_failure`` (a duration) extends a
    failed CMD's namespace by that instead of deleting it.
    """
    key = new_idempotency_key()
    router.enter("provisioning")
    try:
        with showing("provisioning a namespace"):
            created = client.create(
                ttl=ttl, server=server, idempotency_key=key, wait_for_slot=wait_for_slot
            )
    except Interrupted as exc:
        say(
            f"interrupted ({exc}) while provisioning; a namespace made by the request in flight "
            "is deleted by its TTL"
        )
        return _signal_exit(exc.signum)
    if router.received:
        # The request in flight finished after the signal: delete what it made, run nothing.
        signum = router.received[0]
        _delete(client, created, say, router)
        return _signal_exit(signum)
    router.enter("quiet")
    path = write_private_kubeconfig(created.kubeconfig)
    say(f"namespace {created.namespace} (expires {created.expires_at})")
    code = _run_child(argv, path, created.namespace, router, say)
    if code is None:  # a signal came before CMD started: run nothing
        code = _signal_exit(router.received[0])
    router.enter("quiet")
    failed = code != 0
    if diagnostics != "never":
        from nsprov.client.diagnostics import wanted

        if wanted(diagnostics, failed):
            _report(created, f"CMD exited {code}", say, write)
    if keep:
        say(f"kept namespace {created.namespace} until {created.expires_at}; kubeconfig: {path}")
        return code
    if failed and keep_on_failure:
        _keep_for_a_look(client, created, path, keep_on_failure, code, say)
        return code
    _remove(path)
    _delete(client, created, say, router)
    return code


def _report(created: Kubeconfig, why: str, say: Warn, write: Warn) -> None:
    """The diagnostics report, in the job log and in nsprov-diagnostics/<namespace>.txt."""
    from nsprov.client.diagnostics import collect, log_lines, write_report

    text = collect(created.kubeconfig, why=why)
    github = os.environ.get("GITHUB_ACTIONS") == "true"
    for line in log_lines(f"nsprov diagnostics: {created.namespace}", text, github=github):
        write(line)
    try:
        say(f"diagnostics written to {write_report(created.namespace, text)}")
    except OSError as exc:
        say(f"warning: the diagnostics could not be written: {exc}")


def _keep_for_a_look(
    client: NsprovClient, created: Kubeconfig, path: Path, ttl: str, code: int, say: Warn
) -> None:
    """Extend a failed CMD's namespace by ``ttl`` instead of deleting it, and say where it is.

    The extension is the service's to bound (the tenant's maximum); if it refuses, the
    namespace is still kept, until its current expiry, which is what the user asked for
    as nearly as the service allows.
    """
    until, note = created.expires_at, ""
    try:
        extended = client.extend(created.namespace, ttl=ttl)
        until = extended.expires_at
        path.write_text(extended.kubeconfig)  # the same 0600 file, fresher credentials
    except Failure as exc:
        note = f" (not extended by {ttl}: {exc})"
    text = (
        f"CMD failed (exit {code}): kept namespace {created.namespace} for a look until "
        f"{until}{note}; kubeconfig: {path}; `nsprov delete {created.namespace}` ends it"
    )
    say(text)
    summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if summary:
        with contextlib.suppress(OSError), open(summary, "a") as out:
            out.write(
                f"### nsprov: namespace `{created.namespace}` kept until {until}\n\n"
                f"The job failed (exit {code}), so `nsprov run --keep-on-failure {ttl}` kept "
                f"its namespace instead of deleting it{note}. Get a kubeconfig for it with "
                f"`nsprov extend {created.namespace} --ttl 1h --kubeconfig-out kubeconfig`; "
                f"`nsprov delete {created.namespace}` ends it.\n"
            )


def command_environment(
    environ: Mapping[str, str], kubeconfig: Path, namespace: str
) -> dict[str, str]:
    """CMD's environment: ours without the nsprov credential, with its namespace's kubeconfig.

    CMD is often the code under test. With the token it could make namespaces,
    PATCH the owner's others for fresh kubeconfigs, or delete them; all it needs
    is its one namespace. NSPROV_URL stays: it is no secret, and a nested
    ``nsprov`` then says "no token" rather than "no URL". This stops inheritance,
    not a hostile CMD: it runs as the same user, and so may read a token file or
    the environment of its parent processes (/proc/PID/environ).
    """
    env = {name: value for name, value in environ.items() if name not in TOKEN_VARIABLES}
    return {**env, "KUBECONFIG": str(kubeconfig), "NSPROV_NAMESPACE": namespace}


def _run_child(
    argv: Sequence[str], kubeconfig: Path, namespace: str, router: SignalRouter, say: Warn
) -> int | None:
    """CMD's exit code; None when a signal arrived before it could start."""
    env = command_environment(os.environ, kubeconfig, namespace)
    router.terminal_has_cmd = _terminal_signals_our_group()
    if router.received:
        return None
    try:
        child = subprocess.Popen(list(argv), env=env)
    except FileNotFoundError:
        say(f"cannot run {argv[0]!r}: command not found")
        return EXIT_NOT_FOUND
    except OSError as exc:
        say(f"cannot run {argv[0]!r}: {exc.strerror}")
        return EXIT_CANNOT_EXECUTE
    router.child = child
    router.enter("child")
    # A signal that arrived while CMD was being started was not passed on: do it now.
    for signum in router.received:
        router.forward(signum)
    return _exit_code(child.wait())


def _delete(client: NsprovClient, created: Kubeconfig, say: Warn, router: SignalRouter) -> None:
    router.enter("cleanup")
    try:
        marked = client.delete(created.namespace, timing=CLEANUP_TIMING)
        # One line, so a CI log shows the namespace's end as it shows its start.
        say(
            f"namespace {created.namespace} is being deleted"
            if marked
            else f"namespace {created.namespace} was already gone"
        )
    except Failure as exc:
        say(
            f"warning: namespace {created.namespace} was not deleted, its TTL deletes it "
            f"at {created.expires_at}: {exc}"
        )
    except Interrupted as exc:
        say(
            f"warning: interrupted ({exc}) while deleting namespace {created.namespace}; "
            f"its TTL deletes it at {created.expires_at}"
        )
    finally:
        router.enter("quiet")


def stderr_say(text: str) -> None:
    print(f"nsprov: {text}", file=sys.stderr, flush=True)
