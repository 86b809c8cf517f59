"""Opened pyramids for the tile endpoints: arrays per level and the display defaults, cached."""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import zarr

from allmicro_data.api.rendering import Window
from allmicro_data.storage import ObjectStore
from allmicro_data.storage.zarr_adapter import ZarrObjectStore


@dataclass
class OpenPyramid:
    axes: str
    levels: list[Any]  # zarr arrays, largest first
    windows: list[Window]  # per channel, from the omero block
    rgb: bool

    def shape(self, level: int) -> tuple[int, ...]:
        return tuple(self.levels[level].shape)


def open_pyramid(store: ObjectStore, key: str) -> OpenPyramid:
    group = zarr.open_group(ZarrObjectStore(store, key, read_only=True), mode="r")
    attrs: dict[str, Any] = dict(group.attrs.asdict())
    multiscale = attrs["multiscales"][0]
    axes = "".join(a["name"] for a in multiscale["axes"])
    levels: list[Any] = [group[d["path"]] for d in multiscale["datasets"]]
    omero: dict[str, Any] = attrs.get("omero", {})
    windows = [
        Window(float(c["window"]["start"]), float(c["window"]["end"]))
        for c in omero.get("channels", [])
    ]
    rgb = omero.get("rdefs", {}).get("model") == "color" and str(levels[0].dtype) == "uint8"
    return OpenPyramid(axes=axes, levels=levels, windows=windows, rgb=rgb)


class PyramidCache:
    """A small LRU of opened pyramids; pyramids are immutable once an image is ready."""

    def __init__(self, size: int = 64) -> None:
        self._size = size
        self._items: OrderedDict[str, OpenPyramid] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, store: ObjectStore, key: str) -> OpenPyramid:
        with self._lock:
            found = self._items.get(key)
            if found is not None:
                self._items.move_to_end(key)
                return found
        opened = open_pyramid(store, key)
        with self._lock:
            self._items[key] = opened
            while len(self._items) > self._size:
                self._items.popitem(last=False)
        return opened
