"""The ``nsprov`` command: one click group for the server (``serve``) and the client.

``serve``'s flags are generated from the Settings fields (settings.py declares
each flag's default, kind and help once). Flag names follow the original Go
provisioner so an existing deployment can switch by changing the image: every
flag ``--some-flag`` can also be given as ``NSPROV_SOME_FLAG`` (the command line
wins), and a boolean flag takes Go's forms ``--flag``, ``--flag=true`` and
``--flag=false``. A token belongs in the environment or in a file, not on the
command line, where any local user can read it from the process list.

The server's libraries (starlette, uvicorn, kubernetes) are optional
(``nsprov[server]``): nothing here imports them (nor asyncio) until ``serve``
runs, so the client commands work with ``pip install nsprov`` alone and start
quickly.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from nsprov import __version__
from nsprov.client import cli as client_cli
from nsprov.core.errors import BadRequest
from nsprov.core.settings import FlagSpec, Settings, flag_specs
from nsprov.core.ttl import parse_duration
from nsprov.provision import bundle

if TYPE_CHECKING:
    from nsprov.app import Service

    # click >= 8.3 makes ParamType generic; older releases (which nsprov also runs on) do not.
    _ParamType = click.ParamType[Any, Any]
else:
    _ParamType = click.ParamType

log = logging.getLogger("nsprov")

# Below this, ordinary requests (a 2 KiB ID token, a few headers) would get 431.
_LEAST_REQUEST_HEAD_BYTES = 4096

IN_CLUSTER_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
SERVER_MODULES = ("starlette", "uvicorn", "kubernetes", "prometheus_client", "pythonjsonlogger")
INSTALL_SERVER = "pip install 'nsprov[server]'"
USAGE_EXIT = 2


class ConfigError(ValueError):
    """The configuration cannot work; the message is the one-line reason."""


# ---- flag types ---------------------------------------------------------------------------


class Duration(_ParamType):
    """A positive Go duration (``30s``, ``1h30m``) -> seconds."""

    name = "duration"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, float):
            return value
        try:
            seconds = parse_duration(str(value))
        except BadRequest as exc:
            self.fail(exc.detail, param, ctx)
        if seconds <= 0:
            self.fail("must be positive", param, ctx)
        return seconds


class Count(_ParamType):
    """A whole number >= 0."""

    name = "count"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, int):
            return value
        try:
            number = int(str(value))
        except ValueError:
            self.fail(f"must be a whole number, not {value!r}", param, ctx)
        if number < 0:
            self.fail("must not be negative", param, ctx)
        return number


class GoBool(_ParamType):
    """``true``/``false`` (also 1/0, yes/no), as Go's flag package reads a boolean."""

    name = "bool"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, bool):
            return value
        lowered = str(value).strip().lower()
        if lowered in ("true", "1", "yes"):
            return True
        if lowered in ("false", "0", "no"):
            return False
        self.fail(f"must be true or false, not {value!r}", param, ctx)


class OptionalPath(_ParamType):
    """A file path; '' (``--ca-file=``) means none, as it did for the Go flags."""

    name = "file"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if value is None or isinstance(value, Path):
            return value
        return Path(value) if str(value) else None


_TYPES: dict[str, _ParamType] = {
    "duration": Duration(),
    "count": Count(),
    "bool": GoBool(),
    "path": OptionalPath(),
    "text": click.STRING,
    "token": click.STRING,
}


class _SettingOption(click.Option):
    """An option whose environment variable counts when set, even to '' (``--pod-security=``)."""

    def resolve_envvar_value(self, ctx: click.Context) -> str | None:
        if isinstance(self.envvar, str) and self.envvar in os.environ:
            return os.environ[self.envvar]
        return super().resolve_envvar_value(ctx)


def go_duration(seconds: float) -> str:
    """Seconds as the shortest Go duration: 3600 -> ``1h``, 5400 -> ``1h30m``, 30 -> ``30s``."""
    hours, rest = divmod(round(seconds), 3600)
    minutes, secs = divmod(rest, 60)
    text = (f"{hours}h" if hours else "") + (f"{minutes}m" if minutes else "")
    return text + (f"{secs}s" if secs or not text else "")


