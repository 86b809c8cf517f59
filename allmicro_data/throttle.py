"""Attempt limits that hold under parallel requests: each attempt takes a slot by one
conditional UPDATE (never read-then-write), in a transaction of its own, before it is tried."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import CursorResult, delete, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from allmicro_data.catalogue.models import AttemptCounter, utcnow

EVERYONE = "*"  # the client key of a bucket's overall limit


def _rowcount(result: object) -> int:
    assert isinstance(result, CursorResult)
    return result.rowcount


def _take_one(
    session: Session, bucket: str, client: str, limit: int, window: timedelta, now: datetime
) -> bool:
    key = (AttemptCounter.bucket == bucket, AttemptCounter.client == client)
    # The WHERE clause is the check: the database applies it to the row it locks, so of many
    # parallel attempts exactly `limit` succeed.
    taken = session.execute(
        update(AttemptCounter)
        .where(*key, AttemptCounter.window_start > now - window, AttemptCounter.attempts < limit)
        .values(attempts=AttemptCounter.attempts + 1)
    )
    if _rowcount(taken):
        return True
    renewed = session.execute(
        update(AttemptCounter)
        .where(*key, AttemptCounter.window_start <= now - window)
        .values(attempts=1, window_start=now)
    )
    if _rowcount(renewed):
        return True
    if session.get(AttemptCounter, (bucket, client)) is not None:
        return False  # the window is full
    try:
        with session.begin_nested():
            session.add(AttemptCounter(bucket=bucket, client=client, window_start=now, attempts=1))
    except IntegrityError:
        # Another request created the row first: count against it like any other attempt.
        return _take_one(session, bucket, client, limit, window, now)
    return limit > 0


def take(engine: Engine, bucket: str, limits: dict[str, int], window: timedelta) -> str | None:
    """Take one attempt from each client key of `limits` (e.g. an address, and EVERYONE);
    None if all were free, else the key whose window is full (nothing is then taken)."""
    now = utcnow()
    taken: list[str] = []
    with Session(engine) as session:
        for client, limit in limits.items():
            with session.begin():
                ok = _take_one(session, bucket, client[:64], limit, window, now)
            if not ok:
                give_back(engine, bucket, taken)
                return client
            taken.append(client)
    return None


def give_back(engine: Engine, bucket: str, clients: list[str]) -> None:
    """Return attempts that did not count (the right password)."""
    if not clients:
        return
    with Session(engine) as session, session.begin():
        for client in clients:
            session.execute(
                update(AttemptCounter)
                .where(
                    AttemptCounter.bucket == bucket,
                    AttemptCounter.client == client[:64],
                    AttemptCounter.attempts > 0,
                )
                .values(attempts=AttemptCounter.attempts - 1)
            )


def succeeded(engine: Engine, bucket: str, client: str) -> None:
    """The attempt was right (the link's password): it does not count against the bucket's
    overall limit, and the client's window starts afresh."""
    with Session(engine) as session, session.begin():
        session.execute(
            update(AttemptCounter)
            .where(
                AttemptCounter.bucket == bucket,
                AttemptCounter.client == EVERYONE,
                AttemptCounter.attempts > 0,
            )
            .values(attempts=AttemptCounter.attempts - 1)
        )
        session.execute(
            delete(AttemptCounter).where(
                AttemptCounter.bucket == bucket, AttemptCounter.client == client[:64]
            )
        )
