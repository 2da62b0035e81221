from __future__ import annotations

import calendar
import datetime
import re
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nsprov.provision import bundle
from nsprov.provision.template import Template

SELECTOR = bundle.Selector.parse("controller.observatorium.io=namespace-provisioner")
DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")


def test_random_names_are_dns_labels_and_differ() -> None:
    names = {bundle.random_name("np") for _ in range(200)}
    assert len(names) == 200
    assert all(DNS_LABEL.fullmatch(n) and n.startswith("np-") for n in names)


@pytest.mark.parametrize("prefix", ["", "Np", "-np", "np-", "a" * 53, "n_p"])
def test_bad_prefixes_are_refused(prefix: str) -> None:
    with pytest.raises(ValueError, match="prefix"):
        bundle.validate_prefix(prefix)


def test_longest_prefix_still_makes_a_valid_name() -> None:
    prefix = bundle.validate_prefix("a" * 52)
    assert DNS_LABEL.fullmatch(bundle.random_name(prefix))


def test_idempotent_names_depend_on_owner_and_key() -> None:
    name, label = bundle.idempotent_name("np", "alice", "key-1")
    assert (name, label) == bundle.idempotent_name("np", "alice", "key-1")
    assert name != bundle.idempotent_name("np", "bob", "key-1")[0]
    assert name != bundle.idempotent_name("np", "alice", "key-2")[0]
    assert DNS_LABEL.fullmatch(name)
    assert re.fullmatch(r"[0-9a-f]{40}", label)  # a valid label value


def test_namespace_has_selector_expiry_owner_and_pod_security() -> None:
    manifest = bundle.namespace(
        "np-abc",
        selector=SELECTOR,
        owner="alice",
        template=Template(("grant",), pod_security="baseline"),
        expires_at=1700000000,
    )
    metadata = manifest["metadata"]
    assert SELECTOR.matches(metadata["labels"])
    assert bundle.expires_at_of(metadata) == 1700000000
    assert bundle.owner_of(metadata) == "alice"
    assert bundle.cluster_role_of(metadata) == "grant"
    assert metadata["labels"]["pod-security.kubernetes.io/enforce"] == "baseline"
    assert bundle.IDEMPOTENCY_LABEL not in metadata["labels"]
    bare = bundle.namespace(
        "np-abc",
        selector=SELECTOR,
        owner="a",
        template=Template(("g",)),
        expires_at=1,
        idempotency="x",
    )
    assert not any(k.startswith("pod-security") for k in bare["metadata"]["labels"])
    assert bare["metadata"]["labels"][bundle.IDEMPOTENCY_LABEL] == "x"


def test_role_binding_shape_and_drift_detection() -> None:
    binding = bundle.role_binding("np-abc", SELECTOR, "grant")
    assert binding["roleRef"]["name"] == "grant"
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": bundle.SERVICE_ACCOUNT, "namespace": "np-abc"}
    ]

    def wanted(role: str) -> bundle.Wanted:
        return bundle.wanted_objects("np-abc", SELECTOR, Template((role,)))[0]

    assert bundle.is_right(binding, wanted("grant"))
    assert not bundle.is_right(binding, wanted("other"))
    changed = {**binding, "subjects": [*binding["subjects"], {"kind": "User", "name": "eve"}]}
    assert not bundle.is_right(changed, wanted("grant"))


def test_service_account_does_not_automount() -> None:
    sa = bundle.service_account("np-abc", SELECTOR)
    assert sa["automountServiceAccountToken"] is False
    assert SELECTOR.matches(sa["metadata"]["labels"])


@pytest.mark.parametrize(("left", "seconds"), [(0, 600), (30, 600), (539, 600), (3600, 3660)])
def test_token_outlives_the_namespace_and_respects_the_api_minimum(
    left: float, seconds: int
) -> None:
    assert bundle.token_seconds(left) == seconds


@pytest.mark.parametrize("text", ["", "novalue", "=x", "k=", "k"])
def test_selector_must_be_key_value(text: str) -> None:
    with pytest.raises(ValueError, match="key=value"):
        bundle.Selector.parse(text)


def test_managed_means_carrying_the_selector() -> None:
    assert bundle.is_managed({"labels": {SELECTOR.key: SELECTOR.value}}, SELECTOR)
    assert not bundle.is_managed({"labels": {SELECTOR.key: "other"}}, SELECTOR)
    assert not bundle.is_managed({"labels": None}, SELECTOR)
    assert not bundle.is_managed({}, SELECTOR)
    assert bundle.expires_at_of({"labels": {bundle.EXPIRES_AT_LABEL: "soon"}}) is None


def test_created_at_of_reads_the_api_servers_timestamp() -> None:
    assert bundle.created_at_of({"creationTimestamp": "2026-11-22T03:47:21Z"}) == 1795319241
    assert bundle.created_at_of({}) is None
    assert bundle.created_at_of({"creationTimestamp": "yesterday"}) is None


