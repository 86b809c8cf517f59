"""What the server writes that holds confidential bytes is readable by its own user only."""

from __future__ import annotations

import hashlib
import stat
from pathlib import Path

from tests.api.test_end_to_end import FEI, USER_PASSWORD
from tests.api.test_uploads import create, new_project, patch
from tests.conftest import _running_server, _server_env


def _others_bits(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode) & 0o077


def test_catalogue_spool_originals_and_secret_key_are_private(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    catalogue = data_dir / "catalogue.sqlite3"
    server = _running_server(_server_env(data_dir, f"sqlite:///{catalogue}"), tmp_path / "log")
    try:
        email = "keeper@file-modes.example"
        _project_id, dataset_id = new_project(server, email, "File modes")
        data = FEI.read_bytes()
        with server.client(email, USER_PASSWORD) as client:
            location = create(client, len(data), filename=FEI.name, dataset_id=dataset_id).headers[
                "location"
            ]
            half = len(data) // 2
            assert patch(client, location, 0, data[:half]).status_code == 204
            spool = data_dir / "uploads" / "tus"
            spool_file = spool / f"{location.rsplit('/', 1)[-1]}.part"
            assert spool_file.stat().st_size == half
            assert _others_bits(spool_file) == 0
            assert _others_bits(spool) == 0 and _others_bits(spool.parent) == 0
            assert patch(client, location, half, data[half:]).status_code == 204
        original = data_dir / "objects" / "raw" / hashlib.sha256(data).hexdigest()
        assert original.is_file()
        assert _others_bits(original) == 0
        assert _others_bits(data_dir / "secret.key") == 0
        for file in (catalogue, catalogue.with_name("catalogue.sqlite3-wal")):
            assert file.exists(), file
            assert _others_bits(file) == 0, (file, oct(file.stat().st_mode))
    finally:
        server.stop()
