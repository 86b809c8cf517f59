"""Storage settings given to the server in code, not in the environment, reach its job processes."""

from __future__ import annotations

import hashlib
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from allmicro_data.api.app import create_app
from allmicro_data.fixity import Manifest
from allmicro_data.jobs import WorkerConfig
from allmicro_data.object_keys import manifest_key
from allmicro_data.settings import Settings
from allmicro_data.storage import LocalStore, S3Store
from tests.api.test_end_to_end import FEI, upload, wait_for_job
from tests.conftest import ADMIN_EMAIL, ADMIN_PASSWORD
from tests.storage.conftest import ACCESS_KEY, SECRET_KEY, SeaweedServer


def test_worker_config_carries_every_setting_and_shows_no_secret(tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path,
        storage_url="s3://bucket/p?endpoint=http://127.0.0.1:9",
        replica_urls=[(tmp_path / "replica").as_uri()],
        replica_quorum=1,
        s3_access_key=SecretStr("access-in-code"),
        s3_secret_key=SecretStr("secret-in-code"),
        job_lease_seconds=7,
    )
    config = WorkerConfig.from_settings(settings)
    assert config.settings() == settings
    assert config.lease_seconds == 7
    assert "secret-in-code" not in repr(config)


def test_replicas_and_s3_keys_set_in_code_reach_the_job_process(
    tmp_path: Path, seaweed: SeaweedServer, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Nothing in the environment: a job process that rebuilt its settings from it would reach
    # S3 without keys and write no replica.
    for name in ("STORAGE_URL", "REPLICA_URLS", "REPLICA_QUORUM", "S3_ACCESS_KEY", "S3_SECRET_KEY"):
        monkeypatch.delenv(f"ALLMICRO_{name}", raising=False)
    replica = tmp_path / "replica"
    settings = Settings(
        data_dir=tmp_path / "data",
        database_url=f"sqlite:///{tmp_path / 'catalogue.sqlite3'}",
        storage_url=seaweed.url(prefix),
        replica_urls=[replica.as_uri()],
        replica_quorum=1,
        s3_access_key=SecretStr(ACCESS_KEY),
        s3_secret_key=SecretStr(SECRET_KEY),
        admin_email=ADMIN_EMAIL,
        admin_password=SecretStr(ADMIN_PASSWORD),
        job_workers=1,
        job_lease_seconds=6,
    )
    with TestClient(create_app(settings)) as client:
        token = client.post(
            "/api/auth/token", data={"username": ADMIN_EMAIL, "password": ADMIN_PASSWORD}
        ).json()["access_token"]
        client.headers["Authorization"] = f"Bearer {token}"
        dataset_id = _dataset(client)
        uploaded = upload(client, dataset_id, FEI.name, FEI.read_bytes())
        job = wait_for_job(client, uploaded["job_id"])
        assert job["status"] == "succeeded", job["error"]
        (image_id,) = job["image_ids"]

    primary = S3Store(seaweed.url(prefix), ACCESS_KEY, SECRET_KEY)
    manifest = Manifest.from_json(primary.get_bytes(manifest_key(image_id)))
    copy = LocalStore(replica)
    pyramid = [o for o in manifest.objects if "image.ome.zarr/" in o.key]
    assert pyramid
    for stored in pyramid:
        assert hashlib.sha256(copy.get_bytes(stored.key)).hexdigest() == stored.sha256


def _dataset(client: httpx.Client) -> str:
    """An organisation, a project and a dataset of the admin's."""

    def made(response: httpx.Response) -> str:
        assert response.status_code == 201, response.text
        created: str = response.json()["id"]
        return created

    org = {"name": "ZRC", "kind": "partner", "country": "SI"}
    made(client.post("/api/organisations", json=org))
    project = made(client.post("/api/projects", json={"name": "replicas in code"}))
    return made(client.post(f"/api/projects/{project}/datasets", json={"name": "SEM"}))