def test_unix_time_reads_rfc3339_seconds_only() -> None:
    assert bundle.unix_time("1970-01-01T01:00:00Z") == 3600
    assert bundle.unix_time(None) is None
    assert bundle.unix_time("1970-01-01T01:00:00.5Z") is None


def _strptime_unix_time(raw: str) -> int | None:
    """unix_time as it was: what it must go on accepting and refusing."""
    try:
        return calendar.timegm(time.strptime(raw, "%Y-%m-%dT%H:%M:%SZ"))
    except ValueError:
        return None


# Fields as the API server writes them, and as strptime also reads them: one digit, a
# space-padded day, leap seconds, out of range, non-ASCII digits (strptime's \d is Unicode).
_ODD_FIELD = st.sampled_from(
    ["0", "1", "9", " 1", "00", "13", "24", "29", "30", "31", "32", "60", "61", "62", "99",
     "\u0663", "\uff10\uff11", "1a", "", "-1", "+1"]
)  # fmt: skip


def _field(low: int, high: int) -> st.SearchStrategy[str]:
    return st.one_of(st.integers(low, high).map("{:02d}".format), _ODD_FIELD)


_STAMP_LIKE = st.builds(
    "{}-{}-{}{}{}:{}:{}{}".format,
    st.one_of(
        st.integers(0, 9999).map("{:04d}".format),
        st.sampled_from(["\u0661\u0669\u0667\u0660", "197", "19700"]),
    ),
    _field(1, 12),
    _field(1, 31),
    st.one_of(st.just("T"), st.sampled_from(["t", " ", "TT"])),
    _field(0, 23),
    _field(0, 59),
    _field(0, 59),
    st.one_of(st.just("Z"), st.sampled_from(["z", "", "ZZ", "Z ", ".5Z", "+00:00"])),
)


_STAMP = st.datetimes(datetime.datetime(1, 1, 1)).map(
    lambda at: f"{at.year:04d}-{at:%m-%dT%H:%M:%S}Z"
)


@settings(derandomize=True, database=None, deadline=None, max_examples=3000)
@given(st.one_of(_STAMP, _STAMP_LIKE, st.text(max_size=24)))
def test_unix_time_accepts_and_refuses_what_strptime_does(raw: str) -> None:
    assert bundle.unix_time(raw) == _strptime_unix_time(raw)


@pytest.mark.parametrize(
    "raw",
    ["2024-02-29T23:59:59Z", "2023-02-29T00:00:00Z", "2016-12-31T23:59:60Z", "0001-01-01T00:00:00Z",
     "0000-01-01T00:00:00Z", "9999-12-31T23:59:59Z", "2026-04-31T00:00:00Z", "2026-1-5T1:2:3Z",
     "2026-12-06t20:39:05z", "2026-12-06T24:00:00Z", "2026-13-01T00:00:00Z"],
)  # fmt: skip
def test_unix_time_edges_as_strptime(raw: str) -> None:
    assert bundle.unix_time(raw) == _strptime_unix_time(raw)


@pytest.mark.parametrize(
    ("annotations", "owner", "tenant", "belongs"),
    [
        ({"nsprov.io/owner": "github:acme/web", "nsprov.io/tenant": "main"},
         "github:acme/web", "main", True),
        # Two tenants rendering the same owner (main branch vs pull requests) stay apart.
        ({"nsprov.io/owner": "github:acme/web", "nsprov.io/tenant": "main"},
         "github:acme/web", "pull-requests", False),
        ({"nsprov.io/owner": "github:acme/web", "nsprov.io/tenant": "main"},
         "github:acme/other", "main", False),
        # Made before the policy file (no tenant recorded): still its owner's.
        ({"nsprov.io/owner": "ci"}, "ci", "legacy", True),
        ({"nsprov.io/owner": "ci"}, "ci", None, True),
        ({}, "ci", None, False),
    ],
)  # fmt: skip
def test_belongs_to_checks_owner_and_tenant(
    annotations: dict[str, str], owner: str, tenant: str | None, belongs: bool
) -> None:
    assert bundle.belongs_to({"annotations": annotations}, owner, tenant) is belongs


def test_a_new_quota_is_put_in_force_with_its_limits_and_no_usage() -> None:
    quota = bundle.resource_quota("np-a", SELECTOR, {"pods": "2"})
    created = {**quota, "metadata": {**quota["metadata"], "resourceVersion": "42"}}
    body = bundle.quota_in_force(created)
    assert body is not None
    assert body["status"] == {"hard": {"pods": "2"}}  # no "used": creates wait for the count
    assert body["metadata"]["resourceVersion"] == "42"  # compare-and-swap
    assert bundle.resource_quota_status_path("np-a") == (
        "/api/v1/namespaces/np-a/resourcequotas/namespace-provisioner/status"
    )
    # Already in force (the quota controller was first): nothing to write.
    assert bundle.quota_in_force({**created, "status": {"hard": {"pods": "2"}}}) is None


