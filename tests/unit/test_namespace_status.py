"""GET of one namespace: its tenant, and its quota from the cache or one read of the API."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from nsprov.api.provisioner import NamespaceInfo, NamespaceStatus, Provisioner, QuotaStatus
from nsprov.core.errors import ProvisioningFailed
from nsprov.core.kube import KubeError
from nsprov.provision import bundle
from nsprov.provision.metrics import Metrics
from nsprov.provision.template import Template

SELECTOR = bundle.Selector.parse("controller.observatorium.io=namespace-provisioner")
QUOTA_PATH = "/api/v1/namespaces/np-a/resourcequotas/namespace-provisioner"


def _namespace(template: Template | None, tenant: str | None = "web") -> dict[str, Any]:
    """A namespace as nsprov writes it; with no template, as made before templates."""
    namespace = bundle.namespace(
        "np-a", selector=SELECTOR, owner="alice", template=template or Template(("grant",)),
        expires_at=2000000000, tenant=tenant,
    )  # fmt: skip
    if template is None:
        del namespace["metadata"]["annotations"][bundle.TEMPLATE_ANNOTATION]
    return namespace


def _quota(status: dict[str, Any] | None, labels: dict[str, str] | None = None) -> dict[str, Any]:
    quota = bundle.resource_quota("np-a", SELECTOR, {"pods": "3", "configmaps": "10"})
    if labels is not None:
        quota["metadata"]["labels"] = labels
    if status is not None:
        quota["status"] = status
    return quota


class _Kube:
    """Answers GETs of one path; counts them."""

    def __init__(self, answer: dict[str, Any] | KubeError) -> None:
        self.answer = answer
        self.gets: list[str] = []

    def get(self, path: str, **kw: Any) -> dict[str, Any]:
        self.gets.append(path)
        if isinstance(self.answer, KubeError):
            raise self.answer
        return self.answer


class _Quotas:
    def __init__(self, objects: dict[tuple[str, str], dict[str, Any]], synced: bool = True) -> None:
        self.objects = objects
        self._synced = synced

    def synced(self) -> bool:
        return self._synced

    def get(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.objects.get((namespace, name))


def _quota_of(
    namespace: dict[str, Any], kube: _Kube, quotas: _Quotas | None = None
) -> QuotaStatus | None:
    provisioner = Provisioner(
        kube=kube,  # type: ignore[arg-type]
        selector=SELECTOR,
        prefix="np",
        default_server="https://k8s.example",
        ca_data=None,
        metrics=Metrics(),
        quotas=quotas,
    )
    return asyncio.run(provisioner._quota(namespace))


WITH_QUOTA = Template(("grant",), resource_quota={"pods": "3", "configmaps": "10"})
COUNTED = {"hard": {"pods": "3", "configmaps": "10"}, "used": {"pods": "0", "configmaps": "2"}}


def test_the_quota_comes_from_a_synced_cache_without_a_call() -> None:
    kube = _Kube(KubeError(500, "InternalError", "not to be asked"))
    quotas = _Quotas({("np-a", "namespace-provisioner"): _quota(COUNTED)})
    found = _quota_of(_namespace(WITH_QUOTA), kube, quotas)
    assert found == QuotaStatus(COUNTED["hard"], COUNTED["used"])
    assert kube.gets == []


@pytest.mark.parametrize("quotas", [None, _Quotas({}), _Quotas({}, synced=False)])
def test_without_a_synced_cache_or_on_a_miss_the_api_server_is_asked_once(
    quotas: _Quotas | None,
) -> None:
    kube = _Kube(_quota(COUNTED))
    assert _quota_of(_namespace(WITH_QUOTA), kube, quotas) == QuotaStatus(
        COUNTED["hard"], COUNTED["used"]
    )
    assert kube.gets == [QUOTA_PATH]


def test_a_quota_not_yet_counted_shows_its_spec_and_no_usage() -> None:
    found = _quota_of(_namespace(WITH_QUOTA), _Kube(_quota(None)))
    assert found == QuotaStatus({"pods": "3", "configmaps": "10"}, {})


def test_no_quota_is_null() -> None:
    # Deleted (the controller puts it back), not nsprov's, or never called for.
    assert _quota_of(_namespace(WITH_QUOTA), _Kube(KubeError(404, "NotFound", "gone"))) is None
    assert _quota_of(_namespace(WITH_QUOTA), _Kube(_quota(COUNTED, labels={"a": "b"}))) is None
    kube = _Kube(_quota(COUNTED))
    assert _quota_of(_namespace(Template(("grant",))), kube) is None
    assert _quota_of(_namespace(None), kube) is None
    assert kube.gets == []


def test_a_refused_read_is_an_error_not_a_missing_quota() -> None:
    with pytest.raises(ProvisioningFailed, match=r"ResourceQuota.*not allowed"):
        _quota_of(_namespace(WITH_QUOTA), _Kube(KubeError(403, "Forbidden", "no get")))


def test_the_json_names_the_tenant_and_the_quota() -> None:
    info = NamespaceInfo.from_object(_namespace(WITH_QUOTA))
    assert info.to_json()["tenant"] == "web"
    body = NamespaceStatus(info, QuotaStatus(COUNTED["hard"], COUNTED["used"])).to_json()
    assert body["quota"] == COUNTED
    assert (body["name"], body["state"]) == ("np-a", "ACTIVE")
    untenanted = NamespaceInfo.from_object(_namespace(None, tenant=None))
    plain = NamespaceStatus(untenanted, None).to_json()
    assert {k: plain[k] for k in ("tenant", "quota")} == {"tenant": None, "quota": None}
