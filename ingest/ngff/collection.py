"""What readers open besides the stored pyramid: an image's consolidated metadata, and a set of
images as one bioformats2raw collection (the root of a dataset's capability URL).

Both are made from the metadata documents the pyramids store, by zarr-python's own
`consolidate_metadata` over an in-memory copy, so they are exactly what zarr-python would write
beside the images; nothing here touches the chunks.

A collection is the bioformats2raw layout (NGFF "bioformats2raw.layout" 3): a root group saying
so, the images as groups "0", "1", … (the numbering every reader of the layout follows), and an
`OME` group whose "series" lists them, beside `OME/METADATA.ome.xml` with one OME Image per series,
in the same order. The root is zarr v3 (NGFF 0.5) when every image is, otherwise zarr v2 (0.4).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import zarr
from zarr.buffer import cpu
from zarr.storage import MemoryStore

from allmicro_data.ingest.ngff.layout import NgffVersion
from allmicro_data.ingest.ngff.metadata import consolidate
from allmicro_data.storage import ObjectNotFound, ObjectStore

if TYPE_CHECKING:
    # Imported where a collection's OME-XML is made: the server imports this module at start,
    # and ome-types would add a second of CPU to every start.
    from ome_types.model import Image

BIOFORMATS2RAW_LAYOUT = 3
OME_GROUP = "OME"
OME_XML = "OME/METADATA.ome.xml"
# Beyond this many images a collection root is not consolidated: its one document would carry
# every level of every image, and making it would read all their documents. Readers then open
# the root and each image by their own documents.
MAX_CONSOLIDATED_IMAGES = 200
_ROOT_DOCUMENTS = {2: (".zgroup", ".zattrs", ".zmetadata"), 3: ("zarr.json",)}
# numpy's names to OME's PixelType values.
_PIXEL_TYPES = {
    "int8": "int8",
    "int16": "int16",
    "int32": "int32",
    "uint8": "uint8",
    "uint16": "uint16",
    "uint32": "uint32",
    "float32": "float",
    "float64": "double",
    "bool": "bit",
}


@dataclass(frozen=True)
class StoredDocuments:
    """The metadata documents of one stored pyramid, keys relative to its root."""

    ngff_version: NgffVersion
    documents: dict[str, bytes]

    @property
    def zarr_format(self) -> Literal[2, 3]:
        return 2 if self.ngff_version == "0.4" else 3

    def attributes(self) -> dict[str, Any]:
        """The NGFF attributes of the image (under `ome` in 0.5, at the top in 0.4)."""
        if self.zarr_format == 2:
            attrs: dict[str, Any] = json.loads(self.documents[".zattrs"])
            return attrs
        root = json.loads(self.documents["zarr.json"])
        ome: dict[str, Any] = root.get("attributes", {}).get("ome", {})
        return ome


def stored_documents(store: ObjectStore, key: str) -> StoredDocuments:
    """The root and level documents of the pyramid at key (one request each).

    Raises ObjectNotFound when key holds no pyramid.
    """
    docs: dict[str, bytes] = {}
    try:
        docs[".zattrs"] = store.get_bytes(f"{key}/.zattrs")
    except ObjectNotFound:
        docs["zarr.json"] = store.get_bytes(f"{key}/zarr.json")
        found = StoredDocuments("0.5", docs)
        for path in _level_paths(found.attributes()):
            docs[f"{path}/zarr.json"] = store.get_bytes(f"{key}/{path}/zarr.json")
        return found
    found = StoredDocuments("0.4", docs)
    names = [".zgroup", ".zmetadata"] + [
        f"{path}/{name}"
        for path in _level_paths(found.attributes())
        for name in (".zarray", ".zattrs")
    ]
    for name in names:
        try:
            docs[name] = store.get_bytes(f"{key}/{name}")
        except ObjectNotFound:
            if name.endswith(".zarray") or name == ".zgroup":
                raise
    return found


def _level_paths(attrs: dict[str, Any]) -> list[str]:
    multiscales = attrs.get("multiscales") or [{}]
    return [str(d["path"]) for d in multiscales[0].get("datasets", [])]


def consolidated_root(stored: StoredDocuments) -> dict[str, bytes]:
    """The image root's documents as served: with consolidated metadata, the stored one if the
    pyramid has it (what ingest writes), otherwise made from the stored documents."""
    docs = stored.documents
    if stored.zarr_format == 2:
        if ".zmetadata" in docs:
            return {name: docs[name] for name in _ROOT_DOCUMENTS[2]}
    elif json.loads(docs["zarr.json"]).get("consolidated_metadata"):
        return {"zarr.json": docs["zarr.json"]}
    memory: dict[str, Any] = {
        k: cpu.Buffer.from_bytes(v) for k, v in docs.items() if k != ".zmetadata"
    }
    consolidate(MemoryStore(memory))
    return {name: bytes(memory[name].to_bytes()) for name in _ROOT_DOCUMENTS[stored.zarr_format]}


@dataclass(frozen=True)
class CollectionImage:
    """One image of a collection, as the catalogue describes it (the OME-XML is made from this,
    without reading the store); with its stored documents when they go into the root's
    consolidated metadata."""

    name: str
    ngff_version: NgffVersion
    axes: str  # from "tczyx"
    shape: tuple[int, ...]  # full resolution, in axes order
    dtype: str  # numpy name
    pixel_size: dict[str, float] = field(default_factory=dict)  # metres, by axis x/y/z
    channel_names: tuple[str | None, ...] = ()
    stored: StoredDocuments | None = None

    @property
    def zarr_format(self) -> Literal[2, 3]:
        return 2 if self.ngff_version == "0.4" else 3


def collection_documents(images: Sequence[CollectionImage]) -> dict[str, bytes]:
    """Every document of a bioformats2raw collection of images, keys relative to its root: the
    root group, the OME group with its series and METADATA.ome.xml. The images themselves are
    served from their own pyramids under "0/", "1/", …; the root carries consolidated metadata
    when every image's stored documents are given."""
    zarr_format: Literal[2, 3] = 3 if images and all(i.zarr_format == 3 for i in images) else 2
    series = [str(i) for i in range(len(images))]
    if zarr_format == 2:
        root_attrs: dict[str, Any] = {"bioformats2raw.layout": BIOFORMATS2RAW_LAYOUT}
        ome_attrs: dict[str, Any] = {"series": series}
    else:
        root_attrs = {"ome": {"version": "0.5", "bioformats2raw.layout": BIOFORMATS2RAW_LAYOUT}}
        ome_attrs = {"ome": {"version": "0.5", "series": series}}
    documents: dict[str, Any] = {}
    memory = MemoryStore(documents)
    zarr.create_group(memory, zarr_format=zarr_format, attributes=root_attrs)
    zarr.create_group(memory, path=OME_GROUP, zarr_format=zarr_format, attributes=ome_attrs)
    own = set(documents)
    # Consolidated only when every image's documents are given: zarr-python looks a member of
    # a consolidated group up in its consolidated metadata alone.
    if all(image.stored is not None for image in images):
        for path, image in zip(series, images, strict=True):
            # A zarr v3 image under a v2 root is left out: readers open it on its own.
            if image.stored is not None and image.stored.zarr_format == zarr_format:
                for name, data in image.stored.documents.items():
                    if name != ".zmetadata":
                        documents[f"{path}/{name}"] = cpu.Buffer.from_bytes(data)
        consolidate(memory)
        own |= set(_ROOT_DOCUMENTS[zarr_format])
    served = {k: bytes(documents[k].to_bytes()) for k in own}
    served[OME_XML] = collection_ome_xml(images).encode("utf-8")
    return served


