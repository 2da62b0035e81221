"""Bearer tokens -> the name of the token's owner.

Tokens are never kept or compared in the clear: we keep SHA-256 digests and
compare the presented token's digest with every configured one using
``hmac.compare_digest``, visiting all of them, so the time taken says nothing
about which token, or which prefix, came close.

The token file (``name: token`` per line, which is also YAML) is re-read when
its identity changes (mtime, size or inode: Kubernetes updates mounted Secrets
by swapping a symlink), so tokens rotate without a restart.

What a broken file does, and why:

- A file that fails to parse keeps the last good tokens in force: a typo in the
  Secret must not lock every CI job out (or, through /readyz, take every replica
  out of the Service). It is reported, once per bad version of the file, in the
  log, through ``on_error`` (a metric) and in ``problem`` (the /readyz detail).
- A deleted file revokes its tokens: deleting the Secret's key is how an
  operator says "these tokens are over". A file seen missing is only believed
  gone when it is still missing ``MISSING_GRACE_SECONDS`` later, so an editor's
  delete-and-rename or a symlink swap caught mid-way revokes nothing.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path

import yaml

from nsprov.core.errors import Unauthorized

# Its name from before the folders: log filters and the tests select on it.
log = logging.getLogger("nsprov.auth")

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,62}")
_RECHECK_SECONDS = 1.0
MISSING_GRACE_SECONDS = 1.0


class TokenFileError(ValueError):
    """The token file is unreadable or malformed."""


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def parse_token_file(text: str) -> dict[str, str]:
    """``name: token`` pairs -> {name: token}; raise TokenFileError saying what is wrong."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        # The parser's message quotes the offending line, which may hold a token.
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise TokenFileError(f"not valid 'name: token' lines{where}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise TokenFileError("expected 'name: token' lines")
    tokens: dict[str, str] = {}
    for name, token in data.items():
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise TokenFileError(f"invalid token name {name!r}")
        if not isinstance(token, str) or len(token) < 16:
            # Never echo the value: it may be a real token with a typo.
            raise TokenFileError(f"token for {name!r} must be a string of at least 16 characters")
        tokens[name] = token
    return tokens


class TokenStore:
    """Resolves ``Authorization`` headers to owner names; thread-safe."""

    def __init__(
        self,
        static: dict[str, str],
        token_file: Path | None = None,
        *,
        recheck_seconds: float = _RECHECK_SECONDS,
        on_error: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._static = {name: _digest(token) for name, token in static.items()}
        self._file = token_file
        self._from_file: dict[str, bytes] = {}
        self._file_identity: tuple[int, int, int] | None = None
        self._bad_identity: tuple[int, int, int] | None = None  # reported already
        self._missing_since: float | None = None
        self._problem: str | None = None
        self._on_error = on_error
        self._clock = clock
        self._next_check = 0.0
        self._recheck = recheck_seconds
        self._lock = threading.Lock()
        if token_file is not None:
            self._reload(strict=True)
        if not self._static and not self._from_file:
            raise TokenFileError("no token configured")

    @property
    def owners(self) -> list[str]:
        return sorted({*self._static, *self._from_file})

    @property
    def problem(self) -> str | None:
        """What is wrong with the token file now (for /readyz), or None."""
        self.check()
        return self._problem

    def _reload(self, *, strict: bool) -> None:
        assert self._file is not None
        try:
            stat = os.stat(self._file)
            identity = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
            if identity in (self._file_identity, self._bad_identity):
                self._missing_since = None
                return
            tokens = parse_token_file(self._file.read_text())
        except FileNotFoundError as exc:
            if strict:
                raise TokenFileError(f"token file {self._file}: {exc}") from None
            self._file_missing()
            return
        except (OSError, TokenFileError) as exc:
            if strict:
                raise TokenFileError(f"token file {self._file}: {exc}") from None
            self._missing_since = None
            self._bad_identity = identity
            self._report("malformed" if isinstance(exc, TokenFileError) else "unreadable",
                         f"{exc}; the last good tokens stay in force")  # fmt: skip
            return
        self._from_file = {name: _digest(token) for name, token in tokens.items()}
        self._file_identity, self._bad_identity = identity, None
        self._missing_since, self._problem = None, None
        log.info("token file %s loaded: %d token(s)", self._file, len(tokens))

    def _file_missing(self) -> None:
        now = self._clock()
        if self._missing_since is None:
            # Maybe only mid-swap: believe it when it is still missing a moment later.
            self._missing_since = now
            self._next_check = min(self._next_check, now + MISSING_GRACE_SECONDS)
            return
        if now - self._missing_since < MISSING_GRACE_SECONDS or self._file_identity is None:
            return
        revoked = len(self._from_file)
        self._from_file, self._file_identity, self._bad_identity = {}, None, None
        self._report("missing", f"deleted; its {revoked} token(s) are revoked")

    def _report(self, reason: str, problem: str) -> None:
        self._problem = f"token file {self._file} {reason}: {problem}"
        log.error("%s", self._problem)
        if self._on_error is not None:
            self._on_error(reason)

    def check(self) -> None:
        """Re-read the token file if it is due (every request does; /readyz too)."""
        if self._file is None:
            return
        now = self._clock()
        with self._lock:
            if now < self._next_check:
                return
            self._next_check = now + self._recheck
            self._reload(strict=False)

    def authenticate(self, header: str | None) -> str:
        """The owner of the bearer token in ``header``; Unauthorized otherwise."""
        if not header:
            raise Unauthorized("missing Authorization header (expected 'Bearer <token>')")
        scheme, _, token = header.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized("Authorization must use the Bearer scheme")
        self.check()
        presented = _digest(token.strip())
        owner = None
        for name, digest in (*self._static.items(), *self._from_file.items()):
            if hmac.compare_digest(presented, digest) and owner is None:
                owner = name
        if owner is None:
            raise Unauthorized("invalid token")
        return owner
