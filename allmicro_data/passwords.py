"""Password hashing with argon2id, and the dummy hash that keeps unknown-user logins as slow as real ones."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from pwdlib import PasswordHash
from pwdlib.hashers.argon2 import Argon2Hasher

MIN_PASSWORD_LENGTH = 10


class WeakPassword(ValueError):
    """A new password does not meet the policy."""


@dataclass(frozen=True, slots=True)
class HashCost:
    """argon2id's parameters for new hashes (RFC 9106's second recommended option by default)."""

    time_cost: int = 3
    memory_kib: int = 65536
    parallelism: int = 4


_cost = HashCost()


def configure(cost: HashCost) -> None:
    """Hash new passwords with this cost from now on (the settings' argon2_* fields); existing
    hashes keep verifying, as each records the parameters it was made with."""
    global _cost
    if cost != _cost:
        _cost = cost
        _hasher.cache_clear()
        _dummy_hash.cache_clear()


@lru_cache(maxsize=1)
def _hasher() -> PasswordHash:
    return PasswordHash(
        (
            Argon2Hasher(
                time_cost=_cost.time_cost,
                memory_cost=_cost.memory_kib,
                parallelism=_cost.parallelism,
            ),
        )
    )


@lru_cache(maxsize=1)
def _common_passwords() -> frozenset[str]:
    """The most common passwords (zxcvbn's list of 30 000, from leaked password sets), in the
    form _normalised gives them: the ones long enough to pass the length rule are those an
    attacker tries first."""
    from zxcvbn.frequency_lists import FREQUENCY_LISTS

    return frozenset(_normalised(p) for p in FREQUENCY_LISTS["passwords"])


def _normalised(password: str) -> str:
    # "Password 123" is as easy to guess as "password123".
    return "".join(password.lower().split())


def check_policy(password: str) -> None:
    """Refuse a new password that is too short or one of the most common passwords."""
    if len(password) < MIN_PASSWORD_LENGTH:
        raise WeakPassword(f"passwords need at least {MIN_PASSWORD_LENGTH} characters")
    if _normalised(password) in _common_passwords():
        raise WeakPassword("this password is one of the most common ones; choose another")


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
