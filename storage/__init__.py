"""Object stores: one protocol, local and S3 implementations, replication and checksums.

The protocol, its optional capabilities and its errors load with the package; the stores load
when first named, so that a command that writes to local files (`allmicro convert`) does not pay
for the S3 client.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from allmicro_data.storage.base import (
    InvalidKey,
    ObjectNotFound,
    ObjectStore,
    StorageError,
    StorageFull,
    StoredObject,
    SupportsDeferredSync,
    SupportsFileAdoption,
    SupportsLocalPaths,
    SupportsPresignedGet,
    SupportsReplicas,
    SupportsSuffixRead,
    is_storage_full,
    read_suffix,
)

if TYPE_CHECKING:
    from allmicro_data.storage.checksums import ChecksumMismatch
    from allmicro_data.storage.factory import open_replicated_store, open_store
    from allmicro_data.storage.local import LocalStore
    from allmicro_data.storage.replicated import (
        PendingCopies,
        PendingCopy,
        QuorumNotReached,
        ReplicatedStore,
    )
    from allmicro_data.storage.s3 import S3Store

_LAZY = {
    "open_replicated_store": "factory",
    "open_store": "factory",
    "ChecksumMismatch": "checksums",
    "LocalStore": "local",
    "PendingCopies": "replicated",
    "PendingCopy": "replicated",
    "QuorumNotReached": "replicated",
    "ReplicatedStore": "replicated",
    "S3Store": "s3",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


__all__ = [
    "ChecksumMismatch",
    "InvalidKey",
    "LocalStore",
    "ObjectNotFound",
    "ObjectStore",
    "PendingCopies",
    "PendingCopy",
    "QuorumNotReached",
    "ReplicatedStore",
    "S3Store",
    "StorageError",
    "StorageFull",
    "StoredObject",
    "SupportsDeferredSync",
    "SupportsFileAdoption",
    "SupportsLocalPaths",
    "SupportsPresignedGet",
    "SupportsReplicas",
    "SupportsSuffixRead",
    "is_storage_full",
    "open_replicated_store",
    "open_store",
    "read_suffix",
]