def flag_default(spec: FlagSpec) -> str | None:
    """The Settings default as the text a user would type (None: nsprov works it out)."""
    if spec.shown is not None or spec.kind == "token" or spec.default is None:
        return None
    if spec.kind == "duration":
        return go_duration(spec.default)
    if spec.kind == "bool":
        return "true" if spec.default else "false"
    return str(spec.default)


def _option(spec: FlagSpec) -> click.Option:
    """The click option for one Settings field: its default, type and env var, from the field.

    The default is the field's, rendered as flag text ("1h", "true") and converted
    back by the option's type like any value a user gives, so help shows it as typed.
    """
    kind_type = (
        click.Choice(spec.choices, case_sensitive=False)
        if spec.kind == "choice"
        else _TYPES[spec.kind]
    )
    default = flag_default(spec)
    shown: bool | str = default is not None and default != ""
    if spec.shown is not None:
        shown = spec.shown
    elif default == "":
        shown = "''"
    extra: dict[str, Any] = {}
    if spec.kind == "bool":
        # ``--flag`` alone means true; ``--flag=false`` still parses, as with Go's flags.
        extra = {"is_flag": False, "flag_value": "true"}
    return _SettingOption(
        [f"--{spec.name}", spec.field],
        type=kind_type,
        default=default,
        envvar=spec.env,
        show_envvar=True,
        show_default=shown,
        help=spec.help,
        **extra,
    )


# ---- options -> Settings ------------------------------------------------------------------


def _own_namespace() -> str:
    try:
        return IN_CLUSTER_NAMESPACE.read_text().strip() or "default"
    except OSError:
        return "default"


def settings_from_options(values: dict[str, Any], *, serving: bool = True) -> Settings:
    """Settings from ``serve``'s converted options; ConfigError names what cannot work.

    ``serving=False`` (``rollout``): what only a server needs (a token, its addresses,
    the CA for kubeconfigs) is not checked.
    """
    given: dict[str, Any] = {}
    for spec in flag_specs():
        value = values.get(spec.field)
        if spec.kind == "token":
            value = {"default": value} if value else {}
        elif value in (None, "") and spec.kind in ("text", "path") and spec.default is None:
            value = None
        if value is None and spec.field == "leader_elect_namespace":
            value = _own_namespace()
        if value is None and spec.default is not None:
            value = spec.default
        if isinstance(value, Path) and _field_type(spec.field).startswith("str"):
            value = str(value)
        given[spec.field] = value
    given["log_level"] = str(given["log_level"]).lower()
    given["log_format"] = str(given["log_format"]).lower()
    given["concurrency"] = max(1, given["concurrency"])
    settings = Settings(**given)
    _check(settings, serving=serving)
    return settings


def _field_type(name: str) -> str:
    return next(str(f.type) for f in fields(Settings) if f.name == name)


def _check(settings: Settings, *, serving: bool = True) -> None:
    """What no single flag's type can say: relations between flags and shapes of values."""
    if settings.ttl > settings.max_ttl:
        raise ConfigError("--ttl must not exceed --max-ttl")
    # A default ttl below --min-ttl would make every request without a ttl fail.
    if settings.min_ttl > settings.ttl:
        raise ConfigError("--min-ttl must not exceed --ttl")
    # Below --max-ttl, a POST the ttl rules allow would be refused anyway.
    if settings.max_ttl > settings.max_lifetime:
        raise ConfigError("--max-ttl must not exceed --max-lifetime")
    if settings.leader_elect_lease_duration < 3:
        raise ConfigError("--leader-elect-lease-duration must be at least 3s")
    if settings.max_request_head < _LEAST_REQUEST_HEAD_BYTES:
        raise ConfigError(f"--max-request-head must be at least {_LEAST_REQUEST_HEAD_BYTES}")
    for name, value in (
        ("max-connections", settings.max_connections),
        ("max-requests-in-flight", settings.max_requests_in_flight),
    ):
        if value < 1:
            raise ConfigError(f"--{name} must be at least 1")
    try:
        bundle.validate_prefix(settings.prefix)
        bundle.Selector.parse(settings.selector)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if not serving:
        return
    if not settings.tokens and settings.token_file is None and settings.policy_file is None:
        raise ConfigError(
            "no token configured: set NSPROV_TOKEN_FILE, NSPROV_TOKEN or NSPROV_POLICY_FILE"
        )
    if settings.ca_file is not None:
        _check_ca_file(settings.ca_file)
    _check_listeners(split_address(settings.listen), split_address(settings.listen_internal))


