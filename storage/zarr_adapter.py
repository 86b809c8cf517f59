"""A zarr-python Store over any ObjectStore, so zarr reads and writes share the store's root.

Zarr keys under a pyramid map one to one onto object keys below a prefix: the zarr key
``0/.zarray`` of the pyramid at ``images/<id>/image.ome.zarr`` is the object
``images/<id>/image.ome.zarr/0/.zarray``. Whatever the backing store (local files, S3, a
replicated set), zarr sees the same bytes that downloads, fixity checks and scrubs see, and every
write goes through the store's atomic put.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable

from zarr.abc.store import (
    ByteRequest,
    OffsetByteRequest,
    RangeByteRequest,
    Store,
    SuffixByteRequest,
)
from zarr.core.buffer import Buffer, BufferPrototype

from allmicro_data.storage.base import ObjectNotFound, ObjectStore, validate_prefix


class ZarrObjectStore(Store):
    """zarr Store for the objects of one ObjectStore below `prefix`."""

    supports_writes = True
    supports_deletes = True
    supports_listing = True
    supports_partial_writes = False

    def __init__(self, objects: ObjectStore, prefix: str = "", *, read_only: bool = False) -> None:
        super().__init__(read_only=read_only)
        prefix = prefix.strip("/")
        if prefix:
            validate_prefix(prefix)
        self.objects = objects
        self.prefix = prefix

    def with_read_only(self, read_only: bool = False) -> ZarrObjectStore:
        return ZarrObjectStore(self.objects, self.prefix, read_only=read_only)

    def __eq__(self, value: object) -> bool:
        return (
            isinstance(value, ZarrObjectStore)
            and value.objects is self.objects
            and value.prefix == self.prefix
        )

    def __hash__(self) -> int:
        return hash((id(self.objects), self.prefix))

    def __repr__(self) -> str:
        return f"ZarrObjectStore({self.objects!r}, {self.prefix!r})"

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def _read(self, key: str, byte_range: ByteRequest | None) -> bytes | None:
        full = self._key(key)
        try:
            if byte_range is None:
                return self.objects.get_bytes(full)
            if isinstance(byte_range, RangeByteRequest):
                return self.objects.get_bytes(full, byte_range.start, byte_range.end)
            if isinstance(byte_range, OffsetByteRequest):
                return self.objects.get_bytes(full, byte_range.offset)
            if isinstance(byte_range, SuffixByteRequest):
                size = self.objects.size(full)
                return self.objects.get_bytes(full, max(0, size - byte_range.suffix))
        except ObjectNotFound:
            return None
        raise TypeError(f"unexpected byte range {byte_range!r}")

    async def get(
        self,
        key: str,
        prototype: BufferPrototype,
        byte_range: ByteRequest | None = None,
    ) -> Buffer | None:
        data = await asyncio.to_thread(self._read, key, byte_range)
        return None if data is None else prototype.buffer.from_bytes(data)

    async def get_partial_values(
        self,
        prototype: BufferPrototype,
        key_ranges: Iterable[tuple[str, ByteRequest | None]],
    ) -> list[Buffer | None]:
        return list(await asyncio.gather(*(self.get(k, prototype, r) for k, r in key_ranges)))

    async def exists(self, key: str) -> bool:
        return await asyncio.to_thread(self.objects.exists, self._key(key))

    async def set(self, key: str, value: Buffer) -> None:
        self._check_writable()
        await asyncio.to_thread(self.objects.put_bytes, self._key(key), value.to_bytes())

    async def delete(self, key: str) -> None:
        self._check_writable()
        await asyncio.to_thread(self.objects.delete, self._key(key))

    async def _keys(self, prefix: str) -> list[str]:
        full = self._key(prefix) if prefix else (f"{self.prefix}/" if self.prefix else "")
        strip = len(self.prefix) + 1 if self.prefix else 0
        keys = await asyncio.to_thread(lambda: list(self.objects.list(full)))
        return [k[strip:] for k in keys]

    async def list(self) -> AsyncIterator[str]:
        for key in await self._keys(""):
            yield key

    async def list_prefix(self, prefix: str) -> AsyncIterator[str]:
        for key in await self._keys(prefix):
            yield key

    async def list_dir(self, prefix: str) -> AsyncIterator[str]:
        prefix = prefix.rstrip("/")
        base = f"{prefix}/" if prefix else ""
        seen: set[str] = set()
        for key in await self._keys(base):
            child = key[len(base) :].split("/", 1)[0]
            if child not in seen:
                seen.add(child)
                yield child
