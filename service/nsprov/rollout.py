"""The roll-out: apply the policy in force to namespaces that already exist.

A namespace keeps the template it was provisioned with (its ``nsprov.io/template``
record), so a policy edit never changes a running job's grants, quota, limits or
isolation behind its back. When the operator wants an edit applied to live
namespaces too, ``nsprov rollout`` rewrites the record, and the labels and
annotations the namespace derives from it, on each live namespace of the chosen
tenants. The controller builds every namespace's objects from its record, so it
then brings the RoleBindings, quota, limits and network policy in line; the
roll-out itself writes Namespaces only, each with a resourceVersion precondition.
What a job asked for stays: its expiry (ttl, maxTTL and maxLifetime of the new
policy apply to new requests and extensions), its owner, its tenant.

It runs where nsprov runs (``kubectl -n nsprov exec deploy/nsprov -- nsprov
rollout``), so it reads the same policy file and flags, and writes as nsprov's
ServiceAccount, the only identity the admission policy lets write nsprov's
annotations. Like the provisioner, it hands out no grant it has not checked: a
ClusterRole that is missing, unreadable or unsafe fails its tenant's namespaces.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any

from nsprov.core.errors import NsprovError
from nsprov.core.kube import Kube, KubeError, load_api_client
from nsprov.core.settings import Settings
from nsprov.policy.file import PolicyError, check_policy, parse_policy, read_policy
from nsprov.policy.model import Policy, Profile, flags_profile, resolve
from nsprov.provision import bundle
from nsprov.provision.grant import bind_refusal, describe_unsafe, unsafe_reasons
from nsprov.provision.template import Template

log = logging.getLogger(__name__)

PAGE_SIZE = 500
ATTEMPTS = 5
"""Patches of one namespace before giving up when it keeps changing under us (409)."""
_POLL_SECONDS = 1.0
NONE = "-"
"""The digest shown for a namespace without a record (made before templates)."""


class UnknownTenant(ValueError):
    """A tenant the policy does not have; the message lists those it has."""


@dataclass(frozen=True)
class Outcome:
    """What the roll-out did (or, dry, would do) to one namespace."""

    name: str
    tenant: str | None
    old: str
    """Digest of the record it had (``-``: none)."""
    new: str
    """Digest of the template it has now, or would get (``-``: not judged)."""
    state: str
    """changed, would-change, unchanged, skipped or failed."""
    detail: str = ""
    template: Template | None = None

    def line(self) -> str:
        detail = f" ({self.detail})" if self.detail else ""
        return f"{self.name} {self.tenant or NONE} {self.old} -> {self.new} {self.state}{detail}"


def differences(old: Template | None, new: Template) -> list[str]:
    """The record's keys in which ``new`` differs from ``old`` (all of them: no record)."""
    mine = new.to_json()
    if old is None:
        return ["record"]
    theirs = old.to_json()
    return [key for key in mine if mine[key] != theirs.get(key)]


def summary(outcomes: list[Outcome]) -> str:
    counts: dict[str, int] = {}
    for outcome in outcomes:
        counts[outcome.state] = counts.get(outcome.state, 0) + 1
    states = ("changed", "would-change", "unchanged", "skipped", "failed")
    shown = ", ".join(f"{counts[s]} {s}" for s in states if counts.get(s))
    return f"{len(outcomes)} namespace(s){': ' + shown if shown else ''}"


