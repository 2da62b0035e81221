from __future__ import annotations

import base64

import pytest

from nsprov.core.errors import BadRequest
from nsprov.core.paging import DEFAULT_LIMIT, MAX_LIMIT, decode_continue, page, parse_limit

NAMES = [f"np-{i:03d}" for i in range(7)]


def _walk(limit: int) -> list[list[str]]:
    pages, after = [], None
    while True:
        current = page(NAMES, str, limit, after)
        pages.append(current.items)
        if current.continue_token is None:
            return pages
        after = decode_continue(current.continue_token)


def test_pages_cover_every_name_once_in_order() -> None:
    assert _walk(3) == [NAMES[0:3], NAMES[3:6], NAMES[6:7]]
    assert _walk(7) == [NAMES]
    assert _walk(100) == [NAMES]


def test_remaining_counts_what_comes_after_the_page() -> None:
    first = page(NAMES, str, 3, None)
    assert first.remaining == 4
    assert page(NAMES, str, 3, "np-005").remaining == 0


def test_a_page_starts_after_a_name_that_is_gone_meanwhile() -> None:
    assert page(NAMES, str, 2, "np-0025").items == ["np-003", "np-004"]


def test_limit_has_a_default_and_bounds() -> None:
    assert parse_limit(None) == DEFAULT_LIMIT
    assert parse_limit("1") == 1
    assert parse_limit(str(MAX_LIMIT)) == MAX_LIMIT
    bad_ones = ("0", "-1", str(MAX_LIMIT + 1), "ten", "1.5", "true", "+5", " 5", "5_0", "\u0665")
    for bad in bad_ones:
        with pytest.raises(BadRequest):
            parse_limit(bad)


@pytest.mark.parametrize(
    "token",
    [
        "not base64!",
        base64.urlsafe_b64encode(b"[1]").decode(),
        base64.urlsafe_b64encode(b'{"v":2,"after":"x"}').decode(),
        base64.urlsafe_b64encode(b'{"v":1,"after":""}').decode(),
        base64.urlsafe_b64encode(b'{"v":1,"after":7}').decode(),
        "A" * 2000,
    ],
)
def test_foreign_tokens_are_bad_requests(token: str) -> None:
    with pytest.raises(BadRequest):
        decode_continue(token)
