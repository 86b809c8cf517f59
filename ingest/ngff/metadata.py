"""A pyramid's metadata documents: written from the writer's plan, parsed back for the tile server.

NGFF 0.4 is zarr v2 (`.zgroup`, `.zattrs`, `<level>/.zarray`), NGFF 0.5 zarr v3 (`zarr.json` with
the NGFF attributes under `ome`, sharded or not). zarr-python writes and parses the array
documents and ome-zarr-models validates the NGFF attributes, so what we store and what we accept
is exactly what those libraries do; only the multiscales and omero blocks are put together here.
"""

from __future__ import annotations

import importlib
import json
import math
import threading
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from allmicro_data.ingest.ngff.codec import ChunkCodec, chunk_decoder
from allmicro_data.ingest.ngff.layout import LevelLayout, NgffVersion
from allmicro_data.ingest.readers.base import Channel, PixelSize
from allmicro_data.storage import ObjectNotFound, ObjectStore

if TYPE_CHECKING:
    import zarr
    from zarr.storage import MemoryStore

_AXIS_TYPES = {"t": "time", "c": "channel", "z": "space", "y": "space", "x": "space"}
_SPACE_UNIT = "micrometer"
# The documents of the image root, written last: the image exists once they do.
GROUP_DOCUMENTS = (".zattrs", ".zgroup", ".zmetadata", "zarr.json")


# ---- writing ---------------------------------------------------------------------------------


def preload_in_background() -> threading.Thread:
    """Import zarr-python (about 0.15 s) in a thread of its own, now: the writer needs it only
    for the documents it writes last, and a short conversion (`allmicro convert`, a process of
    its own) would otherwise wait for it at start or at the end. Joining the thread is optional;
    an import that another thread needs meanwhile waits for this one, as Python's import locks
    ensure."""
    thread = threading.Thread(target=_import_zarr, name="zarr-import", daemon=True)
    thread.start()
    return thread


def _import_zarr() -> None:
    import zarr.storage  # noqa: F401


def metadata_documents(
    version: NgffVersion,
    levels: list[LevelLayout],
    dtype: np.dtype[Any],
    axes: str,
    codec: ChunkCodec,
    group_attributes: dict[str, Any],
) -> tuple[dict[str, bytes], dict[str, bytes]]:
    """(array documents, group documents), each key relative to the image root.

    zarr-python writes them into memory, so they are exactly what zarr itself would write; the
    caller stores arrays first and the group last, making the image visible only when complete.
    The group documents carry the consolidated metadata (`.zmetadata` for zarr v2, the root
    `zarr.json`'s `consolidated_metadata` for v3), so a viewer opens the image in one request.
    """
    import zarr
    from zarr.storage import MemoryStore

    documents: dict[str, Any] = {}
    memory = MemoryStore(documents)
    zarr_format: Literal[2, 3] = 2 if version == "0.4" else 3
    zarr.create_group(memory, zarr_format=zarr_format, attributes=group_attributes)
    for level in levels:
        if zarr_format == 2:
            zarr.create_array(
                memory,
                name=level.path,
                shape=level.shape,
                chunks=level.chunks,
                dtype=dtype,
                compressors=codec.numcodec(),
                fill_value=0,
                zarr_format=2,
                chunk_key_encoding={"name": "v2", "separator": "/"},
            )
        else:
            zarr.create_array(
                memory,
                name=level.path,
                shape=level.shape,
                chunks=level.chunks,
                shards=level.shards,
                dtype=dtype,
                compressors=codec.zarr_v3(dtype),
                fill_value=0,
                zarr_format=3,
                dimension_names=list(axes),
            )
    consolidate(memory)
    encoded = {key: bytes(buf.to_bytes()) for key, buf in documents.items()}
    groups = {key: data for key, data in encoded.items() if "/" not in key}
    arrays = {key: data for key, data in encoded.items() if "/" in key}
    return arrays, groups


def consolidate(memory: MemoryStore) -> None:
    """Write the consolidated metadata of the hierarchy in memory, as zarr-python does."""
    import zarr

    with warnings.catch_warnings():
        # zarr-python warns that v3 consolidation is not in the zarr v3 spec; it is what
        # zarr-python and zarrita read, and readers that do not know it ignore it.
        warnings.simplefilter("ignore", UserWarning)
        zarr.consolidate_metadata(memory)


