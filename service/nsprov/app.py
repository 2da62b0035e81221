"""Wires settings, the Kubernetes client, tokens and the provisioner into two ASGI apps.

The public app serves the API; the internal app serves /healthz, /readyz and
/metrics on a separate listener so probes and scrapes need no token and the
API port exposes nothing else. The public app's lifespan sizes the worker
thread pool and, on shutdown, closes the shared Kubernetes client.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio.to_thread
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from nsprov.api import routes as api
from nsprov.api.pooltokens import PoolTokens
from nsprov.api.provisioner import Provisioner
from nsprov.control import watch
from nsprov.control.controller import Controller
from nsprov.control.leader import LeaderElector, identity_for
from nsprov.control.pool import PoolKeeper, profile_hash
from nsprov.control.watch import Informer
from nsprov.core import kube, kubeasync
from nsprov.core.errors import ClusterUnavailable, NsprovError
from nsprov.core.kube import KubeError
from nsprov.core.namespacecache import ReadYourWrites
from nsprov.core.settings import Settings
from nsprov.identity.auth import TokenStore
from nsprov.identity.authenticator import Authenticator
from nsprov.policy.file import PolicyError, PolicyFile, check_policy
from nsprov.policy.model import Policy, Profile, flags_profile
from nsprov.provision import bundle
from nsprov.provision.grant import GrantGuard, describe_unsafe
from nsprov.provision.metrics import Metrics

if TYPE_CHECKING:
    from nsprov.identity.oidc import Verifier

log = logging.getLogger(__name__)

# Threads for /readyz's one API call and /metrics' rendering, apart from the API's.
_PROBE_THREADS = 2
# Pooled namespaces made at once: each takes ~7 calls, so 4 keep a 20-a-second refill.
_POOL_WORKERS = 4


@dataclass
class Service:
    """Everything one nsprov instance runs on."""

    settings: Settings
    kube: kube.Kube
    authenticator: Authenticator
    provisioner: Provisioner
    metrics: Metrics
    grant: GrantGuard
    controller: Controller | None = None
    keeper: PoolKeeper | None = None
    pool_tokens: PoolTokens | None = None
    elector: LeaderElector | None = None
    grant_watch: watch.Informer | None = None

    def start_controller(self) -> None:
        if self.controller is None:
            return
        self.controller.start_informers()
        if self.pool_tokens is not None:
            self.pool_tokens.start()  # every replica: each claims with its own tokens
        if self.elector is None:
            self.controller.start_reconciling()
            if self.keeper is not None:
                self.keeper.start_keeping()
        else:
            self.elector.start()

    def ready(self) -> bool:
        return self.controller is None or self.controller.synced()

    def degraded(self) -> dict[str, str]:
        """What works less than it should while the replica still serves: for /readyz."""
        found: dict[str, str] = {}
        if self.elector is not None and self.elector.problem is not None:
            found["leaderElection"] = self.elector.problem
        refusals = self.grant.refusals()
        if refusals:
            found["grant"] = "; ".join(refusals.values()) + "; POST and PATCH with it answer 503"
        # A bad token file keeps the last good tokens serving (a deleted one revokes them).
        tokens = self.authenticator.tokens
        if tokens is not None and tokens.problem is not None:
            found["tokenFile"] = tokens.problem
        return found

    def start_grant_watch(self) -> None:
        """Keep ``grant`` current: every change of a ClusterRole is checked again.

        All ClusterRoles are watched, not only those in use: a policy reload may name
        another at any moment, and must be judged at once (a policy with an unsafe
        grant is refused as a whole). ClusterRoles hold rules, never secrets. Its own
        small connection pool, since a watch holds its connection for good.
        """
        api_client = kube.load_api_client(self.settings.kubeconfig, pool_size=2)
        client = kube.Kube(api_client, timeout=self.settings.request_timeout)

        def changed(event: str, obj: dict[str, Any]) -> None:
            name = obj["metadata"]["name"]
            self.grant.saw(name, informer.get("", name))

        def listed(error: Exception | None) -> None:
            if error is None:
                self.grant.listed(informer.items())
            elif isinstance(error, KubeError):
                # Refused (403, 401, ...). An unreachable API server says nothing about
                # the grants: the last verdicts stand, and provisioning fails on its own.
                self.grant.unreadable(error)

        informer = watch.Informer(
            client,
            watch.Resource("clusterroles", f"/apis/{bundle.RBAC_GROUP}/v1/clusterroles"),
            "",
            changed,
            on_restart=self.metrics.watch_restarts_for,
            on_list=listed,
        )
        self.grant_watch = informer
        informer.start()

    def close(self) -> None:
        if self.grant_watch is not None:
            self.grant_watch.stop()
            self.grant_watch.kube.api.close()
        if self.elector is not None:
            self.elector.stop()
        if self.keeper is not None:
            self.keeper.stop()
            self.keeper.kube.api.close()
        if self.pool_tokens is not None:
            self.pool_tokens.stop()
            self.pool_tokens.kube.api.close()
        if self.controller is not None:
            self.controller.stop()
            self.controller.kube.api.close()
        self.kube.api.close()


def create_service(settings: Settings) -> Service:
    """Connect the pieces; raises ValueError (with a one-line reason) on bad configuration."""
    metrics = Metrics()
    # With a policy file, ID tokens alone may authenticate: no static token is then needed.
    has_tokens = bool(settings.tokens) or settings.token_file is not None
    tokens = (
        TokenStore(
            settings.tokens,
            settings.token_file,
            on_error=lambda reason: metrics.token_file_errors.labels(reason=reason).inc(),
        )
        if has_tokens
        else None
    )
    base = flags_profile(settings)
    policy: PolicyFile | None = None

    def in_use() -> list[str]:
        return policy.current().cluster_roles(base) if policy is not None else [*base.cluster_roles]

    grant = GrantGuard(in_use, allow_unsafe=settings.allow_unsafe_grant)

    def validate(candidate: Policy) -> None:
        check_policy(candidate, base, settings.min_ttl, grant)

    if settings.policy_file is not None:
        policy = PolicyFile(
            settings.policy_file, on_reload=metrics.policy_reloaded, validate=validate
        )
        if tokens is None and not policy.current().issuers:
            raise PolicyError(f"policy file {settings.policy_file} trusts no issuer and no "
                              "token is configured: nobody could authenticate")  # fmt: skip
    api_client = kube.load_api_client(settings.kubeconfig, settings.concurrency)
    client = kube.Kube(api_client, timeout=settings.request_timeout)
    selector = bundle.Selector.parse(settings.selector)

    cluster_issuer = _ClusterIssuer(client)

    def namespace_refusal(namespace: str, iss: str) -> str | None:
        try:
            found = client.get(bundle.namespace_path(namespace))
        except KubeError as exc:
            if exc.status != 404:
                raise ClusterUnavailable("could not read the caller's namespace") from None
            # Gone from this cluster. A token this cluster's own issuer minted there is
            # dead (its ServiceAccount went with the namespace), yet its signature verifies
            # until its exp: had the namespace been nsprov's, the token would provision
            # a fresh one outside the caps and lifetime. Another cluster's tokens name
            # namespaces this one never had; they are judged by the policy alone.
            if iss and iss == cluster_issuer():
                return (
                    "which no longer exists on this cluster: a token of a deleted namespace "
                    "cannot provision (its ServiceAccount is gone with it)"
                )
            return None
        if bundle.is_managed(found.get("metadata"), selector):
            return (
                "which nsprov provisioned; ServiceAccounts of namespaces nsprov provisioned "
                "cannot provision namespaces (that would escape their tenant's caps and lifetime)"
            )
        return None

    authenticator = Authenticator(
        tokens,
        policy,
        kube=client,
        make_verifier=lambda: _verifier(client, namespace_refusal),
        base=base,
    )
    if policy is not None and policy.current().issuers:
        # Trusting an issuer: load the verifier now, not on the event loop of a first request.
        authenticator.verifier  # noqa: B018
    provisioner = Provisioner(
        kube=client,
        api=kubeasync.for_client(client, pool_size=settings.concurrency),
        selector=selector,
        prefix=settings.prefix,
        default_server=settings.server or client.host,
        ca_data=kube.ca_data(api_client, settings.ca_file),
        metrics=metrics,
        max_namespaces=settings.max_namespaces,
        grants=grant,
        first_call_check=settings.first_call_check,
    )
    metrics.grant_usable.set_function(lambda: 0.0 if grant.refusals() else 1.0)
    service = Service(settings, client, authenticator, provisioner, metrics, grant)
    if settings.controller:

        def pooled() -> list[Profile]:
            if policy is not None:
                return policy.current().pooled_profiles(base)
            return [base] if base.pool_size else []

        _add_controller(service, pooled)
    return service


def _add_pool_tokens(
    service: Service,
    controller: Controller,
    cache: ReadYourWrites,
    pooled: Callable[[], list[Profile]],
) -> None:
    """Tokens minted ahead for the ready pooled namespaces, on a connection of their own."""
    settings = service.settings

    def ttls() -> dict[str, float]:
        return {profile_hash(p, service.grant): p.ttl for p in pooled()}

    pool_tokens = PoolTokens(
        kube.Kube(kube.load_api_client(settings.kubeconfig, pool_size=2),
                  timeout=settings.request_timeout),
        cache,
        ttls=ttls,
        pooling=lambda: bool(pooled()),
    )  # fmt: skip
    controller.namespace_listeners.append(pool_tokens.wake)
    service.metrics.pool_tokens_held.set_function(pool_tokens.held)
    service.provisioner.pool_tokens = pool_tokens
    service.pool_tokens = pool_tokens


def _add_controller(service: Service, pooled: Callable[[], list[Profile]]) -> None:
    settings = service.settings
    # Its own connection pool: seven watches hold a connection each for good, and must
    # never take one from (or wait behind) the API's request threads.
    api_client = kube.load_api_client(settings.kubeconfig, pool_size=12)
    client = kube.Kube(api_client, timeout=settings.request_timeout)
    controller = Controller(
        client,
        selector=service.provisioner.selector,
        cluster_role=settings.cluster_role,
        metrics=service.metrics,
        resync_seconds=settings.resync_period,
        adopt_seconds=settings.adopt_ttl,
        grants=service.grant,
        stuck_after_seconds=settings.stuck_after,
        # An Event's reportingInstance: the pod (POD_NAME, from the downward API).
        instance=os.environ.get("POD_NAME") or socket.gethostname(),
    )
    service.controller = controller
    # The API reads managed namespaces from the controller's informer, which runs on
    # every replica (leader or not); the API wing sees it only as a NamespaceSource.
    cache = ReadYourWrites(_NamespaceInformer(controller.namespaces))
    service.provisioner.cache = cache
    service.provisioner.quotas = _QuotaInformer(controller.resource_quotas)
    # The pool keeper makes namespaces in the background, on its own connections, so a
    # refill never takes one from the API's requests or the controller's repairs.
    keeper_client = kube.Kube(
        kube.load_api_client(settings.kubeconfig, pool_size=_POOL_WORKERS + 2),
        timeout=settings.request_timeout,
    )
    keeper = PoolKeeper(
        keeper_client,
        selector=service.provisioner.selector,
        prefix=settings.prefix,
        namespaces=controller.namespaces,
        profiles=pooled,
        metrics=service.metrics,
        grants=service.grant,
        workers=_POOL_WORKERS,
    )
    controller.namespace_listeners.append(keeper.wake)
    service.keeper = keeper
    if settings.pool_tokens_ahead:
        _add_pool_tokens(service, controller, cache, pooled)

    def started_leading() -> None:
        controller.start_reconciling()
        keeper.start_keeping()

    def stopped_leading() -> None:
        keeper.stop_keeping()
        controller.stop_reconciling()

    if settings.leader_elect:
        duration = settings.leader_elect_lease_duration
        service.elector = LeaderElector(
            client,
            namespace=settings.leader_elect_namespace,
            name=settings.leader_elect_lease_name,
            # POD_NAME comes from the downward API (k8s/deployment.yaml).
            identity=identity_for(os.environ.get("POD_NAME")),
            on_started_leading=started_leading,
            on_stopped_leading=stopped_leading,
            lease_duration=duration,
            renew_deadline=duration * 2 / 3,
            retry_period=max(0.5, duration / 7.5),
            on_error=lambda reason: service.metrics.leader_election_errors.labels(reason).inc(),
        )


def _verifier(client: kube.Kube, namespace_refusal: Callable[[str, str], str | None]) -> Verifier:
    # Imported here: PyJWT and cryptography load only when an ID token is first verified.
    from nsprov.identity.oidc import Verifier

    return Verifier(client, namespace_refusal=namespace_refusal)


class _ClusterIssuer:
    """The issuer this cluster's API server signs ServiceAccount tokens as, from its OIDC
    discovery document (every ServiceAccount may read it: the default
    system:service-account-issuer-discovery binding), asked once it is first needed and
    remembered once known; None while it cannot be learned (logged)."""

    def __init__(self, client: kube.Kube) -> None:
        self._client = client
        self._issuer: str | None = None
        self._lock = threading.Lock()

    def __call__(self) -> str | None:
        with self._lock:
            if self._issuer is None:
                try:
                    document = self._client.get("/.well-known/openid-configuration")
                except (KubeError, ClusterUnavailable) as exc:
                    log.warning("could not learn the cluster's token issuer: %s", exc)
                    return None
                issuer = document.get("issuer")
                self._issuer = issuer if isinstance(issuer, str) and issuer else None
            return self._issuer


class _NamespaceInformer:
    """The Namespace informer as the API wing's read-only ``NamespaceSource``."""

    def __init__(self, informer: Informer) -> None:
        self._informer = informer

    def synced(self) -> bool:
        return self._informer.synced.is_set()

    def get(self, name: str) -> dict[str, Any] | None:
        return self._informer.get("", name)

    def items(self) -> list[dict[str, Any]]:
        return self._informer.items()

    def ready_pooled(self, pool: str) -> list[dict[str, Any]]:
        return self._informer.indexed(pool)

    def version(self) -> int | None:
        return self._informer.version()


