"""``nsprov serve``: flags (with NSPROV_* env fallbacks) -> Settings -> two uvicorn servers.

Flag names follow the original Go provisioner so an existing deployment can
switch by changing the image. Every flag ``--some-flag`` can also be given as
``NSPROV_SOME_FLAG``; a flag on the command line wins over the environment.
A token belongs in the environment or in a file, not on the command line,
where any local user can read it from the process list.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import uvicorn
from kubernetes.config.config_exception import ConfigException

from nsprov import __version__, bundle
from nsprov.app import UnsafeGrant, check_grant, create_service, internal_app, public_app
from nsprov.auth import TokenFileError
from nsprov.errors import BadRequest
from nsprov.requestid import RequestIdFilter
from nsprov.settings import Settings
from nsprov.ttl import parse_duration

log = logging.getLogger("nsprov")

IN_CLUSTER_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


class ConfigError(ValueError):
    """The configuration cannot work; the message is the one-line reason."""


def _env(flag: str) -> str | None:
    return os.environ.get("NSPROV_" + flag.upper().replace("-", "_"))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nsprov", description="Short-lived Kubernetes namespaces."
    )
    parser.add_argument("--version", action="version", version=f"nsprov {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the API and the controller")
    defaults = Settings()

    def flag(name: str, help_: str, default: object = None) -> None:
        env = _env(name)
        serve.add_argument(
            f"--{name}",
            default=env if env is not None else default,
            help=f"{help_} [env NSPROV_{name.upper().replace('-', '_')}]",
        )

    flag("kubeconfig", "kubeconfig path (default: in-cluster, then the usual lookup)")
    flag("listen", "public API address host:port", defaults.listen)
    flag("listen-internal", "healthz/readyz/metrics address host:port", defaults.listen_internal)
    flag("server", "Kubernetes API URL written into kubeconfigs (default: the one nsprov uses)")
    flag("cluster-role", "ClusterRole granted in each namespace", defaults.cluster_role)
    flag("ttl", "default namespace lifetime (Go duration)", "1h")
    flag("max-ttl", "longest lifetime a request may ask for (Go duration)", "24h")
    flag("prefix", "namespace name prefix", defaults.prefix)
    flag("selector", "key=value label on everything nsprov creates", defaults.selector)
    flag("token", "a single bearer token (owner 'default'); prefer --token-file or the env")
    flag("token-file", "file of 'name: token' lines, re-read when it changes")
    flag("ca-file", "CA bundle written into kubeconfigs (default: the CA nsprov trusts)")
    flag("max-namespaces", "cap on live namespaces in total (0 = none)", "0")
    flag("max-namespaces-per-owner", "cap on live namespaces per token owner (0 = none)", "0")
    flag("pod-security", "Pod Security level enforced in each namespace ('' = none)", "baseline")
    flag("request-timeout", "timeout of each Kubernetes call (Go duration)", "30s")
    flag("concurrency", "worker threads and Kubernetes connections", str(defaults.concurrency))
    flag(
        "allow-unsafe-grant", "start even if the grant lets tenants escalate (true/false)", "false"
    )
    flag("controller", "run the expiry/repair controller (true/false)", "true")
    flag("leader-elect", "take a Lease before the controller acts (true/false)", "true")
    flag("leader-elect-namespace", "namespace of the Lease (default: the pod's, else default)")
    flag("leader-elect-lease-name", "name of the Lease", defaults.leader_elect_lease_name)
    flag("leader-elect-lease-duration", "lease duration (Go duration)", "15s")
    flag("resync-period", "full pass over every namespace this often (Go duration)", "5m")
    flag("log-level", "debug, info, warning or error", "info")
    return parser


def _duration(name: str, value: str) -> float:
    try:
        seconds = parse_duration(value)
    except BadRequest as exc:
        raise ConfigError(f"--{name}: {exc.detail}") from None
    if seconds <= 0:
        raise ConfigError(f"--{name} must be positive")
    return seconds


def _count(name: str, value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise ConfigError(f"--{name} must be a whole number, not {value!r}") from None
    if number < 0:
        raise ConfigError(f"--{name} must not be negative")
    return number


def _bool(name: str, value: str) -> bool:
    lowered = str(value).strip().lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no"):
        return False
    raise ConfigError(f"--{name} must be true or false, not {value!r}")


def _own_namespace() -> str:
    try:
        return IN_CLUSTER_NAMESPACE.read_text().strip() or "default"
    except OSError:
        return "default"


def settings_from_args(args: argparse.Namespace) -> Settings:
    """Validate parsed flags into Settings; raise ConfigError naming the bad flag."""
    ttl, max_ttl = _duration("ttl", args.ttl), _duration("max-ttl", args.max_ttl)
    if ttl > max_ttl:
        raise ConfigError("--ttl must not exceed --max-ttl")
    try:
        bundle.validate_prefix(args.prefix)
        bundle.Selector.parse(args.selector)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if args.pod_security not in ("", "privileged", "baseline", "restricted"):
        raise ConfigError("--pod-security must be privileged, baseline, restricted or ''")
    tokens = {"default": args.token} if args.token else {}
    token_file = Path(args.token_file) if args.token_file else None
    if not tokens and token_file is None:
        raise ConfigError("no token configured: set NSPROV_TOKEN_FILE or NSPROV_TOKEN")
    return Settings(
        kubeconfig=args.kubeconfig or None,
        listen=args.listen,
        listen_internal=args.listen_internal,
        server=args.server or None,
        cluster_role=args.cluster_role,
        ttl=ttl,
        max_ttl=max_ttl,
        prefix=args.prefix,
        selector=args.selector,
        tokens=tokens,
        token_file=token_file,
        ca_file=Path(args.ca_file) if args.ca_file else None,
        max_namespaces=_count("max-namespaces", args.max_namespaces),
        max_namespaces_per_owner=_count("max-namespaces-per-owner", args.max_namespaces_per_owner),
        pod_security=args.pod_security,
        request_timeout=_duration("request-timeout", args.request_timeout),
        concurrency=max(1, _count("concurrency", args.concurrency)),
        allow_unsafe_grant=_bool("allow-unsafe-grant", args.allow_unsafe_grant),
        controller=_bool("controller", args.controller),
        leader_elect=_bool("leader-elect", args.leader_elect),
        leader_elect_namespace=args.leader_elect_namespace or _own_namespace(),
        leader_elect_lease_name=args.leader_elect_lease_name,
        leader_elect_lease_duration=_lease_duration(args.leader_elect_lease_duration),
        resync_period=_duration("resync-period", args.resync_period),
    )


def _lease_duration(value: str) -> float:
    seconds = _duration("leader-elect-lease-duration", value)
    if seconds < 3:
        raise ConfigError("--leader-elect-lease-duration must be at least 3s")
    return seconds


def split_address(address: str) -> tuple[str, int]:
    """``:8080`` -> ("0.0.0.0", 8080); ``127.0.0.1:80``; ``[::1]:80``."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise ConfigError(f"address {address!r} must be host:port")
    host = host.strip("[]") or "0.0.0.0"  # noqa: S104 - ':port' means every interface, as in Go
    return host, int(port)


async def _serve(settings: Settings, log_level: str) -> None:
    service = create_service(settings)
    try:
        check_grant(service)
    except UnsafeGrant as exc:
        service.close()
        raise ConfigError(str(exc)) from None
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
            log_level=log_level,
            lifespan="on" if address == settings.listen else "off",
            server_header=False,
            log_config=None,
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


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    level = str(args.log_level).lower()
    handler = logging.StreamHandler()
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s")
    )
    logging.basicConfig(level=level.upper(), handlers=[handler])
    try:
        settings = settings_from_args(args)
        split_address(settings.listen)
        split_address(settings.listen_internal)
        asyncio.run(_serve(settings, level))
    except (ConfigError, TokenFileError, ConfigException) as exc:
        print(f"nsprov: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