def ngff_attributes(
    version: NgffVersion,
    *,
    name: str,
    axes: str,
    pixel_size: PixelSize,
    shapes: list[tuple[int, ...]],
    method: str,
    windows: list[tuple[float, float]],
    ranges: list[tuple[float, float]],
    rgb: bool,
    channels: Sequence[Channel] = (),
) -> dict[str, Any]:
    """The group attributes: multiscales (axes, per-level scale) and the omero display block.

    `channels` are what the file says of each channel: their names become the omero labels and
    their display colours the default colours, so a DAPI/GFP/mCherry image opens as such.
    """
    axes_meta: list[dict[str, Any]] = []
    for a in axes:
        entry: dict[str, Any] = {"name": a, "type": _AXIS_TYPES[a]}
        # A unit is claimed only where the file gave a calibration; otherwise scales are pixels.
        if a in "zyx" and pixel_size.for_axis(a):
            entry["unit"] = _SPACE_UNIT
        axes_meta.append(entry)
    datasets = []
    base = shapes[0]
    for level, shape in enumerate(shapes):
        scale = []
        for i, a in enumerate(axes):
            if a in "zyx":
                size_m = pixel_size.for_axis(a)
                unit_size = size_m * 1e6 if size_m else 1.0
                scale.append(unit_size * _factor(base[i], shape[i]))
            else:
                scale.append(1.0)
        datasets.append(
            {"path": str(level), "coordinateTransformations": [{"type": "scale", "scale": scale}]}
        )
    multiscale: dict[str, Any] = {
        "name": name,
        "axes": axes_meta,
        "datasets": datasets,
        "type": method,
    }
    colours = ["FF0000", "00FF00", "0000FF"] if rgb else ["FFFFFF"]
    displays = []
    for i, ((lo, hi), (rmin, rmax)) in enumerate(zip(windows, ranges, strict=True)):
        known = channels[i] if i < len(channels) and not rgb else None
        displays.append(
            {
                "active": True,
                "color": (known.color if known and known.color else colours[i % len(colours)]),
                "label": known.name if known and known.name else f"channel {i}",
                "window": {"start": lo, "end": hi, "min": rmin, "max": rmax},
                "coefficient": 1,
                "family": "linear",
                "inverted": False,
            }
        )
    omero: dict[str, Any] = {
        "name": name,
        "channels": displays,
        "rdefs": {"model": "color" if rgb else "greyscale"},
    }
    if version == "0.4":
        multiscale["version"] = "0.4"
        omero["version"] = "0.4"
        return {"multiscales": [multiscale], "omero": omero}
    return {"ome": {"version": "0.5", "multiscales": [multiscale], "omero": omero}}


