"""Paged listings at the API edge: the limit and offset query parameters, and the page answered."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Generic, TypeVar

from fastapi import Depends, Query
from pydantic import BaseModel, Field

from allmicro_data.paging import Found, Window

T = TypeVar("T")
Row = TypeVar("Row")

# Page sizes and offsets, bounded so that no database is asked for an absurd OFFSET.
Limit = Annotated[int, Query(ge=1, le=1000, description="page size")]
Offset = Annotated[int, Query(ge=0, le=1_000_000_000, description="items to skip")]


def paged(default_limit: int = 100) -> Any:
    """The dependency reading ?limit=&offset= into a Window, limit defaulting to default_limit:
    `window: Annotated[Window, paged(20)]`."""

    def window(limit: Limit = default_limit, offset: Offset = 0) -> Window:
        return Window(limit=limit, offset=offset)

    return Depends(window)


WindowDep = Annotated[Window, paged()]


class Page(BaseModel, Generic[T]):
    items: list[T]
    total: int = Field(description="how many match; a lower bound when total_exact is false")
    total_exact: bool = Field(
        default=True, description="false when counting stopped early (image search: 10 000)"
    )
    limit: int
    offset: int

    @classmethod
    def of(cls, found: Found[Row], shape: Callable[[Row], T]) -> Page[T]:
        """The response for found, each row shaped by shape (an `XOut.of`)."""
        return cls(
            items=[shape(row) for row in found.items],
            total=found.total,
            total_exact=found.total_exact,
            limit=found.window.limit,
            offset=found.window.offset,
        )
