"""How big a bearer token may be before anything parses it.

Both the authenticator (``identity.authenticator``, which reads the ``Authorization`` header
and tells static tokens from ID tokens) and the ID-token verifier (``oidc``)
refuse oversized tokens, and the verifier is loaded lazily by the authenticator.
The limits live here, below both, so neither has to import the other for them.
"""

from __future__ import annotations

MAX_TOKEN_BYTES = 16 * 1024
"""Longer bearer tokens are refused before anything parses them (a parser must not chew on
megabytes an attacker sent)."""
MAX_HEADER_BYTES = 4 * 1024
"""Longer JOSE headers are refused before anything decodes them: a header is a few short
fields, and a deeply nested one would exhaust the JSON parser's recursion."""
