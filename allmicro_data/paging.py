"""Paged listings: which slice of a SELECT a caller asks for, and that slice with its count."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

Row = TypeVar("Row")


@dataclass(frozen=True)
class Window:
    """How many rows to return and how many to skip first."""

    limit: int = 100
    offset: int = 0

    def slice(self, stmt: Select[Any]) -> Select[Any]:
        """The statement cut to this window (order it first: a window of an unordered result
        is not stable between pages)."""
        return stmt.limit(self.limit).offset(self.offset)


@dataclass(frozen=True)
class Found(Generic[Row]):
    """One window of rows and how many match in all."""

    items: Sequence[Row]
    total: int  # exact when total_exact, else a lower bound (count_limit)
    total_exact: bool
    window: Window


def count(
    session: Session, stmt: Select[Any], *, count_limit: int | None = None
) -> tuple[int, bool]:
    """How many rows stmt selects, and whether that is exact: with count_limit, counting stops
    past it and the answer is (count_limit, False)."""
    if count_limit is not None:
        stmt = stmt.limit(count_limit + 1)
    total = session.scalar(select(func.count()).select_from(stmt.subquery())) or 0
    if count_limit is not None and total > count_limit:
        return count_limit, False
    return total, True


def fetch(
    session: Session,
    stmt: Select[Row],
    window: Window,
    *,
    order_by: Sequence[Any],
    counted: Select[Any] | None = None,
    count_limit: int | None = None,
) -> Found[Row]:
    """The window of stmt in order_by order, and how many rows stmt selects (counted through
    counted, a cheaper SELECT of the same rows, when given)."""
    total, exact = count(session, stmt if counted is None else counted, count_limit=count_limit)
    rows = session.scalars(window.slice(stmt.order_by(*order_by))).all()
    return Found(rows, total, exact, window)
