"""Object stores: one protocol, local and S3 implementations, replication and fixity."""

from allmicro_data.storage.base import (
    InvalidKey,
    ObjectNotFound,
    ObjectStore,
    StorageError,
    StoredObject,
)
from allmicro_data.storage.factory import open_store
from allmicro_data.storage.local import LocalStore

__all__ = [
    "InvalidKey",
    "LocalStore",
    "ObjectNotFound",
    "ObjectStore",
    "StorageError",
    "StoredObject",
    "open_store",
]
