"""What readers open besides a pyramid: consolidated metadata equal to zarr-python's own, and a
set of images as a bioformats2raw collection whose root format follows its images."""

from __future__ import annotations

import json
from pathlib import Path

import zarr
from ome_types import from_xml
from zarr.storage import LocalStore as ZarrLocalStore

from allmicro_data.ingest.ngff.collection import (
    CollectionImage,
    collection_documents,
    consolidated_root,
    stored_documents,
)
from allmicro_data.ingest.pyramid import write_pyramid
from allmicro_data.ingest.readers.array import ArraySeries
from allmicro_data.ingest.readers.base import PixelSize
from allmicro_data.storage.local import LocalStore
from tests.ingest.test_pyramid import sem_like


def _pyramids(tmp_path: Path) -> LocalStore:
    store = LocalStore(tmp_path)
    series = ArraySeries(sem_like((700, 1100)), "yx", pixel_size=PixelSize(x=2e-9, y=2e-9))
    write_pyramid(series, store, "v04", ngff="0.4", chunk=256)
    write_pyramid(series, store, "v05", ngff="0.5", chunk=256)
    return store


def _described(name: str, version: str, store: LocalStore | None) -> CollectionImage:
    return CollectionImage(
        name=name,
        ngff_version="0.4" if version == "0.4" else "0.5",
        axes="yx",
        shape=(700, 1100),
        dtype="uint16",
        pixel_size={"x": 2e-9, "y": 2e-9},
        channel_names=("SE",),
        stored=stored_documents(store, f"v{version.replace('.', '')}") if store else None,
    )


def test_a_pyramid_without_consolidated_metadata_gets_what_zarr_python_writes(
    tmp_path: Path,
) -> None:
    store = _pyramids(tmp_path)
    for key, name in (("v04", ".zmetadata"), ("v05", "zarr.json")):
        written = store.get_bytes(f"{key}/{name}")
        if key == "v04":
            store.delete(f"{key}/.zmetadata")
        else:
            document = json.loads(written)
            del document["consolidated_metadata"]
            store.put_bytes(f"{key}/zarr.json", json.dumps(document).encode())
        made = consolidated_root(stored_documents(store, key))
        assert json.loads(made[name]) == json.loads(written), key
        # Once stored, the stored document is served as it is.
        store.put_bytes(f"{key}/{name}", written)
        assert consolidated_root(stored_documents(store, key))[name] == written


def test_a_collection_of_both_versions_is_a_zarr_v2_root_that_zarr_python_walks(
    tmp_path: Path,
) -> None:
    store = _pyramids(tmp_path)
    documents = collection_documents(
        [_described("first", "0.4", store), _described("second", "0.5", store)]
    )
    assert json.loads(documents[".zattrs"]) == {"bioformats2raw.layout": 3}
    assert json.loads(documents["OME/.zattrs"]) == {"series": ["0", "1"]}
    ome = from_xml(documents["OME/METADATA.ome.xml"].decode())
    assert [(i.name, i.pixels.size_x, i.pixels.size_y) for i in ome.images] == [
        ("first", 1100, 700),
        ("second", 1100, 700),
    ]
    assert ome.images[0].pixels.physical_size_x == 0.002
    assert ome.images[0].pixels.channels[0].name == "SE"
    # Laid out as served (the root's documents, each image's pyramid under its number), the
    # consolidated root lists the zarr v2 image; the v3 one is opened by its own URL.
    root = tmp_path / "served"
    for name, data in documents.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    (root / "0").symlink_to(tmp_path / "v04")
    group = zarr.open_group(ZarrLocalStore(root, read_only=True), mode="r")
    assert sorted(name for name, _ in group.groups()) == ["0", "OME"]
    assert group["0"]["0"].shape == (700, 1100)


def test_a_collection_of_zarr_v3_images_is_a_v3_root_consolidated_only_when_complete(
    tmp_path: Path,
) -> None:
    store = _pyramids(tmp_path)
    whole = collection_documents([_described("a", "0.5", store), _described("b", "0.5", store)])
    assert sorted(whole) == ["OME/METADATA.ome.xml", "OME/zarr.json", "zarr.json"]
    root = json.loads(whole["zarr.json"])
    assert root["attributes"] == {"ome": {"version": "0.5", "bioformats2raw.layout": 3}}
    assert {"0", "0/0", "1/2", "OME"} <= set(root["consolidated_metadata"]["metadata"])
    assert json.loads(whole["OME/zarr.json"])["attributes"]["ome"]["series"] == ["0", "1"]

    # Without every image's documents (a large dataset), no consolidated metadata at all.
    partial = collection_documents([_described("a", "0.5", store), _described("b", "0.5", None)])
    assert "consolidated_metadata" not in json.loads(partial["zarr.json"])
    assert len(from_xml(partial["OME/METADATA.ome.xml"].decode()).images) == 2
