"""Open the store a URL names: file:///path for LocalStore (s3:// arrives with S3Store)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlsplit

from allmicro_data.storage.base import ObjectStore, StorageError
from allmicro_data.storage.local import LocalStore


def open_store(url: str) -> ObjectStore:
    """The ObjectStore for a storage URL; a plain path counts as a local directory."""
    parts = urlsplit(url)
    if parts.scheme in ("", "file"):
        path = unquote(parts.path) if parts.scheme else url
        if not path:
            raise StorageError(f"storage URL {url!r} names no directory")
        return LocalStore(Path(path))
    raise StorageError(f"unsupported storage URL scheme {parts.scheme!r} (expected file:///path)")