def _factor(full: int, reduced: int) -> float:
    # Levels made here halve with rounding up, so ceil(n / 2**k) == reduced gives exactly 2**k;
    # reused levels from a file may follow another rule, so fall back to the plain ratio.
    if reduced == full:
        return 1.0
    k = round(math.log2(full / reduced))
    if k >= 1 and -(-full // 2**k) == reduced:
        return float(2**k)
    return full / reduced


# ---- parsing ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class StoredArray:
    """One level as stored: what a reader needs to find and decode its chunks itself."""

    path: str
    shape: tuple[int, ...]
    chunks: tuple[int, ...]  # the (inner) chunk: the unit of compression
    shards: tuple[int, ...] | None  # the object holding several chunks, when sharded
    dtype: np.dtype[Any]
    fill_value: Any
    # numcodecs codec for one stored chunk (None: stored raw); meaningful when direct.
    decoder: Any
    # True when a chunk is the decoder's output as C-ordered little-endian bytes (shards with
    # their index at the end): readable without zarr-python. False: read through zarr.
    direct: bool
    key_prefix: str  # between the level path and the chunk's index: "" (v2) or "c/" (v3)
    separator: str  # between the indices of a chunk key

    def object_key(self, index: tuple[int, ...]) -> str:
        """The key (below the image) of the object holding chunk index (of the shard, if sharded)."""
        if self.shards is not None:
            index = tuple(
                i * c // s for i, c, s in zip(index, self.chunks, self.shards, strict=True)
            )
        return f"{self.path}/{self.key_prefix}{self.separator.join(map(str, index))}"

    @property
    def chunks_per_shard(self) -> tuple[int, ...]:
        assert self.shards is not None
        return tuple(s // c for s, c in zip(self.shards, self.chunks, strict=True))

    def shard_slot(self, index: tuple[int, ...]) -> int:
        """The position of chunk index in its shard's index (C order)."""
        per = self.chunks_per_shard
        return int(np.ravel_multi_index(tuple(i % n for i, n in zip(index, per, strict=True)), per))


@dataclass(frozen=True)
class ChannelDisplay:
    """How one channel is shown by default: its omero label, colour, window and data range."""

    label: str
    colour: str
    window: tuple[float, float]
    range: tuple[float, float]


@dataclass(frozen=True)
class StoredPyramid:
    """A multiscale image as stored: its NGFF version, axes, per-level scales, arrays and display."""

    ngff_version: NgffVersion
    name: str
    axes: str
    scales: list[list[float]]  # the scale transform of each level, in axes order
    levels: list[StoredArray]
    channels: list[ChannelDisplay]
    colour_model: str  # omero rdefs model: "color" or "greyscale"

    @property
    def zarr_format(self) -> Literal[2, 3]:
        return 2 if self.ngff_version == "0.4" else 3


# The NGFF models cost half a second of imports that writing a pyramid never needs (`allmicro
# convert`, job processes): they are loaded by the first reader, or by a server's warm-up.
NGFF_MODEL_MODULES = ("ome_zarr_models.v04.image", "ome_zarr_models.v05.image")


def load_ngff_models() -> None:
    """Import the NGFF models read_pyramid_metadata validates with, ahead of its first call."""
    for name in NGFF_MODEL_MODULES:
        importlib.import_module(name)


def read_pyramid_metadata(store: ObjectStore, key: str) -> StoredPyramid:
    """Parse the metadata of the pyramid at key: one request for the root, one per level.

    Raises ObjectNotFound when key holds no pyramid and ValueError when its metadata is not
    valid NGFF 0.4 or 0.5.
    """
    # See NGFF_MODEL_MODULES.
    from ome_zarr_models.v04.image import ImageAttrs as ImageAttrsV04
    from ome_zarr_models.v05.image import ImageAttrs as ImageAttrsV05

    version: NgffVersion
    try:
        attrs: dict[str, Any] = json.loads(store.get_bytes(f"{key}/.zattrs"))
        version = "0.4"
        image: ImageAttrsV04 | ImageAttrsV05 = ImageAttrsV04.model_validate(attrs)
        omero_doc = attrs.get("omero")
    except ObjectNotFound:
        root = json.loads(store.get_bytes(f"{key}/zarr.json"))
        attrs = root.get("attributes", {}).get("ome", {})
        version = "0.5"
        image = ImageAttrsV05.model_validate(attrs)
        omero_doc = attrs.get("omero")
    multiscale = image.multiscales[0]
    axes = "".join(str(axis.name) for axis in multiscale.axes)
    scales = [
        _scale(dataset.coordinateTransformations, len(axes)) for dataset in multiscale.datasets
    ]
    paths = [dataset.path for dataset in multiscale.datasets]
    levels = _read_arrays(store, key, paths, version)
    channels, colour_model = _display(omero_doc)
    return StoredPyramid(
        ngff_version=version,
        name=str(multiscale.name or ""),
        axes=axes,
        scales=scales,
        levels=levels,
        channels=channels,
        colour_model=colour_model,
    )


def _scale(transforms: Any, n_axes: int) -> list[float]:
    for transform in transforms:
        if transform.type == "scale":
            return [float(s) for s in transform.scale]
    return [1.0] * n_axes


def _read_arrays(
    store: ObjectStore, key: str, paths: list[str], version: NgffVersion
) -> list[StoredArray]:
    import zarr
    from zarr.abc.store import Store
    from zarr.buffer import cpu
    from zarr.storage import MemoryStore

    document = ".zarray" if version == "0.4" else "zarr.json"
    zarr_format: Literal[2, 3] = 2 if version == "0.4" else 3
    # The documents are fetched here, one request each, and zarr parses them from memory: no
    # probing for other zarr formats or consolidated metadata against the real store. The
    # group document only lets zarr open all levels in one call (one hop to its event loop
    # instead of one per level, about 1 ms each on a loaded machine); its attributes are unused.
    docs: dict[str, Any] = {
        f"{path}/{document}": cpu.Buffer.from_bytes(store.get_bytes(f"{key}/{path}/{document}"))
        for path in paths
    }
    group_doc = {"zarr_format": 2} if zarr_format == 2 else {"zarr_format": 3, "node_type": "group"}
    docs[".zgroup" if zarr_format == 2 else "zarr.json"] = cpu.Buffer.from_bytes(
        json.dumps(group_doc).encode()
    )
    memory: Store = MemoryStore(docs, read_only=True)
    group = zarr.open_group(memory, mode="r", zarr_format=zarr_format, use_consolidated=False)
    members = dict(group.members())
    arrays = []
    for path in paths:
        # Levels are children of the image in every pyramid we write; a deeper path is opened
        # on its own.
        array = members[path] if path in members else group.get(path)
        if not isinstance(array, zarr.Array):
            raise ValueError(f"level {path!r} of the pyramid at {key} is not an array")
        arrays.append(_stored_array(path, array))
    return arrays


def _stored_array(path: str, array: zarr.Array[Any]) -> StoredArray:
    from zarr.codecs import BytesCodec, Endian

    meta: Any = array.metadata
    dtype = np.dtype(array.dtype)
    compressors = array.compressors
    decoder = chunk_decoder(compressors[0]) if compressors else None
    little = dtype.byteorder in "<|" or (dtype.byteorder == "=" and np.little_endian)
    direct = (
        len(compressors) <= 1
        and not array.filters
        and (not compressors or decoder is not None)
        and little
    )
    if array.metadata.zarr_format == 2:
        direct = direct and meta.order == "C"
        key_prefix, separator = "", meta.dimension_separator or "."
    else:
        serializer = array.serializer
        direct = direct and (
            serializer is None
            or (isinstance(serializer, BytesCodec) and serializer.endian in (None, Endian.little))
        )
        if array.shards is not None:
            direct = direct and _plain_shard_index(meta.codecs[0])
        encoding = meta.chunk_key_encoding
        key_prefix = "c/" if encoding.name == "default" else ""
        separator = encoding.separator
    return StoredArray(
        path=path,
        shape=tuple(array.shape),
        chunks=tuple(array.chunks),
        shards=tuple(array.shards) if array.shards is not None else None,
        dtype=dtype,
        fill_value=array.fill_value,
        decoder=decoder,
        direct=direct,
        key_prefix=key_prefix,
        separator=separator,
    )


def _plain_shard_index(codec: Any) -> bool:
    # The index layout parse_shard_index reads: little-endian (offset, length) pairs and a
    # crc32c, at the end of the shard.
    from zarr.codecs import (
        BytesCodec,
        Crc32cCodec,
        Endian,
        ShardingCodec,
        ShardingCodecIndexLocation,
    )

    return (
        isinstance(codec, ShardingCodec)
        and codec.index_location == ShardingCodecIndexLocation.end
        and len(codec.index_codecs) == 2
        and isinstance(codec.index_codecs[0], BytesCodec)
        and codec.index_codecs[0].endian in (None, Endian.little)
        and isinstance(codec.index_codecs[1], Crc32cCodec)
    )


def _display(omero_doc: Any) -> tuple[list[ChannelDisplay], str]:
    from ome_zarr_models.v04.omero import Omero

    if not omero_doc:
        return [], "greyscale"
    # NGFF 0.5 has no omero model of its own; the block is the same as in 0.4.
    omero = Omero.model_validate(omero_doc)
    channels = []
    for i, channel in enumerate(omero.channels):
        extra = channel.model_extra or {}
        window = channel.window
        channels.append(
            ChannelDisplay(
                label=str(extra.get("label", f"channel {i}")),
                colour=channel.color,
                window=(window.start, window.end),
                range=(window.min, window.max),
            )
        )
    rdefs = (omero.model_extra or {}).get("rdefs") or {}
    return channels, str(rdefs.get("model", "greyscale"))
