"""Password hashing with argon2id, and the dummy hash that keeps unknown-user logins as slow as real ones."""

from __future__ import annotations

from functools import lru_cache

from pwdlib import PasswordHash
from pwdlib.hashers.argon2 import Argon2Hasher

MIN_PASSWORD_LENGTH = 10


class WeakPassword(ValueError):
    """A new password does not meet the policy."""


@lru_cache(maxsize=1)
def _hasher() -> PasswordHash:
    # argon2id with the library's defaults (RFC 9106 second recommended option).
    return PasswordHash((Argon2Hasher(),))


def check_policy(password: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise WeakPassword(f"passwords need at least {MIN_PASSWORD_LENGTH} characters")


def hash_password(password: str) -> str:
    check_policy(password)
    return _hasher().hash(password)


def verify_password(password: str, password_hash: str | None) -> bool:
    """True when the password matches; with no hash, spends the same time and answers False."""
    if password_hash is None:
        _hasher().verify(password, _dummy_hash())
        return False
    try:
        return _hasher().verify(password, password_hash)
    except ValueError:
        return False


@lru_cache(maxsize=1)
def _dummy_hash() -> str:
    return _hasher().hash("not a password of anybody's")
