"""The policy file: strict parsing with errors that say where, and Vault-like claim matching."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path
from typing import Any

import pytest

from nsprov.core.settings import Settings
from nsprov.policy.file import (
    PolicyError,
    PolicyFile,
    check_profiles,
    parse_policy,
    refuse_unsafe_grants,
)
from nsprov.policy.model import (
    Glob,
    NoTenant,
    Policy,
    Principal,
    admit,
    flags_profile,
    lookup_claim,
    resolve,
)
from nsprov.provision.grant import GrantGuard

POLICY = """
issuers:
  - name: github
    issuer: https://token.actions.githubusercontent.com
    audience: nsprov
  - name: gitlab
    issuer: https://gitlab.example.com
    audience: nsprov
  - name: cluster
    issuer: https://kubernetes.default.svc.cluster.local
    audience: nsprov
    tokenReview: true
defaults:
  clusterRole: namespace-provisioner-grant
  ttl: 1h
  maxTTL: 24h
  maxLifetime: 72h
  template:
    resourceQuota: {hard: {pods: "20"}}
    networkPolicy: isolated
tenants:
  - name: web
    match:
      issuer: github
      claims: {repository_owner: acme, repository: "acme/web-*", ref: refs/heads/main}
    owner: "github:{repository}"
    clusterRole: [ci-deployer, view]
    maxNamespaces: 20
    maxNamespacesPerOwner: 5
  - name: releases
    match:
      issuer: github
      claims: {repository_owner: acme, ref: ["refs/tags/v*", "refs/heads/release/**"]}
    owner: "github:{repository}"
  - name: gitlab-ci
    match:
      issuer: gitlab
      claims: {namespace_path: platform, ref_protected: "true"}
    owner: "gitlab:{project_path}"
  - name: cluster-ci
    match:
      issuer: cluster
      claims: {/kubernetes.io/namespace: "ci-*"}
    owner: "cluster:{/kubernetes.io/namespace}/{/kubernetes.io/serviceaccount/name}"
  - name: legacy-ci
    match: {token: [ci, "team-*"]}
