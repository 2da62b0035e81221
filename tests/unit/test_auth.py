from __future__ import annotations

import os
from pathlib import Path

import pytest

from nsprov.core.errors import Unauthorized
from nsprov.identity.auth import TokenFileError, TokenStore, parse_token_file

ALICE = "alice-token-0123456789abcdef"
BOB = "bob-token-0123456789abcdef"


def test_parse_name_token_lines() -> None:
    assert parse_token_file(f"alice: {ALICE}\nbob: '{BOB}'\n") == {"alice": ALICE, "bob": BOB}
    assert parse_token_file("# nobody yet\n") == {}


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("just-a-token-without-a-name", "expected 'name: token'"),
        ("alice: short", "at least 16"),
        ("alice: 12345678901234567890", "must be a string"),
        ("'bad name': 0123456789abcdefgh", "invalid token name"),
        ("alice: [unclosed", "not valid"),
    ],
)
def test_malformed_token_files_are_refused(text: str, reason: str) -> None:
    with pytest.raises(TokenFileError, match=reason) as error:
        parse_token_file(text)
    assert "0123456789abcdefgh" not in str(error.value)


def test_authenticate_resolves_owner() -> None:
    store = TokenStore({"alice": ALICE, "bob": BOB})
    assert store.authenticate(f"Bearer {ALICE}") == "alice"
    assert store.authenticate(f"bearer {BOB}") == "bob"
    assert store.authenticate(f"  BEARER   {BOB} ") == "bob"
    assert store.owners == ["alice", "bob"]


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        (None, "missing"),
        ("", "missing"),
        (f"Basic {ALICE}", "Bearer scheme"),
        ("Bearer", "Bearer scheme"),
        ("Bearer ", "Bearer scheme"),
        (f"Bearer {ALICE}x", "invalid token"),
        (f"Bearer {ALICE[:-1]}", "invalid token"),
    ],
)
def test_authenticate_refuses(header: str | None, reason: str) -> None:
    store = TokenStore({"alice": ALICE})
    with pytest.raises(Unauthorized, match=reason):
        store.authenticate(header)


def test_no_token_at_all_is_refused(tmp_path: Path) -> None:
    with pytest.raises(TokenFileError, match="no token configured"):
        TokenStore({})
    empty = tmp_path / "tokens"
    empty.write_text("")
    with pytest.raises(TokenFileError, match="no token configured"):
        TokenStore({}, empty)


def test_unreadable_token_file_fails_at_start(tmp_path: Path) -> None:
    with pytest.raises(TokenFileError, match="token file"):
        TokenStore({}, tmp_path / "missing")


def test_token_file_is_reloaded_and_bad_edits_keep_old_tokens(tmp_path: Path) -> None:
    path = tmp_path / "tokens"
    path.write_text(f"alice: {ALICE}\n")
    store = TokenStore({}, path, recheck_seconds=0)
    assert store.authenticate(f"Bearer {ALICE}") == "alice"

    path.write_text(f"bob: {BOB}\n")
    os.utime(path, ns=(1, 1))  # a different mtime even on coarse clocks
    assert store.authenticate(f"Bearer {BOB}") == "bob"
    with pytest.raises(Unauthorized):
        store.authenticate(f"Bearer {ALICE}")

    path.write_text("bob: [broken\n")
    assert store.authenticate(f"Bearer {BOB}") == "bob"


def test_static_and_file_tokens_combine(tmp_path: Path) -> None:
    path = tmp_path / "tokens"
    path.write_text(f"bob: {BOB}\n")
    store = TokenStore({"default": ALICE}, path)
    assert store.authenticate(f"Bearer {ALICE}") == "default"
    assert store.authenticate(f"Bearer {BOB}") == "bob"


def test_parse_errors_never_quote_the_file() -> None:
    secret = "s3cr3t-token-value-0123456789"
    with pytest.raises(TokenFileError) as error:
        parse_token_file(f"alice: {secret}\nbob: [{secret}\n")
    assert secret not in str(error.value)
    assert "line" in str(error.value)


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _store(tmp_path: Path) -> tuple[Path, TokenStore, _Clock, list[str]]:
    path = tmp_path / "tokens"
    path.write_text(f"alice: {ALICE}\n")
    clock, errors = _Clock(), []
    store = TokenStore({"bob": BOB}, path, recheck_seconds=0, on_error=errors.append, clock=clock)
    return path, store, clock, errors


def test_a_malformed_token_file_keeps_the_last_good_tokens_and_says_so(tmp_path: Path) -> None:
    path, store, _, errors = _store(tmp_path)
    path.write_text(f"alice: [{ALICE}\n")
    for _ in range(3):
        assert store.authenticate(f"Bearer {ALICE}") == "alice"
    assert errors == ["malformed"]  # once per bad version, not once per check
    assert store.problem is not None
    assert "malformed" in store.problem
    assert "last good tokens" in store.problem
    assert ALICE not in store.problem

    path.write_text(f"alice: {ALICE}\n")
    os.utime(path, ns=(2, 2))
    assert store.authenticate(f"Bearer {ALICE}") == "alice"
    assert store.problem is None


def test_a_deleted_token_file_revokes_its_tokens(tmp_path: Path) -> None:
    path, store, clock, errors = _store(tmp_path)
    path.unlink()
    # Seen missing once: maybe a swap caught mid-way, so nothing is revoked yet.
    assert store.authenticate(f"Bearer {ALICE}") == "alice"
    clock.now += 1.0
    with pytest.raises(Unauthorized):
        store.authenticate(f"Bearer {ALICE}")
    assert store.authenticate(f"Bearer {BOB}") == "bob"  # static tokens are not the file's
    assert errors == ["missing"]
    assert store.problem is not None
    assert "revoked" in store.problem

    path.write_text(f"alice: {ALICE}\n")
    assert store.authenticate(f"Bearer {ALICE}") == "alice"
    assert store.problem is None


def test_a_file_missing_only_for_a_moment_revokes_nothing(tmp_path: Path) -> None:
    path, store, clock, errors = _store(tmp_path)
    content = path.read_text()
    path.unlink()
    assert store.authenticate(f"Bearer {ALICE}") == "alice"
    path.write_text(content)  # the new version is in place before the grace ran out
    clock.now += 0.5
    assert store.authenticate(f"Bearer {ALICE}") == "alice"
    clock.now += 5
    assert store.authenticate(f"Bearer {ALICE}") == "alice"
    assert errors == []
    assert store.problem is None