class Rollout:
    """Re-applies the current templates to live managed namespaces, one merge patch each."""

    def __init__(
        self,
        kube: Kube,
        *,
        selector: bundle.Selector,
        base: Profile,
        policy: Policy | None,
        allow_unsafe_grant: bool = False,
        dry_run: bool = False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.kube = kube
        self.selector = selector
        self.base = base
        self.policy = policy
        self.allow_unsafe_grant = allow_unsafe_grant
        self.dry_run = dry_run
        self.clock = clock
        self._grants: dict[str, str | None] = {}

    # ---- what each namespace should be ----------------------------------------------------

    def profile_for(self, tenant: str | None) -> Profile | str:
        """The profile a namespace of ``tenant`` is made with now, or why it has none."""
        if self.policy is None:
            if tenant is not None:
                # Made under a policy file this run lacks (run without NSPROV_POLICY_FILE?):
                # the flags' template would drop its quota, limits and isolation.
                return f"tenant {tenant!r} recorded, but there is no policy file"
            return self.base
        if tenant is None:
            return "no tenant recorded (made before the policy file)"
        found = self.policy.tenant_named(tenant)
        if found is None:
            return "tenant not in the policy"
        return resolve(self.base, self.policy.defaults, found)

    def grant_refusal(self, role: str) -> str | None:
        """Why ClusterRole ``role`` may not be bound (checked once per run); None if usable."""
        if role not in self._grants:
            self._grants[role] = self._judge_grant(role)
        return self._grants[role]

    def _judge_grant(self, role: str) -> str | None:
        try:
            found = self.kube.get(bundle.cluster_role_path(role))
        except KubeError as exc:
            if exc.status == 404:
                return f"grant ClusterRole {role!r} does not exist"
            return f"cannot read grant ClusterRole {role!r}: {exc.status} {exc.reason}"
        except NsprovError as exc:
            return f"cannot read grant ClusterRole {role!r}: {exc.detail}"
        reasons = unsafe_reasons(found)
        if reasons and not self.allow_unsafe_grant:
            return describe_unsafe(role, reasons)
        return bind_refusal(self.kube, role)

    # ---- the run --------------------------------------------------------------------------

    def namespaces(self) -> Iterator[dict[str, Any]]:
        """Every managed namespace, a page at a time (thousands never come as one answer)."""
        query = {"labelSelector": str(self.selector), "limit": str(PAGE_SIZE)}
        while True:
            listed = self.kube.get(bundle.NAMESPACES_PATH, query=query)
            yield from listed.get("items") or []
            token = (listed.get("metadata") or {}).get("continue")
            if not token:
                return
            query = {**query, "continue": token}

    def run(self, tenants: set[str] | None) -> Iterator[Outcome]:
        """An outcome per live namespace of ``tenants`` (None: of every tenant)."""
        # The whole list first: patching as the pages come could outlive the continue
        # token (the API server drops it at etcd's compaction, every 5 minutes).
        for namespace in list(self.namespaces()):
            metadata = namespace["metadata"]
            tenant = tenant_of(metadata)
            if tenants is not None and tenant not in tenants:
                continue
            if bundle.is_terminating(namespace):
                continue
            yield self.apply(namespace)

    def apply(self, namespace: dict[str, Any]) -> Outcome:
        """Patch one namespace to its tenant's current template; read again on a conflict."""
        for _ in range(ATTEMPTS):
            outcome, patch = self.decide(namespace)
            if patch is None or self.dry_run:
                return outcome
            name = outcome.name
            try:
                self.kube.merge_patch(bundle.namespace_path(name), patch)
            except KubeError as exc:
                if exc.status == 404:
                    return _replace(outcome, state="skipped", detail="deleted meanwhile")
                if exc.status != 409:
                    return _replace(outcome, state="failed", detail=f"{exc.status} {exc.reason}")
            except NsprovError as exc:
                return _replace(outcome, state="failed", detail=exc.detail)
            else:
                log.info("rolled out namespace=%s tenant=%s template %s -> %s",
                         name, outcome.tenant, outcome.old, outcome.new)  # fmt: skip
                return outcome
            # Changed since we read it (extended, say): judge it again as it is now.
            try:
                namespace = self.kube.get(bundle.namespace_path(name))
            except KubeError as exc:
                if exc.status == 404:
                    return _replace(outcome, state="skipped", detail="deleted meanwhile")
                return _replace(outcome, state="failed", detail=f"{exc.status} {exc.reason}")
            except NsprovError as exc:
                return _replace(outcome, state="failed", detail=exc.detail)
        return _replace(outcome, state="failed", detail=f"changed under us {ATTEMPTS} times")

    def decide(self, namespace: dict[str, Any]) -> tuple[Outcome, dict[str, Any] | None]:
        """What to do with one namespace: its outcome, and the patch to send (None: none)."""
        metadata = namespace["metadata"]
        name = metadata["name"]
        tenant = tenant_of(metadata)
        old = bundle.template_of(metadata)
        outcome = Outcome(name, tenant, old.digest() if old else NONE, NONE, "skipped")
        if bundle.is_terminating(namespace):
            return _replace(outcome, detail="being deleted"), None
        if bundle.is_pooled(metadata):
            # Not claimed yet: the pool keeper replaces it when its profile's hash changes.
            return _replace(outcome, detail="pooled, replaced by the pool keeper"), None
        if bundle.owner_of(metadata) is None:
            # Adopted from the original tool: nsprov only takes over its end.
            return _replace(outcome, detail="adopted, not provisioned by nsprov"), None
        expires_at = bundle.expires_at_of(metadata)
        if expires_at is not None and expires_at <= self.clock():
            return _replace(outcome, detail="expired"), None
        profile = self.profile_for(tenant)
        if isinstance(profile, str):
            return _replace(outcome, detail=profile), None
        template = profile.template
        outcome = _replace(outcome, new=template.digest(), template=template)
        raw = (metadata.get("annotations") or {}).get(bundle.TEMPLATE_ANNOTATION)
        if raw == template.record():
            return _replace(outcome, state="unchanged"), None
        for role in template.cluster_roles:
            refusal = self.grant_refusal(role)
            if refusal is not None:
                return _replace(outcome, state="failed", detail=refusal), None
        # A record written before a key existed reads as that key's default: equal
        # templates, but the record (and the annotations derived from it) is older.
        detail = ", ".join(differences(old, template)) or "record in the current format"
        state = "would-change" if self.dry_run else "changed"
        patch = bundle.template_patch(metadata, self.selector, template, profile.tenant)
        return _replace(outcome, state=state, detail=detail), patch

    # ---- waiting for the controller -------------------------------------------------------

    def converged(self, name: str, template: Template) -> bool:
        """Whether namespace ``name`` holds exactly the objects ``template`` calls for, right.

        Lists nsprov's labelled objects in the namespace (what the controller creates,
        replaces and removes); a namespace that is gone has nothing left to converge.
        """
        found: dict[tuple[str, str], dict[str, Any]] = {}
        collections = {(kind, path) for kind, _, path in bundle.nsprov_object_names(name)}
        try:
            for kind, path in collections:
                listed = self.kube.get(path, query={"labelSelector": str(self.selector)})
                for item in listed.get("items") or []:
                    found[(kind, item["metadata"]["name"])] = item
        except KubeError as exc:
            if exc.status == 404:
                return True
            raise
        wanted = bundle.wanted_objects(name, self.selector, template)
        keep = {(w.kind, w.name) for w in wanted}
        right = all(
            (w.kind, w.name) in found and bundle.is_right(found[(w.kind, w.name)], w)
            for w in wanted
        )
        stray = any(
            (kind, obj) in found and (kind, obj) not in keep
            for kind, obj, _ in bundle.nsprov_object_names(name)
        )
        return right and not stray

    def wait(
        self,
        outcomes: list[Outcome],
        timeout: float,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> list[Outcome]:
        """Wait until the controller has brought each changed namespace in line; the
        outcomes it has not within ``timeout`` seconds."""
        pending = [o for o in outcomes if o.state == "changed" and o.template is not None]
        deadline = monotonic() + timeout
        while True:
            left = []
            for outcome in pending:
                assert outcome.template is not None
                try:
                    if self.converged(outcome.name, outcome.template):
                        continue
                except (KubeError, NsprovError) as exc:
                    log.warning("cannot check namespace=%s yet: %s", outcome.name, exc)
                left.append(outcome)
            pending = left
            if not pending or monotonic() >= deadline:
                return pending
            sleep(min(_POLL_SECONDS, max(0.0, deadline - monotonic())))


def check_tenants(policy: Policy | None, names: list[str]) -> None:
    """UnknownTenant unless ``policy`` has every tenant in ``names``."""
    if policy is None:
        raise UnknownTenant(
            "there is no policy file (--policy-file), so there are no tenants: "
            "use --all to re-apply the flags' template to every managed namespace"
        )
    known = [t.name for t in policy.tenants]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise UnknownTenant(
            f"the policy has no tenant {', '.join(map(repr, unknown))}; "
            f"its tenants: {', '.join(known) or '(none)'}"
        )


def tenant_of(metadata: dict[str, Any]) -> str | None:
    """The tenant a namespace records: the annotation, which namespaces made before the
    tenant label have too, else the label."""
    return bundle.tenant_of(metadata) or (metadata.get("labels") or {}).get(bundle.TENANT_LABEL)


def _replace(outcome: Outcome, **changes: Any) -> Outcome:
    return replace(outcome, **changes)


# ---- the command --------------------------------------------------------------------------


def load_policy(settings: Settings) -> Policy | None:
    """The policy file as serve would load it now (PolicyError says why it would not)."""
    if settings.policy_file is None:
        return None
    try:
        with settings.policy_file.open("rb") as source:
            text = read_policy(source)
    except OSError as exc:
        raise PolicyError(f"policy file {settings.policy_file}: {exc.strerror or exc}") from None
    except PolicyError as exc:
        raise PolicyError(f"policy file {settings.policy_file}: {exc}") from None
    try:
        policy = parse_policy(text, settings.policy_file.parent)
        check_policy(policy, flags_profile(settings), settings.min_ttl, grants=None)
    except PolicyError as exc:
        raise PolicyError(f"policy file {settings.policy_file}: {exc}") from None
    return policy


def command(
    settings: Settings,
    *,
    tenants: list[str] | None,
    dry_run: bool,
    wait: bool,
    timeout: float,
    echo: Callable[[str], None],
) -> int:
    """``nsprov rollout``: 0 when every namespace is done, 1 when one failed (or, with
    ``wait``, was not brought in line in time); UnknownTenant / PolicyError for bad usage."""
    policy = load_policy(settings)
    if tenants is not None:
        check_tenants(policy, tenants)
    api_client = load_api_client(settings.kubeconfig, pool_size=2)
    try:
        rollout = Rollout(
            Kube(api_client, timeout=settings.request_timeout),
            selector=bundle.Selector.parse(settings.selector),
            base=flags_profile(settings),
            policy=policy,
            allow_unsafe_grant=settings.allow_unsafe_grant,
            dry_run=dry_run,
        )
        outcomes: list[Outcome] = []
        try:
            for outcome in rollout.run(set(tenants) if tenants is not None else None):
                echo(outcome.line())
                outcomes.append(outcome)
        except (KubeError, NsprovError) as exc:
            echo(f"listing namespaces failed: {exc}; {summary(outcomes)} so far")
            return 1
        echo(summary(outcomes))
        failed = any(o.state == "failed" for o in outcomes)
        if wait and not dry_run:
            late = rollout.wait(outcomes, timeout)
            for outcome in late:
                echo(f"{outcome.name} not in line with template {outcome.new} after "
                     f"{timeout:.0f}s: is the controller running?")  # fmt: skip
            changed = sum(1 for o in outcomes if o.state == "changed")
            echo(f"controller: {changed - len(late)} of {changed} changed namespace(s) in line")
            failed = failed or bool(late)
        return 1 if failed else 0
    finally:
        api_client.close()
