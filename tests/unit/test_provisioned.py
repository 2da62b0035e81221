from __future__ import annotations

from nsprov.api.provisioner import Provisioned


def test_a_shortened_token_is_what_x_expires_at_promises() -> None:
    shortened = Provisioned("np-a", expires_at=7200, kubeconfig={}, token_expires_at=3600)
    assert shortened.usable_until == 3600
    assert shortened.expires_at_iso == "1970-01-01T01:00:00Z"
    assert shortened.namespace_expires_at_iso == "1970-01-01T02:00:00Z"


def test_a_token_outliving_the_namespace_promises_the_namespace() -> None:
    usual = Provisioned("np-a", expires_at=7200, kubeconfig={}, token_expires_at=7260)
    assert usual.expires_at_iso == usual.namespace_expires_at_iso == "1970-01-01T02:00:00Z"
    unsaid = Provisioned("np-a", expires_at=7200, kubeconfig={})
    assert unsaid.usable_until == 7200
