"""Object stores: one protocol, local and S3 implementations, replication and fixity."""

from allmicro_data.storage.base import (
    InvalidKey,
    ObjectNotFound,
    ObjectStore,
    StorageError,
    StoredObject,
)
from allmicro_data.storage.factory import open_replicated_store, open_store
from allmicro_data.storage.fixity import ChecksumMismatch, Manifest, ManifestChecksums
from allmicro_data.storage.local import LocalStore
from allmicro_data.storage.replicated import PendingCopies, QuorumNotReached, ReplicatedStore
from allmicro_data.storage.s3 import S3Store, SupportsPresignedGet

__all__ = [
    "ChecksumMismatch",
    "InvalidKey",
    "LocalStore",
    "Manifest",
    "ManifestChecksums",
    "ObjectNotFound",
    "ObjectStore",
    "PendingCopies",
    "QuorumNotReached",
    "ReplicatedStore",
    "S3Store",
    "StorageError",
    "StoredObject",
    "SupportsPresignedGet",
    "open_replicated_store",
    "open_store",
]