def test_a_quota_is_counted_once_every_limit_has_usage() -> None:
    assert not bundle.quota_counted({"status": {}})
    assert not bundle.quota_counted({"status": {"hard": {"pods": "2", "configmaps": "3"}}})
    assert not bundle.quota_counted(
        {"status": {"hard": {"pods": "2", "configmaps": "3"}, "used": {"pods": "0"}}}
    )
    assert bundle.quota_counted(
        {"status": {"hard": {"pods": "2", "configmaps": "3"},
                    "used": {"pods": "0", "configmaps": "1"}}}
    )  # fmt: skip


def test_quantities_finer_than_a_milli_are_compared_as_the_api_server_stores_them() -> None:
    # The API server rounds every quantity of a quota or limit range up to a milli-unit
    # (1.5m -> 2m, 1.0001 -> 1001m, 100u -> 1m): that is what was asked, not drift, or the
    # controller would PUT the quota back on every reconcile and a roll-out never converge.
    selector = bundle.Selector("k", "v")
    wanted = bundle.resource_quota("np-abc", selector, {"requests.cpu": "1.5m", "cpu": "1.0001"})
    item = bundle.Wanted("resourcequota", "/q", bundle.BOUNDS_NAME, wanted)
    stored = {"spec": {"hard": {"requests.cpu": "2m", "cpu": "1001m"}}}
    assert bundle.is_right(stored, item)
    assert not bundle.is_right({"spec": {"hard": {"requests.cpu": "1m", "cpu": "1001m"}}}, item)
    limits = bundle.limit_range("np-abc", selector, {"default": {"cpu": "100u"}})
    lr = bundle.Wanted("limitrange", "/l", bundle.BOUNDS_NAME, limits)
    stored_lr = {"spec": {"limits": [
        {"type": "Container", "default": {"cpu": "1m"}, "defaultRequest": {"cpu": "1m"}}
    ]}}  # fmt: skip
    assert bundle.is_right(stored_lr, lr)


def test_a_changed_quota_is_put_in_force_keeping_what_is_counted() -> None:
    quota = {
        "metadata": {"name": bundle.BOUNDS_NAME, "resourceVersion": "9"},
        "spec": {"hard": {"pods": "1", "secrets": "2"}},
        "status": {"hard": {"pods": "2", "configmaps": "3"},
                   "used": {"pods": "1", "configmaps": "1"}},
    }  # fmt: skip
    body = bundle.quota_in_force(quota)
    assert body is not None
    assert body["metadata"]["resourceVersion"] == "9"
    # secrets has no count yet: its creates wait for kube-controller-manager (fail-closed).
    assert body["status"] == {"hard": {"pods": "1", "secrets": "2"}, "used": {"pods": "1"}}
    in_force = {**quota, "status": {"hard": {"pods": "1", "secrets": "2"}}}
    assert bundle.quota_in_force(in_force) is None


def test_the_namespace_says_what_its_tenant_may_do_inside_it() -> None:
    """The admission policies read these (CEL cannot parse the record's JSON): a whole number
    and comma-separated lists; an empty list is written, so it says "none"."""
    roomy = Template(("grant",), max_grace_seconds=120,
                     service_types=("ClusterIP", "LoadBalancer"),
                     finalizers=("example.com/a", "example.com/b"))  # fmt: skip
    made = bundle.namespace("np-x", selector=bundle.Selector("k", "v"), owner="o",
                            template=roomy, expires_at=1)  # fmt: skip
    annotations = made["metadata"]["annotations"]
    assert annotations[bundle.MAX_GRACE_ANNOTATION] == "120"
    assert annotations[bundle.SERVICE_TYPES_ANNOTATION] == "ClusterIP,LoadBalancer"
    assert annotations[bundle.FINALIZERS_ANNOTATION] == "example.com/a,example.com/b"
    plain = bundle.bound_annotations(Template(("grant",)))
    assert plain == {
        bundle.MAX_GRACE_ANNOTATION: "30",
        bundle.SERVICE_TYPES_ANNOTATION: "ClusterIP",
        bundle.FINALIZERS_ANNOTATION: "",
    }


def test_a_record_keeps_the_bounds_and_an_older_record_gets_the_defaults() -> None:
    roomy = Template(("grant",), max_grace_seconds=120, service_types=("NodePort",),
                     finalizers=("example.com/a",))  # fmt: skip
    assert Template.from_record(roomy.record()) == roomy
    older = '{"clusterRoles": ["grant"], "networkPolicy": "none"}'
    assert Template.from_record(older) == Template(("grant",))
    for bad in ('"maxGracePeriodSeconds": "30"', '"maxGracePeriodSeconds": -1',
                '"serviceTypes": ["Ingress"]', '"finalizers": ["a,b"]'):  # fmt: skip
        assert Template.from_record(f'{{"clusterRoles": ["grant"], {bad}}}') is None, bad
