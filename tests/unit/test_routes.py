from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.requests import Request

from nsprov.api import routes

_APP = Starlette(routes=routes.routes)


@settings(derandomize=True, database=None, deadline=None, max_examples=300)
@given(
    name=st.from_regex(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?", fullmatch=True),
    root_path=st.sampled_from(["", "/", "/nsprov", "/nsprov/"]),
)
def test_location_is_url_for_path(name: str, root_path: str) -> None:
    """The Location of a namespace is what url_for says, for any DNS label as its name."""
    request = Request(
        {
            "type": "http",
            "method": "POST",
            "path": "/api/v1/namespaces",
            "root_path": root_path,
            "scheme": "http",
            "server": ("127.0.0.1", 8080),
            "query_string": b"",
            "headers": [(b"host", b"127.0.0.1:8080")],
            "app": _APP,
            "router": _APP.router,
        }
    )
    assert routes._location(request, name) == request.url_for("namespace", name=name).path