_EVERY_INTERFACE = ("0.0.0.0", "::")  # noqa: S104 - names, compared against; nothing binds here


def _check_listeners(public: tuple[str, int], internal: tuple[str, int]) -> None:
    """The two listeners need ports of their own: on one, whichever binds first takes it,
    and the other exits only after the probes may have passed (and POSTs met the probes'
    app: 404)."""
    (host, port), (other_host, other_port) = public, internal
    overlap = host == other_host or host in _EVERY_INTERFACE or other_host in _EVERY_INTERFACE
    if port == other_port and port != 0 and overlap:
        raise ConfigError(
            f"--listen-internal must not be --listen's port ({port}) on the same interface: "
            "the probes and metrics need a listener of their own"
        )


def _check_ca_file(path: Path) -> None:
    """--ca-file must be a readable PEM file now, not a traceback at the first kubeconfig."""
    try:
        text = path.read_text(encoding="ascii", errors="replace")
    except OSError as exc:
        raise ConfigError(f"--ca-file {path}: {exc.strerror or exc}") from None
    if "-----BEGIN CERTIFICATE-----" not in text:
        raise ConfigError(f"--ca-file {path}: no PEM certificate in it")


one_line = client_cli.click_error_line
"""A click error as ``--flag: reason`` (no usage block): one line for logs and CI."""


def settings_from_argv(argv: Sequence[str]) -> Settings:
    """``serve``'s arguments (and the environment) -> Settings, or ConfigError."""
    try:
        with serve.make_context("serve", list(argv)) as ctx:
            return settings_from_options(ctx.params)
    except click.ClickException as exc:
        raise ConfigError(one_line(exc)) from None


