"""tus uploads through two API processes sharing PostgreSQL, an upload spool and a store:
any request of an upload may reach either process, and two writers at once never mix bytes."""

from __future__ import annotations

import hashlib
import os
import secrets
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.api.test_end_to_end import USER_PASSWORD
from tests.api.test_uploads import OFFSET_STREAM, TUS, create, new_project, patch
from tests.conftest import (
    TLS,
    LiveServer,
    PostgresDatabases,
    _postgres_unavailable,
    _running_server,
    _server_env,
    wait_until,
)

MIB = 1 << 20
USER = "lea@two-processes.example"


@pytest.fixture
def two_servers(
    tmp_path: Path, postgres_databases: PostgresDatabases | None
) -> Iterator[tuple[LiveServer, LiveServer]]:
    if postgres_databases is None:
        _postgres_unavailable("ALLMICRO_TEST_DATABASE_URL is not set or the server is unreachable")
    assert postgres_databases is not None
    database_url = postgres_databases.create()
    shared = {
        "ALLMICRO_UPLOAD_DIR": str(tmp_path / "shared-volume" / "uploads"),
        "ALLMICRO_STORAGE_URL": (tmp_path / "shared-volume" / "objects").as_uri(),
        "ALLMICRO_SECRET_KEY": secrets.token_urlsafe(32),
        "ALLMICRO_JOB_WORKERS": "0",
    }
    servers: list[LiveServer] = []
    try:
        for name in ("api-1", "api-2"):
            env = {**_server_env(tmp_path / name, database_url), **shared}
            servers.append(_running_server(env, tmp_path / f"{name}.log"))
        yield servers[0], servers[1]
    finally:
        for server in servers:
            server.stop()


def test_patches_alternate_between_processes_and_concurrent_writers_are_refused(
    two_servers: tuple[LiveServer, LiveServer], tmp_path: Path
) -> None:
    first, second = two_servers
    _, dataset_id = new_project(first, USER, "Two processes")
    token = first.token(USER, USER_PASSWORD)
    clients = [
        httpx.Client(
            base_url=s.url, headers={"Authorization": f"Bearer {token}"}, timeout=60, verify=TLS
        )
        for s in (first, second)
    ]
    data = os.urandom(24 * MIB)
    digest = hashlib.sha256(data).hexdigest()

    created = create(clients[0], len(data), filename="stack.mrc", dataset_id=dataset_id)
    assert created.status_code == 201, created.text
    location = created.headers["location"]
    upload_id = location.rsplit("/", 1)[-1]
    spool = tmp_path / "shared-volume" / "uploads" / "tus" / f"{upload_id}.part"

    # A PATCH to the first process that has sent part of its body and is still sending...
    release = threading.Event()

    def slow_body() -> Iterator[bytes]:
        yield data[: 6 * MIB]
        release.wait(timeout=60)
        yield data[6 * MIB : 8 * MIB]

    with ThreadPoolExecutor(max_workers=1) as pool:
        slow = pool.submit(
            clients[0].patch,
            location,
            content=slow_body(),
            headers={**TUS, **OFFSET_STREAM, "Upload-Offset": "0", "Content-Length": str(8 * MIB)},
        )
        wait_until(lambda: spool.stat().st_size >= 4 * MIB, what="the first writer's bytes")
        # ...and one to the second process at the same offset, with other bytes: refused.
        rival = patch(clients[1], location, 0, os.urandom(8 * MIB))
        assert rival.status_code in (409, 423), rival.text
        release.set()
        done = slow.result(timeout=60)
    assert done.status_code == 204, done.text
    assert done.headers["upload-offset"] == str(8 * MIB)

    # The rest goes 4 MiB at a time to the processes in turn, each resuming the other's work.
    offset = 8 * MIB
    turn = 1
    while offset < len(data):
        client = clients[turn % 2]
        status = client.head(location, headers=TUS)
        assert status.headers["upload-offset"] == str(offset)
        end = offset + 4 * MIB
        headers = {"X-Allmicro-Sha256": digest} if end == len(data) else {}
        response = patch(client, location, offset, data[offset:end], **headers)
        assert response.status_code == 204, response.text
        offset = int(response.headers["upload-offset"])
        assert offset == end
        turn += 1

    assert response.headers["x-allmicro-sha256"] == digest
    file_id = response.headers["x-allmicro-file-id"]
    for client in clients:
        stored = client.get(f"/api/files/{file_id}").raise_for_status().json()
        assert stored["sha256"] == digest
    stored_bytes = tmp_path / "shared-volume" / "objects" / "raw" / digest
    assert hashlib.sha256(stored_bytes.read_bytes()).hexdigest() == digest
    assert not spool.exists()
    for client in clients:
        client.close()