"""


def _policy(text: str = POLICY) -> Policy:
    return parse_policy(textwrap.dedent(text))


def _github(**claims: Any) -> Principal:
    policy = _policy()
    base = {"sub": "repo:acme/web-app:ref:refs/heads/main", "repository_owner": "acme"}
    return Principal(issuer=policy.issuer_named("github"), token=None, claims={**base, **claims})


def test_the_design_example_parses_into_frozen_settings() -> None:
    policy = _policy()
    assert [i.name for i in policy.issuers] == ["github", "gitlab", "cluster"]
    assert policy.issuer_named("cluster").token_review  # type: ignore[union-attr]
    assert policy.defaults.ttl == 3600
    assert policy.defaults.max_lifetime == 72 * 3600
    assert policy.defaults.template.network_policy == "isolated"
    assert dict(policy.defaults.template.resource_quota or {}) == {"pods": "20"}
    web = policy.tenants[0]
    assert web.settings.cluster_roles == ("ci-deployer", "view")
    assert web.settings.max_namespaces_per_owner == 5
    with pytest.raises(AttributeError):
        web.name = "other"  # type: ignore[misc]


def test_first_matching_tenant_names_the_owner() -> None:
    admission = admit(_policy(), _github(repository="acme/web-app", ref="refs/heads/main"))
    assert (admission.tenant.name, admission.owner) == ("web", "github:acme/web-app")


def test_every_condition_must_hold() -> None:
    with pytest.raises(NoTenant) as refused:
        admit(_policy(), _github(repository="acme/web-app", ref="refs/heads/feature"))
    # The caller learns which claims were checked, with its own values.
    assert "repository='acme/web-app'" in refused.value.detail
    assert "ref='refs/heads/feature'" in refused.value.detail
    assert "no tenant admits" in refused.value.detail


def test_a_list_means_any_of_and_globs_treat_slash_as_a_separator() -> None:
    policy = _policy()
    for ref in ("refs/tags/v1.2.0", "refs/heads/release/1.x", "refs/heads/release/a/b"):
        admission = admit(policy, _github(repository="acme/api", ref=ref))
        assert admission.tenant.name == "releases", ref
    for ref in ("refs/tags/v1/evil", "refs/heads/main2", "refs/tags/V1"):
        with pytest.raises(NoTenant):
            admit(policy, _github(repository="acme/api", ref=ref))


def test_glob_rules() -> None:
    assert Glob.compile("acme/web-*").matches("acme/web-app")
    assert not Glob.compile("acme/web-*").matches("acme/web-app/x")
    assert not Glob.compile("acme/web-*").matches("ACME/web-app")  # case-sensitive
    assert Glob.compile("a/**").matches("a/b/c")
    assert Glob.compile("v?").matches("v1")
    assert not Glob.compile("v?").matches("v10")
    assert Glob.compile("a.b").matches("a.b")
    assert not Glob.compile("a.b").matches("axb")
    assert Glob.compile("[x]").matches("[x]")  # no character classes: brackets are literal


def test_a_missing_claim_never_matches_even_a_star() -> None:
    principal = _github(ref="refs/heads/main")  # no repository claim
    with pytest.raises(NoTenant, match=r"repository \(absent\)"):
        admit(_policy(), principal)


def test_nested_claims_by_json_pointer() -> None:
    policy = _policy()
    claims = {
        "sub": "system:serviceaccount:ci-web:builder",
        "kubernetes.io": {"namespace": "ci-web", "serviceaccount": {"name": "builder"}},
    }
    principal = Principal(issuer=policy.issuer_named("cluster"), token=None, claims=claims)
    admission = admit(policy, principal)
    assert admission.owner == "cluster:ci-web/builder"
    assert lookup_claim({"a/b": {"c~d": 1}}, "/a~1b/c~0d") == 1
    assert lookup_claim(claims, "kubernetes.io") == claims["kubernetes.io"]
    other = Principal(
        issuer=policy.issuer_named("cluster"),
        token=None,
        claims={**claims, "kubernetes.io": {"namespace": "prod"}},
    )
    with pytest.raises(NoTenant):
        admit(policy, other)


def test_string_claims_compare_as_json_spells_them() -> None:
    policy = _policy()
    gitlab = policy.issuer_named("gitlab")
    claims = {"sub": "project_path:platform/api:ref_type:branch:ref:main", "namespace_path":
              "platform", "project_path": "platform/api"}  # fmt: skip
    admission = admit(
        policy, Principal(issuer=gitlab, token=None, claims={**claims, "ref_protected": "true"})
    )
    assert admission.owner == "gitlab:platform/api"
    # A JSON true is "true" as well; false is not.
    assert admit(policy, Principal(gitlab, None, {**claims, "ref_protected": True}))
    with pytest.raises(NoTenant):
        admit(policy, Principal(gitlab, None, {**claims, "ref_protected": False}))


def test_unsafe_claim_values_never_become_owners() -> None:
    for repository in ("acme/web-x\nowner: root", "acme/web-" + "x" * 300, "acme/web-<b>"):
        with pytest.raises(NoTenant):
            admit(_policy(), _github(repository=repository, ref="refs/heads/main"))


def test_static_tokens_by_name_keep_their_name_as_owner() -> None:
    policy = _policy()
    assert admit(policy, Principal(None, "ci", {})).owner == "ci"
    assert admit(policy, Principal(None, "team-a", {})).tenant.name == "legacy-ci"
    with pytest.raises(NoTenant, match="token 'alice'"):
        admit(policy, Principal(None, "alice", {}))


def test_a_token_tenant_never_matches_an_oidc_identity_and_vice_versa() -> None:
    policy = _policy("""
        issuers: [{name: github, issuer: "https://gh.example", audience: nsprov}]
        tenants:
          - {name: tokens, match: {token: "*"}}
          - {name: gh, match: {issuer: github, claims: {sub: "**"}}}
    """)
    principal = Principal(policy.issuer_named("github"), None, {"sub": "repo:a/b"})
    assert admit(policy, principal).tenant.name == "gh"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("tenant: []", "unknown key 'tenant' (did you mean 'tenants'?)"),
        ("issuers: [{name: gh, issuer: 'https://a', audience: x, audiance: y}]",
         "issuers[0]: unknown key 'audiance' (did you mean 'audience'?)"),
        ("issuers: [{name: gh, issuer: 'https://a'}]", "issuers[0].audience: required"),
        ("issuers: [{name: gh, issuer: 'http://a', audience: x}]", "issuers[0].issuer: must be"),
        ("issuers: [{name: GH, issuer: 'https://a', audience: x}]", "must be a DNS label"),
        ("issuers: [{name: a, issuer: 'https://a', audience: x},"
         " {name: b, issuer: 'https://a', audience: x}]", "issuers[1].issuer: 'https://a'"),
        ("issuers: [{name: a, issuer: 'https://a', audience: x, tokenReview: 'yes'}]",
         "issuers[0].tokenReview: expected true or false"),
        ("issuers: [{name: a, issuer: 'https://a', audience: x, caFile: /nonexistent}]",
         "issuers[0].caFile"),
        ("tenants: [{name: t, match: {issuer: nope, claims: {sub: x}}}]",
         "tenants[0].match.issuer: no issuer named 'nope'"),
        ("issuers: [{name: gh, issuer: 'https://a', audience: x}]\n"
         "tenants: [{name: t, match: {issuer: gh}}]", "tenants[0].match.claims: required"),
        ("issuers: [{name: gh, issuer: 'https://a', audience: x}]\n"
         "tenants: [{name: t, match: {issuer: gh, claim: {sub: x}}}]",
         "tenants[0].match: unknown key 'claim' (did you mean 'claims'?)"),
        ("issuers: [{name: gh, issuer: 'https://a', audience: x}]\n"
         "tenants: [{name: t, match: {issuer: gh, claims: {sub: x}}, owner: 'other:{sub}'}]",
         "tenants[0].owner: must start with 'gh:'"),
        ("issuers: [{name: gh, issuer: 'https://a', audience: x}]\n"
         "tenants: [{name: t, match: {issuer: gh, claims: {ok: true}}}]",
         "tenants[0].match.claims.ok: expected a string"),
        ("issuers: [{name: gh, issuer: 'https://a', audience: x}]\n"
         "tenants: [{name: t, match: {issuer: gh, claims: {sub: x}}, owner: 'gh:{sub'}]",
         "unbalanced"),
        ("tenants: [{name: t, match: {token: ci}, owner: 'gh:{token}'}]", "must not contain ':'"),
        ("tenants: [{name: t, match: {token: ci}, owner: '{sub}'}]", "{sub} is not allowed"),
        ("tenants: [{name: t, match: {token: 'a b'}}]", "'a b' is not a token name"),
        ("tenants: [{name: t, match: {token: ci, issuer: gh}}]", "not both"),
        ("tenants: [{name: t, match: {token: ci}}, {name: t, match: {token: x}}]",
         "tenants[1].name: 't' is used twice"),
        ("tenants: [{name: t, match: {token: ci}, ttl: 5}]", "ttl: expected a non-empty"),
        ("tenants: [{name: t, match: {token: ci}, ttl: 5x}]", "tenants[0].ttl: invalid duration"),
        ("tenants: [{name: t, match: {token: ci}, maxNamespaces: -1}]", "whole number"),
        ("tenants: [{name: t, match: {token: ci}, podSecurity: strict}]", "podSecurity"),
        ("tenants: [{name: t, match: {token: ci}, template: {quota: {}}}]",
         "tenants[0].template: unknown key 'quota'"),
        ("defaults: {clusterRol: x}", "defaults: unknown key 'clusterRol'"),
        ("tenants: {name: t}", "tenants: expected a list"),
        ("issuers: [", "not valid YAML"),
    ],
)  # fmt: skip
def test_invalid_policies_say_where_and_why(text: str, message: str) -> None:
    with pytest.raises(PolicyError) as refused:
        parse_policy(text)
    assert message in str(refused.value)


def test_ca_file_is_relative_to_the_policy_file(tmp_path: Path) -> None:
    (tmp_path / "ca.crt").write_text("pem")
    text = "issuers: [{name: a, issuer: 'https://a', audience: x, caFile: ca.crt}]"
    assert parse_policy(text, tmp_path).issuers[0].ca_file == tmp_path / "ca.crt"


def test_a_bad_file_keeps_the_last_good_policy(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text("tenants: [{name: a, match: {token: ci}}]")
    results: list[bool] = []
    policy = PolicyFile(path, on_reload=results.append, recheck_seconds=0)
    assert [t.name for t in policy.current().tenants] == ["a"]
    path.write_text("tenants: [{name: b, match: {tokn: ci}}]")
    assert [t.name for t in policy.current().tenants] == ["a"]
    status = policy.status()
    assert status.error is not None
    assert "unknown key 'tokn'" in status.error
    path.write_text("tenants: [{name: c, match: {token: ci}}]\n")
    assert [t.name for t in policy.current().tenants] == ["c"]
    assert policy.status().error is None
    assert results == [True, False, True]


def test_a_bad_file_at_start_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text("issuers: 3")
    with pytest.raises(PolicyError, match=r"policy\.yaml: issuers: expected a list"):
        PolicyFile(path)
    with pytest.raises(PolicyError, match="No such file"):
        PolicyFile(tmp_path / "missing.yaml")


# ---- tenants' settings: parsed strictly, resolved tenant > defaults > flags --------------------

_BASE = flags_profile(Settings(cluster_role="flag-grant", ttl=600, max_ttl=7200))


def test_a_tenant_resolves_over_the_defaults_over_the_flags() -> None:
    policy = _policy(
        """
        defaults:
          ttl: 30m
          labels: {cost-centre: shared, team: none}
          template:
            resourceQuota: {hard: {pods: 20, requests.cpu: "4"}}
            limitRange: {default: {cpu: 500m}}
            networkPolicy: isolated
        tenants:
          - name: web
            match: {token: web}
            clusterRole: [ci-deployer, view]
            maxNamespaces: 20
            labels: {team: web}
            template:
              resourceQuota: none
              isolatedEgress: true
          - name: plain
            match: {token: plain}
        """
    )
    web = resolve(_BASE, policy.defaults, policy.tenant_named("web"))
    assert web.tenant == "web"
    assert web.cluster_roles == ("ci-deployer", "view")
    assert web.ttl == 1800
    assert web.max_ttl == 7200
    assert web.max_namespaces == 20
    assert dict(web.template.resource_quota) == {}  # 'none' drops the defaults' quota
    assert dict(web.template.limit_range["default"]) == {"cpu": "500m"}
    assert web.template.network_policy == "isolated"
    assert web.template.isolated_egress
    assert dict(web.template.labels) == {"cost-centre": "shared", "team": "web"}
    plain = resolve(_BASE, policy.defaults, policy.tenant_named("plain"))
    assert plain.cluster_roles == ("flag-grant",)
    # YAML's number 20 becomes the quantity "20".
    assert dict(plain.template.resource_quota) == {"pods": "20", "requests.cpu": "4"}
    assert plain.max_namespaces is None  # no cap: neither the tenant nor the defaults set one
    assert policy.cluster_roles(_BASE) == ["flag-grant", "ci-deployer", "view"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("defaults: {template: {resourceQuota: {hard: {pods: lots}}}}",
         "defaults.template.resourceQuota.hard.pods: 'lots' is not a quantity"),
        ("defaults: {template: {resourceQuota: {hard: {}}}}", "expected a mapping of resource"),
        ("defaults: {template: {resourceQuota: {hard: {'Pods!': '1'}}}}", "not a resource name"),
        ("defaults: {template: {resourceQuota: {soft: {pods: '1'}}}}", "unknown key 'soft'"),
        ("defaults: {template: {limitRange: {defaults: {cpu: 1}}}}",
         "unknown key 'defaults' (did you mean 'default'?)"),
        ("defaults: {template: {networkPolicy: open}}", "expected isolated or none"),
        ("defaults: {template: {isolatedEgress: yes please}}", "expected true or false"),
        ("defaults: {template: {quota: {}}}", "unknown key 'quota'"),
        # What the API server would refuse (422) on every provision: refused at load instead.
        ("defaults: {template: {resourceQuota: {hard: {pods: '1.5'}}}}",
         "resourceQuota.hard.pods: '1.5' must be a whole number"),
        ("defaults: {template: {resourceQuota: {hard: {count/configmaps: 500m}}}}",
         "must be a whole number"),
        ("defaults: {template: {resourceQuota: {hard: {example.com/gpu: '0.5'}}}}",
         "must be a whole number"),
        ("defaults: {template: {resourceQuota: {hard: {cpus: '1'}}}}",
         "'cpus' is not a resource a ResourceQuota can bound"),
        ("defaults: {template: {limitRange: {default: {pods: '1'}}}}",
         "limitRange.default: 'pods' is not a container resource"),
        ("defaults: {template: {limitRange: {default: {cpu: '2'}, max: {cpu: '1'}}}}",
         "limitRange: default cpu 2 is above max 1"),
        ("defaults: {template: {limitRange: {default: {cpu: '1'}, defaultRequest: {cpu: 2}}}}",
         "limitRange: defaultRequest cpu 2 is above default 1"),
        ("defaults: {template: {limitRange: {min: {memory: 2Gi}, max: {memory: 1Gi}}}}",
         "limitRange: min memory 2Gi is above max 1Gi"),
        ("defaults: {template: {limitRange: {maxLimitRequestRatio: {cpu: '0.5'}}}}",
         "limitRange.maxLimitRequestRatio.cpu: 0.5 is below 1"),
        ("defaults: {labels: {nsprov.io/owner: x}}", "'nsprov.io/owner' is reserved"),
        ("defaults: {labels: {pod-security.kubernetes.io/enforce: privileged}}", "is reserved"),
        ("defaults: {annotations: {evil.k8s.io/x: y}}", "is reserved"),
        ("defaults: {labels: {team: 'not a value'}}", "not a valid label value"),
        ("defaults: {labels: {'-bad': x}}", "not a valid label key"),
        ("defaults: {labels: {'/team': x}}", "not a valid label key"),
        ("defaults: {annotations: {'/note': x}}", "not a valid annotation key"),
        ("defaults: {clusterRole: [a, a]}", "listed twice"),
        ("defaults: {clusterRole: [a, b, c, d, e, f, g, h, i]}", "at most 8"),
        ("defaults: {clusterRole: ../admin}", "not a ClusterRole name"),
        ("defaults: {maxNamespaces: -1}", "expected a whole number >= 0"),
        ("defaults: {podSecurity: lax}", "expected privileged, baseline"),
        ("defaults: {maxGracePeriod: 1.5s}", "defaults.maxGracePeriod: must be whole seconds"),
        ("defaults: {maxGracePeriod: '30'}", "missing unit"),
        ("defaults: {maxGracePeriod: -1s}", "must be positive"),
        ("defaults: {serviceTypes: [ClusterIP, Ingress]}", "'Ingress' is not a Service type"),
        ("defaults: {serviceTypes: [ClusterIP, ClusterIP]}", "a type is listed twice"),
        ("defaults: {serviceTypes: []}", "expected a string or a list of strings"),
        ("tenants: [{name: t, match: {token: x}, finalizers: [never]}]",
         "tenants[0].finalizers: 'never' is not a domain-qualified finalizer name"),
        ("defaults: {finalizers: ['example.com/a,b']}", "not a domain-qualified"),
        ("defaults: {finalizers: [example.com/a, example.com/a]}", "listed twice"),
        ("defaults: {finalizer: [example.com/a]}", "(did you mean 'finalizers'?)"),
    ],
)  # fmt: skip
def test_bad_settings_are_refused_with_where_and_why(text: str, message: str) -> None:
    with pytest.raises(PolicyError) as refused:
        _policy(text)
    assert message in str(refused.value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("defaults: {ttl: 3h}", "defaults: ttl 3h0m0s is above its maxTTL 2h0m0s"),
        ("tenants: [{name: t, match: {token: x}, maxTTL: 5m}]",
         "tenant 't': ttl 10m0s is above its maxTTL 5m0s"),
        ("defaults: {ttl: 1s}", "below --min-ttl"),
        ("defaults: {maxLifetime: 1m, ttl: 2m}", "above its maxLifetime"),
        ("defaults: {template: {isolatedEgress: true}}", "isolatedEgress needs networkPolicy"),
    ],
)  # fmt: skip
def test_settings_that_would_refuse_every_request_are_refused(text: str, message: str) -> None:
    with pytest.raises(PolicyError) as refused:
        check_profiles(_policy(text), _BASE, min_ttl=30)
    assert message in str(refused.value)


def test_a_policy_with_an_unsafe_grant_is_refused_as_a_whole(tmp_path: Path) -> None:
    guard = GrantGuard(lambda: [])
    rule = {"apiGroups": [""], "resources": ["resourcequotas"], "verbs": ["update"]}
    guard.listed([{"metadata": {"name": "quota-editor"}, "rules": [rule]}])
    path = tmp_path / "policy.yaml"
    path.write_text("tenants: [{name: t, match: {token: ci}}]")
    now = [0.0]
    policies = PolicyFile(
        path,
        validate=lambda p: refuse_unsafe_grants(p, _BASE, guard),
        recheck_seconds=0,
        clock=lambda: now[0],
    )
    path.write_text("tenants: [{name: t, match: {token: ci}, clusterRole: quota-editor}]")
    os.utime(path, (1, 1))
    now[0] += 1
    # The last good policy keeps serving; the refusal names the tenant, the role and why.
    assert policies.current().tenants[0].settings.cluster_roles is None
    error = policies.status().error or ""
    assert "tenant 't': grant ClusterRole 'quota-editor' is unsafe" in error
    assert "change their own quota" in error


def test_a_deleted_policy_file_refuses_everyone_until_it_is_back(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    text = "tenants: [{name: ci, match: {token: ci}}]"
    path.write_text(text)
    now = [100.0]
    policy = PolicyFile(path, recheck_seconds=0, clock=lambda: now[0])
    assert [t.name for t in policy.current().tenants] == ["ci"]
    path.unlink()
    # Missing once may be a ConfigMap's symlink swap: the policy stays.
    assert [t.name for t in policy.current().tenants] == ["ci"]
    now[0] += 1.5
    assert policy.current().tenants == ()
    assert policy.current().issuers == ()
    assert "deleted" in (policy.status().error or "")
    path.write_text(text)
    now[0] += 1.0
    assert [t.name for t in policy.current().tenants] == ["ci"]
    assert policy.status().error is None


def test_the_example_policy_configmap_is_a_valid_policy() -> None:
    """k8s/examples/policy.yaml is what an operator copies: it must load as it is."""
    import yaml

    root = Path(__file__).resolve().parents[2]
    configmap = yaml.safe_load((root / "k8s/examples/policy.yaml").read_text())
    policy = parse_policy(configmap["data"]["policy.yaml"])
    check_profiles(policy, flags_profile(Settings()), min_ttl=30)
    web = resolve(flags_profile(Settings()), policy.defaults, policy.tenant_named("web"))
    assert web.max_namespaces == 20
    assert web.template.network_policy == "isolated"
    assert dict(web.template.resource_quota)["pods"] == "20"
    # No load balancers or node ports, and the Kubernetes default grace, for every tenant.
    for tenant in ("web", "legacy-ci"):
        template = resolve(flags_profile(Settings()), policy.defaults,
                           policy.tenant_named(tenant)).template  # fmt: skip
        assert template.resource_quota["services.loadbalancers"] == "0"
        assert template.resource_quota["services.nodeports"] == "0"
        assert (template.max_grace_seconds, template.service_types) == (30, ("ClusterIP",))
    patch = yaml.safe_load((root / "k8s/examples/policy-patch.yaml").read_text())
    container = patch["spec"]["template"]["spec"]["containers"][0]
    assert container["env"][0]["value"] == "/etc/nsprov/policy/policy.yaml"


def test_max_namespaces_zero_closes_a_tenant_while_the_flags_zero_means_no_cap() -> None:
    policy = _policy(
        """
        tenants:
          - {name: closed, match: {token: a}, maxNamespaces: 0, maxNamespacesPerOwner: 0}
          - {name: open, match: {token: b}}
        """
    )
    closed = resolve(_BASE, policy.defaults, policy.tenant_named("closed"))
    assert closed.max_namespaces == 0
    assert closed.max_namespaces_per_owner == 0
    flags = flags_profile(Settings(max_namespaces_per_owner=0))
    opened = resolve(flags, policy.defaults, policy.tenant_named("open"))
    assert opened.max_namespaces is None
    assert opened.max_namespaces_per_owner is None


def test_quotas_and_limits_the_api_server_takes_are_accepted() -> None:
    policy = _policy(
        """
        defaults:
          template:
            resourceQuota:
              hard:
                pods: 2
                count/configmaps: "3"
                requests.cpu: "1.5"
                limits.memory: 1Gi
                requests.nvidia.com/gpu: "0.5"
                hugepages-2Mi: 1Gi
                gold.storageclass.storage.k8s.io/requests.storage: 10Gi
            limitRange:
              min: {cpu: 100m}
              max: {cpu: "2", memory: 1Gi}
              default: {cpu: 500m}
              defaultRequest: {cpu: 200m}
              maxLimitRequestRatio: {cpu: "4"}
        """
    )
    assert dict(policy.defaults.template.resource_quota or {})["pods"] == "2"


def test_annotations_too_big_for_a_namespace_are_refused() -> None:
    # The API server refuses a namespace whose annotations pass 256 KiB (and nsprov
    # writes them twice: as annotations and in the template's record).
    big = "x" * 140_000
    with pytest.raises(PolicyError) as refused:
        check_profiles(_policy(f"defaults: {{annotations: {{example.com/big: {big}}}}}"),
                       _BASE, min_ttl=30)  # fmt: skip
    assert "defaults: the namespace's annotations would take" in str(refused.value)
    check_profiles(_policy("defaults: {annotations: {example.com/note: " + "x" * 1000 + "}}"),
                   _BASE, min_ttl=30)  # fmt: skip


def test_a_tenants_bounds_inside_its_namespace_resolve_like_its_other_settings() -> None:
    """maxGracePeriod, serviceTypes and finalizers: the tenant's, else the defaults', else
    Kubernetes' own (30 s, ClusterIP, none); a tenant's list replaces the defaults'."""
    policy = _policy(
        """
        defaults:
          maxGracePeriod: 1m
          finalizers: [example.com/shared]
        tenants:
          - name: roomy
            match: {token: roomy}
            maxGracePeriod: 2m30s
            serviceTypes: [ClusterIP, LoadBalancer]
            finalizers: [example.com/cleanup]
          - name: none
            match: {token: none}
            finalizers: []
          - name: plain
            match: {token: plain}
        """
    )
    roomy = resolve(_BASE, policy.defaults, policy.tenant_named("roomy")).template
    assert (roomy.max_grace_seconds, roomy.service_types, roomy.finalizers) == (
        150, ("ClusterIP", "LoadBalancer"), ("example.com/cleanup",))  # fmt: skip
    none = resolve(_BASE, policy.defaults, policy.tenant_named("none")).template
    assert none.finalizers == ()
    plain = resolve(_BASE, policy.defaults, policy.tenant_named("plain")).template
    assert (plain.max_grace_seconds, plain.service_types, plain.finalizers) == (
        60, ("ClusterIP",), ("example.com/shared",))  # fmt: skip
    flags = resolve(_BASE, _policy("{}").defaults, None).template
    assert (flags.max_grace_seconds, flags.service_types, flags.finalizers) == (
        30, ("ClusterIP",), ())  # fmt: skip