def split_address(address: str) -> tuple[str, int]:
    """``:8080`` -> ("0.0.0.0", 8080); ``127.0.0.1:80``; ``[::1]:80``."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise ConfigError(f"address {address!r} must be host:port")
    host = host.strip("[]") or "0.0.0.0"  # noqa: S104 - ':port' means every interface, as in Go
    return host, int(port)


# ---- serve --------------------------------------------------------------------------------


def missing_server_modules() -> list[str]:
    return [name for name in SERVER_MODULES if importlib.util.find_spec(name) is None]


# The original Go tool's names (go-kit's all/debug/info/warn/error/none) and Python's.
# There is nothing below debug to show for "all"; "none" is above every level we log at.
_LOG_LEVELS = {
    "all": logging.DEBUG,
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warn": logging.WARNING,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "none": logging.CRITICAL + 10,
}


def log_level(value: str) -> int:
    """--log-level as a logging level; ConfigError for a name we do not know."""
    level = _LOG_LEVELS.get(str(value).strip().lower())
    if level is None:
        raise ConfigError(f"--log-level must be one of {', '.join(_LOG_LEVELS)}, not {value!r}")
    return level


TEXT_LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"


def log_formatter(log_format: str) -> logging.Formatter:
    """The formatter of ``--log-format``: text lines, or one JSON object per line.

    JSON has ``time`` (RFC 3339, UTC), ``level``, ``logger``, ``message`` (as the text
    line has it) and ``request_id``, then every field a line was given with ``extra=``
    (the access log's method, route, status, duration_ms, owner, tenant; a namespace's
    provisioned, extended and deleted events), and ``exc_info`` with the traceback
    when there is one. python-json-logger rather than a formatter of our own: a
    maintained, widely used library that already knows which record attributes are
    logging's own and which are a line's fields, and how to serialise the rest.
    """
    if log_format == "text":
        return logging.Formatter(TEXT_LOG_FORMAT)
    from pythonjsonlogger.json import JsonFormatter

    return JsonFormatter(
        "{levelname}{name}{message}{request_id}",
        style="{",
        rename_fields={"levelname": "level", "name": "logger"},
        timestamp="time",
    )


def _configure_logging(level: str, log_format: str) -> None:
    from nsprov.core.requestid import RequestIdFilter

    handler = logging.StreamHandler()
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(log_formatter(log_format))
    logging.basicConfig(level=log_level(level), handlers=[handler])


def _serve_command(**values: Any) -> int:
    missing = missing_server_modules()
    if missing:
        raise ConfigError(
            f"serve needs the server's libraries ({', '.join(missing)} missing): {INSTALL_SERVER}"
        )
    import asyncio

    from kubernetes.config.config_exception import ConfigException

    from nsprov.identity.auth import TokenFileError
    from nsprov.policy.file import PolicyError

    settings = settings_from_options(values)
    _configure_logging(settings.log_level, settings.log_format)
    try:
        asyncio.run(_serve(settings))
    except (TokenFileError, PolicyError, ConfigException) as exc:
        raise ConfigError(str(exc)) from None
    except KeyboardInterrupt:
        return 0
    return 0


serve = click.Command(
    "serve",
    callback=_serve_command,
    params=[_option(spec) for spec in flag_specs()],
    help="Run the API and the controller (needs nsprov[server]).",
    short_help="run the API and the controller",
)


async def _serve(settings: Settings) -> None:
    import asyncio

    import uvicorn

    from nsprov.api.httplimits import HttpLimits, protocol_for
    from nsprov.app import UnsafeGrant, check_grant, create_service, internal_app, public_app
    from nsprov.provision.admissioncheck import SelectorUnprotected, check_admission_policies

    service: Service = create_service(settings)
    try:
        check_grant(service)
        check_admission_policies(service.kube, service.provisioner.selector, time.time())
    except (UnsafeGrant, SelectorUnprotected) as exc:
        service.close()
        raise ConfigError(str(exc)) from None
    limits = HttpLimits(
        max_head_bytes=settings.max_request_head,
        max_body_bytes=settings.max_request_body,
        read_timeout=settings.request_read_timeout,
        max_connections=settings.max_connections,
    )
    protocol = protocol_for(limits, service.metrics.connections_cut)
    servers = []
    for app, address in (
        (public_app(service), settings.listen),
        (internal_app(service), settings.listen_internal),
    ):
        host, port = split_address(address)
        config = uvicorn.Config(
            app,
            host=host,
            port=port,
            log_level=log_level(settings.log_level),
            lifespan="on" if address == settings.listen else "off",
            # uvicorn's access log writes raw paths and queries; nsprov writes its own
            # (api.RequestContext), with route templates. False also keeps uvicorn from
            # writing one through the root logger's handler.
            access_log=False,
            server_header=False,
            log_config=None,
            # The h11 protocol with nsprov's limits, even where httptools is installed.
            http=protocol,
            h11_max_incomplete_event_size=limits.max_head_bytes,
        )
        servers.append(uvicorn.Server(config))
    log.info(
        "nsprov %s serving on %s (internal %s), cluster %s",
        __version__,
        settings.listen,
        settings.listen_internal,
        service.kube.host,
    )
    public, internal = servers
    # The internal listener runs on a thread with an event loop of its own: a probe or a
    # scrape must not wait behind the request handling of a saturated API on this loop.
    tasks = [
        asyncio.create_task(public.serve()),
        asyncio.create_task(asyncio.to_thread(internal.run)),
    ]
    # When one server stops (signal or failure), stop the other too.
    await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    for server in servers:
        server.should_exit = True
    await asyncio.gather(*tasks)


# ---- rollout ------------------------------------------------------------------------------

# The flags the roll-out reads (shown in its help). It accepts every flag of serve, so
# the same arguments and NSPROV_* environment work for both, and ignores the rest.
_ROLLOUT_FLAGS = {
    "kubeconfig", "policy_file", "selector", "cluster_role", "pod_security", "min_ttl",
    "allow_unsafe_grant", "request_timeout", "log_level",
}  # fmt: skip


def _rollout_option(spec: FlagSpec) -> click.Option:
    option = _option(spec)
    option.hidden = spec.field not in _ROLLOUT_FLAGS
    return option


def _rollout_command(
    tenant: tuple[str, ...], all_: bool, dry_run: bool, wait: bool, timeout: float, **values: Any
) -> int:
    if bool(tenant) == all_:
        raise ConfigError("rollout needs either --tenant NAME (repeatable) or --all")
    missing = missing_server_modules()
    if missing:
        raise ConfigError(
            f"rollout needs the server's libraries ({', '.join(missing)} missing): {INSTALL_SERVER}"
        )
    from kubernetes.config.config_exception import ConfigException

    from nsprov import rollout
    from nsprov.policy.file import PolicyError

    settings = settings_from_options(values, serving=False)
    logging.basicConfig(level=log_level(settings.log_level), format="%(levelname)s %(message)s")
    try:
        return rollout.command(
            settings,
            tenants=list(dict.fromkeys(tenant)) if tenant else None,
            dry_run=dry_run,
            wait=wait,
            timeout=timeout,
            echo=click.echo,
        )
    except (rollout.UnknownTenant, PolicyError, ConfigException) as exc:
        raise ConfigError(str(exc)) from None


rollout_command = click.Command(
    "rollout",
    callback=_rollout_command,
    params=[
        click.Option(
            ["--tenant"],
            multiple=True,
            metavar="NAME",
            help="re-apply this tenant's current template (repeatable)",
        ),
        click.Option(
            ["--all", "all_"],
            is_flag=True,
            help="every managed namespace (without a policy file: the flags' template; "
            "namespaces of tenants are skipped)",
        ),
        click.Option(["--dry-run"], is_flag=True, help="print what would change; change nothing"),
        click.Option(
            ["--wait"], is_flag=True, help="wait until the controller has brought them in line"
        ),
        click.Option(
            ["--timeout"],
            type=Duration(),
            default="1m",
            show_default=True,
            help="how long --wait waits",
        ),
        *(_rollout_option(spec) for spec in flag_specs()),
    ],
    help="Re-apply the policy's current template to live namespaces (run where nsprov runs: "
    "kubectl -n nsprov exec deploy/nsprov -- nsprov rollout --tenant NAME). Changes each "
    "namespace's recorded template, Pod Security level and extra labels; the controller then "
    "updates its RoleBindings, quota, limits and network policy. Expiry is unchanged. "
    "Exit 0 done, 1 a namespace failed, 2 usage.",
    short_help="re-apply the current template to live namespaces",
)


# ---- policy -------------------------------------------------------------------------------

# The flags a policy's checks read (a tenant resolves over them), shown in validate's help.
_POLICY_FLAGS = {
    "cluster_role", "pod_security", "ttl", "max_ttl", "max_lifetime", "min_ttl",
    "max_namespaces_per_owner", "pool_size", "pool_max_age",
}  # fmt: skip
OFFLINE_NOTE = (
    "not checked offline: whether each ClusterRole exists and is safe to bind, and (without "
    "--ca-files) whether each caFile is readable where nsprov runs"
)


def _policy_option(spec: FlagSpec) -> click.Option:
    option = _option(spec)
    option.hidden = spec.field not in _POLICY_FLAGS
    return option


def _validate_command(files: tuple[str, ...], ca_files: bool, **values: Any) -> int:
    """Each file as a reload loads it: one line each, exit 2 if any is refused."""
    missing = missing_server_modules()
    if missing:
        # Quantities are parsed by the Kubernetes client's parse_quantity (bundle.quantity).
        raise ConfigError(
            f"policy validate needs the server's libraries ({', '.join(missing)} missing): "
            f"{INSTALL_SERVER}"
        )
    from nsprov.policy.file import PolicyError, check_policy, parse_policy, read_policy
    from nsprov.policy.model import flags_profile

    settings = settings_from_options(values, serving=False)
    base = flags_profile(settings)
    refused = 0
    for name in files:
        shown = "<stdin>" if name == "-" else name
        try:
            if name == "-":
                text, folder = read_policy(sys.stdin.buffer), Path.cwd()
            else:
                with Path(name).open("rb") as source:
                    text, folder = read_policy(source), Path(name).parent
            policy = parse_policy(text, folder, check_files=ca_files)
            check_policy(policy, base, settings.min_ttl, grants=None)
        except (OSError, PolicyError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            click.echo(f"nsprov: policy file {shown}: {reason}", err=True)
            refused += 1
            continue
        click.echo(
            f"policy file {shown}: valid ({len(policy.issuers)} issuer(s), "
            f"{len(policy.tenants)} tenant(s))"
        )
    click.echo(OFFLINE_NOTE, err=True)
    return USAGE_EXIT if refused else 0


validate_command = click.Command(
    "validate",
    callback=_validate_command,
    params=[
        click.Argument(["files"], nargs=-1, required=True, metavar="FILE..."),
        click.Option(
            ["--ca-files"],
            is_flag=True,
            help="also check that each issuer's caFile is readable (run where nsprov runs)",
        ),
        *(_policy_option(spec) for spec in flag_specs()),
    ],
    help="Check policy files offline (no cluster, no kubeconfig) with the checks and messages "
    "of a reload; '-' reads standard input. A tenant resolves over the flags (and NSPROV_* "
    "environment) as in serve, so give the deployment's. Exit 0 all valid, 2 a file refused "
    "(as serve and rollout exit for a bad policy file). Needs nsprov[server]; no cluster.",
    short_help="check policy files offline, as a reload would",
)


def _schema_command() -> int:
    from nsprov.policy.schema import shipped

    click.echo(shipped(), nl=False)
    return 0


schema_command = click.Command(
    "schema",
    callback=_schema_command,
    help="Print the policy file's JSON Schema (draft 2020-12), for editors.",
    short_help="print the policy file's JSON Schema",
)
policy_group = click.Group(
    "policy",
    commands=[validate_command, schema_command],
    help="The policy file (--policy-file): validate it offline, or print its JSON Schema.",
    short_help="validate a policy file offline, print its JSON Schema",
)


# ---- the group ----------------------------------------------------------------------------


@click.group(
    name="nsprov",
    help="Short-lived Kubernetes namespaces. The client commands read NSPROV_URL and one of "
    "NSPROV_TOKEN, NSPROV_TOKEN_FILE or NSPROV_ID_TOKEN from the environment.",
    context_settings={"help_option_names": ["-h", "--help"]},
    epilog="Exit codes: 0 done, 1 other, 2 usage, 3 auth, 4 refused, 5 unavailable; "
    "`nsprov run` exits with CMD's code once CMD has started.",
)
@click.version_option(__version__, prog_name="nsprov", message="%(prog)s %(version)s")
def group() -> None:
    pass


group.add_command(serve)
group.add_command(rollout_command)
group.add_command(policy_group)
for _command in client_cli.COMMANDS:
    group.add_command(_command)


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``nsprov``; every failure is one line on stderr and an exit code (see client_cli)."""
    try:
        return client_cli.run_group(group, list(argv) if argv is not None else None)
    except ConfigError as exc:
        click.echo(f"nsprov: {exc}", err=True)
        return USAGE_EXIT


if __name__ == "__main__":
    sys.exit(main())