def collection_ome_xml(images: Sequence[CollectionImage]) -> str:
    """The OME-XML of a collection: one Image per series, in series order, metadata only (each
    image's full OME-XML is its own `OME/METADATA.ome.xml`)."""
    from ome_types import OME

    ome = OME(
        creator="AllMicro Data",
        images=[_ome_image(i, image) for i, image in enumerate(images)],
    )
    return str(ome.to_xml())


def _ome_image(index: int, image: CollectionImage) -> Image:
    from ome_types.model import Channel, Image, MetadataOnly, Pixels, PixelType

    shape = dict(zip(image.axes, image.shape, strict=True))
    physical: dict[str, Any] = {}
    for axis, metres in image.pixel_size.items():
        # 12 significant digits: the micrometres a person wrote, not 0.09999999999999999.
        physical[f"physical_size_{axis}"] = float(f"{metres * 1e6:.12g}")
        physical[f"physical_size_{axis}_unit"] = "µm"
    n_channels = shape.get("c", 1)
    names = image.channel_names
    return Image(
        id=f"Image:{index}",
        name=image.name,
        pixels=Pixels(
            id=f"Pixels:{index}",
            dimension_order="XYZCT",
            type=PixelType(_PIXEL_TYPES.get(_numpy_name(image.dtype), "uint16")),
            size_x=shape["x"],
            size_y=shape["y"],
            size_z=shape.get("z", 1),
            size_c=n_channels,
            size_t=shape.get("t", 1),
            channels=[
                Channel(
                    id=f"Channel:{index}:{c}",
                    name=names[c] if c < len(names) else None,
                    samples_per_pixel=1,
                )
                for c in range(n_channels)
            ],
            metadata_only=MetadataOnly(),
            **physical,
        ),
    )


def _numpy_name(dtype: str) -> str:
    """A numpy dtype name from a zarr v2 dtype string ("<u2") or a v3 data type ("uint16")."""
    try:
        return np.dtype(dtype).name
    except TypeError:
        return dtype
