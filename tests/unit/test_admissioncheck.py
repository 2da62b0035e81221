"""What the start-up check makes of the API server's answers to its two dry-run creates."""

from __future__ import annotations

from typing import Any, cast

import pytest

from nsprov.core.errors import ClusterUnavailable
from nsprov.core.kube import Kube, KubeError
from nsprov.provision import bundle
from nsprov.provision.admissioncheck import SelectorUnprotected, check_admission_policies

SELECTOR = bundle.Selector.parse("controller.observatorium.io=namespace-selector")
REFUSED = KubeError(403, "Forbidden", "ValidatingAdmissionPolicy 'nsprov-confine' ... denied")


class _Answers:
    """A Kube whose namespace creates answer in turn: None = admitted, else the exception."""

    def __init__(self, *answers: Exception | None) -> None:
        self.answers = list(answers)
        self.sent: list[tuple[dict[str, Any], dict[str, str]]] = []

    def request(self, method: str, path: str, *, body: Any, query: Any) -> dict[str, Any]:
        assert (method, path) == ("POST", bundle.NAMESPACES_PATH)
        self.sent.append((body["metadata"]["labels"], query))
        answer = self.answers.pop(0)
        if answer is not None:
            raise answer
        return body  # type: ignore[no-any-return]


def _check(kube: _Answers) -> None:
    check_admission_policies(cast(Kube, kube), SELECTOR, now=1000.0)


def test_policies_for_the_selector_refuse_only_the_namespace_without_an_expiry(
    caplog: pytest.LogCaptureFixture,
) -> None:
    kube = _Answers(None, REFUSED)
    with caplog.at_level("INFO"):
        _check(kube)
    key, value = SELECTOR.key, SELECTOR.value
    assert kube.sent == [
        ({key: value, bundle.EXPIRES_AT_LABEL: "4600"}, {"dryRun": "All"}),
        ({key: value}, {"dryRun": "All"}),
    ]
    assert f"admission policies guard --selector={SELECTOR}" in caplog.text


def test_policies_that_refuse_nsprovs_own_namespace_stop_the_start() -> None:
    with pytest.raises(SelectorUnprotected, match="rendered for another selector"):
        _check(_Answers(REFUSED))


def test_no_policy_at_all_is_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    _check(_Answers(None, None))
    assert "no admission policy guards" in caplog.text


@pytest.mark.parametrize(
    "failure",
    [KubeError(403, "Forbidden", "namespaces is forbidden: RBAC"), ClusterUnavailable("down")],
)
def test_a_probe_that_says_nothing_is_a_warning_not_a_refusal(
    failure: Exception, caplog: pytest.LogCaptureFixture
) -> None:
    kube = _Answers(failure)
    _check(kube)
    assert len(kube.sent) == 1
    assert "cannot check the admission policies" in caplog.text


# The API server's words for a refusal by a policy that is not nsprov's: a cluster that
# requires, say, Pod Security labels on every namespace refuses the probes (which carry
# only the selector and an expiry), whichever selector nsprov's policies were made for.
FOREIGN = KubeError(
    403,
    "Forbidden",
    'namespaces "nsprov-admission-probe-1" is forbidden: ValidatingAdmissionPolicy '
    "'require-pod-security-labels' with binding 'require-pod-security-labels' denied "
    "request: every namespace sets pod-security.kubernetes.io/enforce",
)


def test_another_policy_refusing_the_probe_is_a_warning_not_a_refused_start(
    caplog: pytest.LogCaptureFixture,
) -> None:
    kube = _Answers(FOREIGN)
    _check(kube)
    assert len(kube.sent) == 1
    assert "cannot check the admission policies" in caplog.text
    assert "require-pod-security-labels" in caplog.text


def test_only_nsprov_confine_refusing_the_unexpiring_namespace_means_guarded(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level("INFO"):
        _check(_Answers(None, FOREIGN))
    assert "admission policies guard" not in caplog.text
    assert "cannot check the admission policies" in caplog.text
