"""Open the store a URL names (file:///path, s3://bucket/prefix?endpoint=…), replicated when asked."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from urllib.parse import unquote, urlsplit

from allmicro_data.storage.base import ObjectStore, StorageError
from allmicro_data.storage.checksums import ExpectedChecksums
from allmicro_data.storage.local import LocalStore
from allmicro_data.storage.replicated import PendingCopies, ReplicatedStore


def open_store(
    url: str,
    *,
    access_key: str | None = None,
    secret_key: str | None = None,
    check: bool = True,
) -> ObjectStore:
    """The ObjectStore for a storage URL; a plain path counts as a local directory.

    S3 credentials come from the arguments, else from ALLMICRO_S3_ACCESS_KEY/_SECRET_KEY; a URL
    with credentials=NAME uses ALLMICRO_S3_NAME_ACCESS_KEY/_SECRET_KEY instead. With check, an
    S3 store proves its endpoint, credentials and bucket now rather than at the first write.
    """
    parts = urlsplit(url)
    if parts.scheme in ("", "file"):
        path = unquote(parts.path) if parts.scheme else url
        if not path:
            raise StorageError(f"storage URL {url!r} names no directory")
        return LocalStore(Path(path))
    if parts.scheme == "s3":
        # Loaded here: a server or command on local files does not pay for the S3 client.
        from allmicro_data.storage.s3 import S3Location, S3Store

        return S3Store(S3Location.parse(url), access_key, secret_key, check=check)
    raise StorageError(
        f"unsupported storage URL scheme {parts.scheme!r} "
        "(expected file:///path or s3://bucket/prefix?endpoint=http://host:port)"
    )


def open_replicated_store(
    primary_url: str,
    replica_urls: Sequence[str],
    *,
    quorum: int = 0,
    pending: PendingCopies | None = None,
    checksums: ExpectedChecksums | None = None,
    retry_seconds: float = 15.0,
    access_key: str | None = None,
    secret_key: str | None = None,
) -> ObjectStore:
    """The primary store alone, or wrapped with its replicas in a ReplicatedStore.

    Only the primary is checked at once: a replica that is down must not stop a server from
    starting; it is checked when it is first reached and caught up from the to-do list.
    """
    primary = open_store(primary_url, access_key=access_key, secret_key=secret_key)
    if not replica_urls:
        return primary
    replicas = [
        open_store(u, access_key=access_key, secret_key=secret_key, check=False)
        for u in replica_urls
    ]
    return ReplicatedStore(
        primary,
        replicas,
        quorum=quorum,
        pending=pending,
        checksums=checksums,
        retry_seconds=retry_seconds,
    )
