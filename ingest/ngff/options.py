"""The pyramid options an operator sets (ALLMICRO_PYRAMID_*), as the writer's keyword arguments."""

from __future__ import annotations

from typing import TYPE_CHECKING, TypedDict

if TYPE_CHECKING:  # not at run time: `allmicro convert` has no settings and need not load them
    from allmicro_data.settings import Settings


class PyramidOptions(TypedDict):
    """Keyword arguments of write_pyramid that the server's settings decide."""

    ngff: str
    chunk: int | None
    codec: str | None
    shard: bool | None


def pyramid_options(settings: Settings) -> PyramidOptions:
    """What the ingest job passes to write_pyramid: NGFF version, chunk side, codec, sharding."""
    return PyramidOptions(
        ngff=settings.pyramid_ngff,
        chunk=settings.pyramid_chunk,
        codec=settings.pyramid_codec,
        # Sharding is a zarr v3 feature: an NGFF 0.4 pyramid has none, whatever this says.
        shard=settings.pyramid_shard if settings.pyramid_ngff == "0.5" else None,
    )
