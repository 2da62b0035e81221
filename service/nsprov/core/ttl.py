"""Go duration syntax (``30s``, ``5m``, ``1h30m``, ``1.5h``), as the original Go tool took it,
plus days (``1d``, ``2d12h``).

We accept everything Go's ``time.ParseDuration`` accepts, so clients of the
original provisioner keep working; only the sign is restricted, since a
namespace cannot live for a negative time. Days are the one addition: a
preview or a kept namespace lives for days, and ``48h`` is how nobody thinks of
two days. A day is 24 hours here (no calendar, no daylight saving), as in
Prometheus and systemd durations; the client and the Action accept the same.

Digits are ASCII only, as in Go: Python's regex digit class also matches other
scripts' digits (U+0661 ARABIC-INDIC DIGIT ONE), which Go refuses and which no
client means.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

from nsprov.core.errors import BadRequest

_UNIT_SECONDS = {
    "ns": Decimal("1e-9"),
    "us": Decimal("1e-6"),
    "\u00b5s": Decimal("1e-6"),  # micro sign
    "\u03bcs": Decimal("1e-6"),  # Greek mu
    "ms": Decimal("1e-3"),
    "s": Decimal(1),
    "m": Decimal(60),
    "h": Decimal(3600),
    "d": Decimal(86400),
}
_NUMBER = r"[0-9]+\.?[0-9]*|\.[0-9]+"
_UNITS = "ns|us|\u00b5s|\u03bcs|ms|s|m|h|d"
_TERM = re.compile(rf"({_NUMBER})({_UNITS})")
MAX_TTL_LENGTH = 64
"""Characters a request's ttl may have: more is no duration anyone means (1d12h30m5s is 9)."""
TTL_PATTERN = re.compile(rf"\+?(0|(({_NUMBER})({_UNITS}))+)")
"""The syntax of a request's ttl (``?ttl=``), as the OpenAPI document declares it: a Go
duration without a minus sign (a namespace cannot live for a negative time, and ``-0s`` is
no way to ask for the default) and without surrounding spaces (Go refuses those too). The
same expression in both dialects, Python's ``re`` and JSON Schema's ECMA-262, so the
service refuses exactly what the document does (tests/integration/test_openapi_fuzz.py)."""


def parse_duration(text: str) -> float:
    """Parse a Go duration (or one with days) into seconds; raise BadRequest with the reason."""
    raw = text.strip()
    if not raw:
        raise BadRequest("empty duration")
    sign = Decimal(1)
    body = raw
    if body[0] in "+-":
        sign = Decimal(-1) if body[0] == "-" else Decimal(1)
        body = body[1:]
    if body == "0":
        return 0.0
    if not body:
        raise BadRequest(f"invalid duration {raw!r}")
    total = Decimal(0)
    position = 0
    while position < len(body):
        match = _TERM.match(body, position)
        if match is None:
            if re.fullmatch(_NUMBER, body[position:]):
                raise BadRequest(
                    f"missing unit in duration {raw!r} (use ns, us, ms, s, m, h or d, e.g. 30m)"
                )
            raise BadRequest(f"invalid duration {raw!r} (expected e.g. 30s, 5m, 1h30m, 2d)")
        try:
            total += Decimal(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        except InvalidOperation as exc:
            raise BadRequest(f"invalid duration {raw!r}") from exc
        position = match.end()
    return float(sign * total)


def parse_ttl(text: str | None, *, default: float, maximum: float, minimum: float = 0.0) -> float:
    """A request's ttl in seconds: absent or 0 means the default; not TTL_PATTERN (a minus
    sign included), longer than MAX_TTL_LENGTH, below ``minimum`` or above ``maximum`` is 400.

    The minimum exists because a ttl of ``1ns`` would create a namespace that is dead
    before its kubeconfig reaches the client: nothing useful, and work for the controller.
    """
    if text is None or text == "":
        return default
    if len(text) > MAX_TTL_LENGTH:
        raise BadRequest(f"ttl is longer than {MAX_TTL_LENGTH} characters (expected e.g. 30m)")
    if not TTL_PATTERN.fullmatch(text):
        if text.startswith("-"):
            raise BadRequest(f"ttl {text!r} is negative")
        parse_duration(text)  # raises, saying what is wrong, for all but what follows
        raise BadRequest(f"ttl {text!r} has spaces around it (expected e.g. 30m)")
    seconds = parse_duration(text)
    if seconds == 0:
        return default
    if seconds < minimum:
        raise BadRequest(f"ttl {text!r} is below the minimum of {format_duration(minimum)}")
    if seconds > maximum:
        raise BadRequest(f"ttl {text!r} exceeds the maximum of {format_duration(maximum)}")
    return seconds


def format_duration(seconds: float) -> str:
    """Render seconds the way Go prints a duration rounded to seconds (``1h30m0s``)."""
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"