def _laughs(depth: int) -> str:
    """YAML aliases that stand for 9**depth strings while the file stays a few hundred bytes."""
    inner = "&a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"
    for i in range(1, depth + 1):
        inner = f"&a{i} [{inner}, " + ", ".join([f"*a{i - 1}"] * 8) + "]"
    return inner


@pytest.mark.parametrize(
    "place",
    [
        "defaults: {template: {resourceQuota: {hard: {pods: %s}}}}",
        "defaults: {maxNamespaces: %s}",
        "tenants: [{name: a, match: {token: ci}, pool: {size: %s}}]",
    ],
)
def test_a_refusal_never_spells_out_a_billion_laughs(place: str) -> None:
    """The refusal names the kind of value, not its repr: 9**6 strings here, 9**12 hang."""
    with pytest.raises(PolicyError) as refused:
        parse_policy(place % _laughs(6))
    assert len(str(refused.value)) < 300


class _CountedName(str):
    """A tenant's name that counts how often it is compared."""

    compared = 0

    def __eq__(self, other: object) -> bool:
        _CountedName.compared += 1
        return str.__eq__(self, other)

    __hash__ = str.__hash__


def test_telling_tenants_apart_grows_with_the_file_not_its_square(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A 1 MiB policy has room for 28,000 tenants: comparing each name with every earlier
    one took 40 s of a reload, with the policy's lock held (every request waits)."""
    from dataclasses import replace

    import nsprov.policy.file as policy_file

    made = policy_file._tenant
    monkeypatch.setattr(
        policy_file,
        "_tenant",
        lambda *args: (t := made(*args)) and replace(t, name=_CountedName(t.name)),
    )
    count = 2000
    text = "tenants:\n" + "".join(f"- {{name: t{i}, match: {{token: c}}}}\n" for i in range(count))
    _CountedName.compared = 0
    assert len(parse_policy(text).tenants) == count
    assert _CountedName.compared < 10 * count
    with pytest.raises(PolicyError, match=r"tenants\[2\]\.name: 't0' is used twice"):
        parse_policy(
            "tenants: [{name: t0, match: {token: c}}, {name: t1, match: {token: c}},"
            " {name: t0, match: {token: c}}]"
        )
