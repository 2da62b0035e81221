from __future__ import annotations

import pytest

from nsprov.core.errors import BadRequest
from nsprov.core.ttl import TTL_PATTERN, format_duration, parse_duration, parse_ttl


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("0", 0.0),
        ("30s", 30.0),
        ("5m", 300.0),
        ("1h30m", 5400.0),
        ("1.5h", 5400.0),
        ("2h45m10s", 9910.0),
        ("300ms", 0.3),
        (".5s", 0.5),
        ("1.s", 1.0),
        ("+5m", 300.0),
        ("-1m", -60.0),
        ("1h15m30.5s", 4530.5),
        ("1000us", 0.001),
        ("1000\u00b5s", 0.001),
        ("1500000000ns", 1.5),
        ("1d", 86400.0),
        ("2d12h", 216000.0),
        ("1.5d", 129600.0),
        ("1d30m", 88200.0),
    ],
)
def test_go_duration_syntax(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "empty"),
        ("5", "missing unit"),
        ("1h5", "missing unit"),
        ("5x", "invalid"),
        ("h", "invalid"),
        (".", "invalid"),
        ("1h-5m", "invalid"),
        ("-", "invalid"),
        ("1w", "invalid"),
        ("1dd", "invalid"),
        ("2day", "invalid"),
        ("5 m", "invalid"),
        ("\u0661h", "invalid"),  # ARABIC-INDIC DIGIT ONE: not an ASCII digit, as Go says
        ("1\u0660m", "invalid"),
        ("\uff15m", "invalid"),  # FULLWIDTH DIGIT FIVE
        ("\u0665", "invalid"),
    ],
)
def test_invalid_durations_say_why(text: str, reason: str) -> None:
    with pytest.raises(BadRequest, match=reason):
        parse_duration(text)


@pytest.mark.parametrize("text", [None, "", "0", "0s", "0h0m"])
def test_absent_or_zero_ttl_is_the_default(text: str | None) -> None:
    assert parse_ttl(text, default=3600, maximum=7200) == 3600


def test_ttl_bounds() -> None:
    assert parse_ttl("2h", default=60, maximum=7200) == 7200
    with pytest.raises(BadRequest, match="exceeds the maximum of 2h0m0s"):
        parse_ttl("2h0m1s", default=60, maximum=7200)
    with pytest.raises(BadRequest, match="negative"):
        parse_ttl("-1s", default=60, maximum=7200)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0s"), (59, "59s"), (60, "1m0s"), (5400, "1h30m0s"), (86400, "24h0m0s")],
)
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text
    assert parse_duration(text) == seconds


def test_ttl_below_the_minimum_is_refused() -> None:
    assert parse_ttl("30s", default=60, maximum=7200, minimum=30) == 30
    for text in ("1ns", "29.999s", "1s"):
        with pytest.raises(BadRequest, match="below the minimum of 30s"):
            parse_ttl(text, default=60, maximum=7200, minimum=30)
    # Absent or 0 still means the default, which --min-ttl may not exceed.
    assert parse_ttl("0", default=60, maximum=7200, minimum=30) == 60


def test_a_ttl_in_days_is_bounded_like_any_other() -> None:
    """?ttl=1d on POST and PATCH goes through parse_ttl: days count against the same maximum."""
    assert parse_ttl("1d", default=60, maximum=2 * 86400) == 86400
    with pytest.raises(BadRequest, match="exceeds the maximum of 48h0m0s"):
        parse_ttl("2d1s", default=60, maximum=2 * 86400)


@pytest.mark.parametrize("text", ["-0", "-0s", "-1h", " 1h", "1h ", "\u00a030m"])
def test_a_ttl_refuses_what_its_pattern_refuses(text: str) -> None:
    """Go takes -0s, and parse_duration strips spaces; a request's ttl is TTL_PATTERN, as the
    OpenAPI document says, so neither a minus sign nor a space gets through."""
    assert not TTL_PATTERN.fullmatch(text)
    with pytest.raises(BadRequest, match=r"negative|spaces"):
        parse_ttl(text, default=60, maximum=7200)


def test_a_ttl_may_carry_a_plus_sign() -> None:
    assert parse_ttl("+1h", default=60, maximum=7200) == 3600
