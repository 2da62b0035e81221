from __future__ import annotations

import datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nsprov.api.provisioner import Provisioned, _iso


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


def _datetime_iso(unix: int) -> str:
    """_iso as it was: what it must go on saying."""
    return datetime.datetime.fromtimestamp(unix, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@settings(derandomize=True, database=None, deadline=None, max_examples=2000)
@given(
    st.one_of(
        st.integers(0, 2**32),
        st.integers(-62135596800 - 5, -62135596800 + 5),
        st.integers(253402300799 - 5, 253402300799 + 5),
        st.integers(-(2**70), 2**70),
    )
)
def test_iso_says_what_datetime_says(unix: int) -> None:
    try:
        expected: str | type[Exception] = _datetime_iso(unix)
    except (ValueError, OverflowError, OSError) as exc:
        expected = type(exc)
    if isinstance(expected, str):
        assert _iso(unix) == expected
    else:
        with pytest.raises(expected):
            _iso(unix)