class _QuotaInformer:
    """The ResourceQuota informer as the API wing's read-only ``QuotaSource``."""

    def __init__(self, informer: Informer) -> None:
        self._informer = informer

    def synced(self) -> bool:
        return self._informer.synced.is_set()

    def get(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self._informer.get(namespace, name)


class UnsafeGrant(ValueError):
    """The grant ClusterRole would let tenants undo nsprov's guarantees."""


def check_grant(service: Service) -> None:
    """Read the grants in use once at start: refuse to start with an unsafe one (unless allowed).

    A grant that is missing or unreadable does not stop the start (nsprov may be
    installed before its grants), but nothing is provisioned with it until it is
    readable and safe; the watch started with the app keeps checking.
    """
    unsafe = []
    for name in service.grant.in_use():
        try:
            role = service.kube.get(bundle.cluster_role_path(name))
        except KubeError as exc:
            if exc.status == 404:
                service.grant.saw(name, None)
                continue
            log.warning("cannot read grant ClusterRole %r to check it (%s; nsprov needs get, "
                        "list and watch on clusterroles)", name, exc)  # fmt: skip
            service.grant.unreadable(exc)
            return
        except NsprovError as exc:
            log.warning("cannot check grant ClusterRole %r yet: %s", name, exc.detail)
            return
        reasons = service.grant.saw(name, role)
        if reasons and not service.settings.allow_unsafe_grant:
            unsafe.append(describe_unsafe(name, reasons))
    if unsafe:
        raise UnsafeGrant(f"{'; '.join(unsafe)} (fix it, or pass --allow-unsafe-grant=true)")


def public_app(service: Service) -> Starlette:
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # One worker thread per pooled connection: more threads would wait on the pool,
        # fewer would leave connections idle.
        anyio.to_thread.current_default_thread_limiter().total_tokens = service.settings.concurrency
        service.start_grant_watch()
        service.start_controller()
        try:
            yield
        finally:
            await service.provisioner.aclose()
            service.close()

    app = Starlette(
        routes=api.routes,
        exception_handlers=api.exception_handlers,
        middleware=[
            Middleware(
                api.RequestContext,
                metrics=service.metrics,
                access_log=service.settings.access_log,
            ),
            Middleware(
                api.InFlightLimit,
                limit=service.settings.max_requests_in_flight,
                metrics=service.metrics,
            ),
        ],
        lifespan=lifespan,
    )
    app.state.api = api.Api(
        authenticator=service.authenticator,
        provisioner=service.provisioner,
        min_ttl=service.settings.min_ttl,
    )
    return app


def internal_app(service: Service) -> Starlette:
    """Probes and scrapes that never queue behind provisioning.

    The API's worker threads (anyio's default limiter, sized to the connection pool)
    are all busy whenever the API is saturated; a probe waiting for one would time out
    and take a healthy replica out of the Service. The probes' few blocking calls run
    on a limiter of their own instead, and cli.py serves this app on a thread with an
    event loop of its own, so they do not wait behind the API's request handling either.

    Ready means "this replica can answer from what it has seen": with the controller,
    its caches have synced once (they stay usable, and the API answers 503 +
    Retry-After, while the API server is away; failing readiness then would take
    every replica out of the Service at once); without it, the API server has
    answered ``/version`` once.
    """
    probes = anyio.CapacityLimiter(_PROBE_THREADS)
    reached = False  # without a controller: the API server answered once

    async def healthz(request: Request) -> Response:
        return PlainTextResponse("ok")

    async def readyz(request: Request) -> Response:
        nonlocal reached
        # A bad policy file does not make a replica unready (the last good policy serves);
        # the detail says so, for whoever looks.
        policy = service.authenticator.policy
        detail: dict[str, Any] = {}
        if policy is not None:
            if policy.due():  # a changed file is parsed off the loop, as for a request
                await anyio.to_thread.run_sync(policy.current, limiter=probes)
            detail["policy"] = policy.status().to_json()
        # Still ready when degraded: this replica serves the API, and taking every replica
        # out of its Service would turn a lease, grant, token-file or policy problem into
        # an outage. The detail names the problem; metrics and the log carry it too.
        degraded = service.degraded()
        if degraded:
            detail["degraded"] = degraded
        if service.controller is not None:
            if not service.ready():
                return JSONResponse(
                    {"ready": False, "reason": "caches not synced", **detail}, status_code=503
                )
            return JSONResponse({"ready": True, **detail})
        if not reached:
            try:
                await anyio.to_thread.run_sync(
                    lambda: service.kube.get("/version", timeout=min(5.0, service.kube.timeout)),
                    limiter=probes,
                )
            except NsprovError as exc:
                return JSONResponse({"ready": False, "reason": exc.detail}, status_code=503)
            except Exception as exc:
                # /version is readable by everyone; anything else means the cluster is not usable.
                return JSONResponse({"ready": False, "reason": type(exc).__name__}, status_code=503)
            reached = True
        return JSONResponse({"ready": True, **detail})

    async def metrics(request: Request) -> Response:
        body = await anyio.to_thread.run_sync(
            generate_latest, service.metrics.registry, limiter=probes
        )
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    return Starlette(
        routes=[
            Route("/healthz", healthz),
            Route("/readyz", readyz),
            Route("/metrics", metrics),
        ]
    )
