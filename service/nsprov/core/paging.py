"""Pages of a list ordered by name, with an opaque continue token, as Kubernetes pages.

An owner with thousands of namespaces must never be sent one unbounded answer,
so ``GET /api/v1/namespaces`` answers at most ``limit`` items (``DEFAULT_LIMIT``
when the client names none, never more than ``MAX_LIMIT``) and a token to ask
for the next page.

Unlike Kubernetes, a page is not cut from a snapshot: the token names the last
name sent, and the next page starts after it in the live list. Each name is sent
at most once across the pages of one walk; a namespace created or deleted
meanwhile may or may not appear. The token is base64url JSON so clients treat it
as opaque and we can change what it carries; it reveals nothing: it holds a name
from the caller's own list, and the list is filtered by owner on every page.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from nsprov.core.errors import BadRequest

DEFAULT_LIMIT = 100
MAX_LIMIT = 500
_TOKEN_VERSION = 1

T = TypeVar("T")


@dataclass(frozen=True)
class Page(Generic[T]):
    items: list[T]
    continue_token: str | None  # None: this was the last page
    remaining: int  # items after this page, as the list stands now


_WHOLE_NUMBER = re.compile(r"-?(0|[1-9][0-9]{0,19})")
"""An integer as JSON writes one. Not Python's ``int()``, which also takes ``+5``, `` 5``,
``5_0``, ``05`` and other scripts' digits (``\u0665``): the OpenAPI document says integer, and the
service refuses what the document refuses."""


def parse_limit(raw: str | None) -> int:
    if raw is None or raw == "":
        return DEFAULT_LIMIT
    if not _WHOLE_NUMBER.fullmatch(raw) or not 1 <= int(raw) <= MAX_LIMIT:
        raise BadRequest(f"limit {raw!r} must be a whole number from 1 to {MAX_LIMIT}")
    return int(raw)


def encode_continue(after: str) -> str:
    raw = json.dumps({"v": _TOKEN_VERSION, "after": after}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_continue(token: str | None) -> str | None:
    """The name a page starts after, or None for the first page; BadRequest for a bad token."""
    if token is None or token == "":
        return None
    bad = BadRequest("continue is not a token this service handed out")
    if len(token) > 1024:
        raise bad
    try:
        decoded = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    except (binascii.Error, ValueError):
        raise bad from None
    if not isinstance(decoded, dict) or decoded.get("v") != _TOKEN_VERSION:
        raise bad
    after = decoded.get("after")
    if not isinstance(after, str) or not after:
        raise bad
    return after


def page(items: Sequence[T], name: Callable[[T], str], limit: int, after: str | None) -> Page[T]:
    """The page of ``items`` (sorted by ``name``) that starts after the name ``after``."""
    names = [name(item) for item in items]
    start = 0 if after is None else bisect.bisect_right(names, after)
    chosen = list(items[start : start + limit])
    remaining = max(0, len(items) - start - len(chosen))
    token = encode_continue(name(chosen[-1])) if remaining and chosen else None
    return Page(chosen, token, remaining)
