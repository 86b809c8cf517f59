"""Upload limits over real HTTP: the largest upload, spool reservations, per-user bytes in flight, project quotas, pixel bombs."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from allmicro_data.errors import Invalid
from allmicro_data.quotas import parse_size
from tests.api.test_end_to_end import FEI, USER_PASSWORD, wait_for_job
from tests.api.test_uploads import TUS, create
from tests.conftest import LiveServer, PostgresDatabases, module_server
from tests.ingest.test_pixel_limits import pixel_bomb_tiff

MAX_UPLOAD = 10**14
IN_FLIGHT_UPLOADS = 3


@dataclass
class Limits:
    """A server whose limits are set relative to the free space of its spool's filesystem
    (declared lengths are only numbers: no test sends more than a few hundred KB)."""

    server: LiveServer
    free: int
    user_limit: int
    _users: set[str] = field(default_factory=set)

    def project(self, name: str, members: dict[str, str]) -> tuple[str, str]:
        """A project with one dataset and members (e-mail: role) made for it; (project, dataset)."""
        with self.server.client() as admin:
            org = admin.post("/api/organisations", json={"name": name, "kind": "partner"})
            org_id = org.raise_for_status().json()["id"]
            project = admin.post("/api/projects", json={"name": f"{name} project"})
            project_id: str = project.raise_for_status().json()["id"]
            for email, role in members.items():
                user = admin.post(
                    "/api/users",
                    json={"email": email, "organisation_id": org_id, "password": USER_PASSWORD},
                )
                admin.post(
                    f"/api/projects/{project_id}/members",
                    json={"user_id": user.raise_for_status().json()["id"], "role": role},
                ).raise_for_status()
            dataset = admin.post(f"/api/projects/{project_id}/datasets", json={"name": "session"})
            dataset_id: str = dataset.raise_for_status().json()["id"]
        return project_id, dataset_id

    def client(self, email: str) -> httpx.Client:
        return self.server.client(email, USER_PASSWORD)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def limits(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    postgres_databases: PostgresDatabases | None,
) -> Iterator[Limits]:
    # Declared lengths are only numbers: set relative to the free space they are checked against.
    free = shutil.disk_usage(tmp_path_factory.getbasetemp()).free
    user_limit = int(free * 0.7)
    env = {
        "ALLMICRO_MAX_UPLOAD_BYTES": str(MAX_UPLOAD),
        "ALLMICRO_MAX_USER_INFLIGHT_BYTES": str(user_limit),
        "ALLMICRO_MAX_USER_INFLIGHT_UPLOADS": str(IN_FLIGHT_UPLOADS),
    }
    with module_server(request, tmp_path_factory, postgres_databases, "limits", env) as server:
        yield Limits(server, free, user_limit)


def refused(response: httpx.Response, status: int, *words: str) -> str:
    """The response is a problem+json refusal with status whose detail says every word."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    detail: str = response.json()["detail"]
    for word in words:
        assert word in detail, detail
    return detail


def one_shot(client: httpx.Client, dataset_id: str, name: str, data: bytes) -> httpx.Response:
    return client.post(
        f"/api/datasets/{dataset_id}/files",
        files={"file": (name, data, "application/octet-stream")},
    )


def test_a_declared_size_over_the_maximum_answers_413(limits: Limits) -> None:
    _, dataset_id = limits.project("Max size", {"max@lab.example": "contributor"})
    with limits.client("max@lab.example") as client:
        options = client.options("/api/uploads/")
        assert options.headers["tus-max-size"] == str(MAX_UPLOAD)
        response = create(client, MAX_UPLOAD + 1, filename="huge.tif", dataset_id=dataset_id)
        refused(response, 413, "largest upload", str(MAX_UPLOAD))
        assert response.headers["tus-resumable"] == "1.0.0"


def test_uploads_in_flight_reserve_their_declared_bytes_of_free_space(limits: Limits) -> None:
    """Each of two uploads of 60 % of the free space fits alone; together they do not, so the
    second is refused while the first is in flight, and accepted once it is gone."""
    _, dataset_id = limits.project(
        "Reservations", {"ana@lab.example": "contributor", "bor@lab.example": "contributor"}
    )
    share = int(limits.free * 0.6)
    with limits.client("ana@lab.example") as ana, limits.client("bor@lab.example") as bor:
        first = create(ana, share, filename="a.tif", dataset_id=dataset_id)
        assert first.status_code == 201, first.text
        second = create(bor, share, filename="b.tif", dataset_id=dataset_id)
        refused(second, 507, "reserved")
        assert second.headers["tus-resumable"] == "1.0.0"
        # A partial first request does not change the sum: what it sends leaves the free
        # space and its reservation alike.
        assert ana.delete(first.headers["location"], headers=TUS).status_code == 204
        again = create(bor, share, filename="b.tif", dataset_id=dataset_id)
        assert again.status_code == 201, again.text
        assert bor.delete(again.headers["location"], headers=TUS).status_code == 204


def test_a_user_has_a_limit_of_bytes_and_uploads_in_flight(limits: Limits) -> None:
    _, dataset_id = limits.project(
        "In flight", {"cene@lab.example": "contributor", "dora@lab.example": "contributor"}
    )
    small = int(limits.free * 0.2)
    with limits.client("cene@lab.example") as cene, limits.client("dora@lab.example") as dora:
        alone = create(cene, limits.user_limit + 1, filename="big.tif", dataset_id=dataset_id)
        refused(alone, 413, "ALLMICRO_MAX_USER_INFLIGHT_BYTES")
        first = create(cene, limits.user_limit - 1000, filename="a.tif", dataset_id=dataset_id)
        assert first.status_code == 201, first.text
        over = create(cene, small, filename="b.tif", dataset_id=dataset_id)
        detail = refused(over, 429, "unfinished", str(limits.user_limit))
        assert "finish or cancel" in detail
        assert int(over.headers["retry-after"]) > 0
        # The one-shot upload counts against the same limit.
        refused(one_shot(cene, dataset_id, "c.tif", b"x" * 2000), 429, "unfinished")
        # The limit is per user: another contributor still uploads.
        other = create(dora, 10, filename="d.tif", dataset_id=dataset_id)
        assert other.status_code == 201, other.text
        assert cene.delete(first.headers["location"], headers=TUS).status_code == 204
        assert one_shot(cene, dataset_id, "c.tif", os.urandom(2000)).status_code == 201
        # And so many uploads at once, however small.
        locations = [other.headers["location"]]
        for n in range(IN_FLIGHT_UPLOADS - 1):
            made = create(dora, 10, filename=f"e{n}.tif", dataset_id=dataset_id)
            assert made.status_code == 201, made.text
            locations.append(made.headers["location"])
        refused(create(dora, 10, filename="f.tif", dataset_id=dataset_id), 429, "unfinished")
        for location in locations:
            assert dora.delete(location, headers=TUS).status_code == 204


def test_a_project_over_its_quota_refuses_uploads_and_shows_its_usage(limits: Limits) -> None:
    members = {
        "eva@lab.example": "contributor",
        "fran@lab.example": "manager",
        "gal@lab.example": "viewer",
    }
    project_id, dataset_id = limits.project("Quota", members)
    stored = os.urandom(3000)
    quota = len(stored) + 1000
    with (
        limits.server.client() as admin,
        limits.client("eva@lab.example") as eva,
        limits.client("fran@lab.example") as manager,
        limits.client("gal@lab.example") as viewer,
    ):
        # Only a global admin sets a quota, and only to a number of bytes.
        refused(manager.patch(f"/api/projects/{project_id}", json={"quota_bytes": 1}), 403, "admin")
        bad = admin.patch(f"/api/projects/{project_id}", json={"quota_bytes": -1})
        assert bad.status_code == 422
        assert (
            admin.patch(f"/api/projects/{project_id}", json={"quota_bytes": quota}).status_code
            == 200
        )
        assert one_shot(eva, dataset_id, "stored.bin", stored).status_code == 201
        flying = create(eva, 500, filename="flying.tif", dataset_id=dataset_id)
        assert flying.status_code == 201, flying.text

        detail = manager.get(f"/api/projects/{project_id}").raise_for_status().json()
        assert detail["quota_bytes"] == quota
        assert detail["used_bytes"] == len(stored) + 500
        hidden = viewer.get(f"/api/projects/{project_id}").raise_for_status().json()
        assert hidden["quota_bytes"] is None and hidden["used_bytes"] is None

        over = create(eva, 501, filename="over.tif", dataset_id=dataset_id)
        refused(over, 507, "Quota project", f"quota of {quota} bytes")
        refused(one_shot(eva, dataset_id, "over.bin", os.urandom(501)), 507, "quota")

        page = manager.get(f"/projects/{project_id}", headers={"Accept-Language": "en"})
        assert page.status_code == 200
        assert "Storage used: 3.418 KiB of a 3.906 KiB quota" in page.text
        assert "Storage used" not in viewer.get(f"/projects/{project_id}").text

        # The admin CLI lifts the quota (and says what the project uses).
        lifted = limits.server.allmicro("admin", "set-quota", "Quota project", "none")
        assert lifted.returncode == 0, lifted.stderr
        assert lifted.stdout.strip() == f"Quota project: quota=none used={len(stored) + 500}"
        accepted = create(eva, 501, filename="over.tif", dataset_id=dataset_id)
        assert accepted.status_code == 201, accepted.text
        detail = manager.get(f"/api/projects/{project_id}").json()
        assert detail["quota_bytes"] is None and detail["used_bytes"] == len(stored) + 1001
        page = manager.get(f"/projects/{project_id}", headers={"Accept-Language": "en"})
        assert "Storage used: 3.907 KiB (no quota)" in page.text
        for response in (flying, accepted):
            assert eva.delete(response.headers["location"], headers=TUS).status_code == 204


def test_a_pixel_bomb_fails_its_job_fast_with_a_reason_and_real_samples_ingest(
    limits: Limits, tmp_path: Path
) -> None:
    _, dataset_id = limits.project("Bombs", {"hana@lab.example": "contributor"})
    bomb = pixel_bomb_tiff(tmp_path / "bomb.tif")
    pyramids = Path(limits.server.env["ALLMICRO_DATA_DIR"]) / "objects" / "images"

    def written() -> int:
        return len(list(pyramids.iterdir())) if pyramids.exists() else 0

    before = written()
    with limits.client("hana@lab.example") as client:
        started = time.monotonic()
        sent = one_shot(client, dataset_id, "bomb.tif", bomb.read_bytes())
        assert sent.status_code == 201, sent.text
        # It used to convert for about a minute and write 213 MB of pyramid.
        job = wait_for_job(client, sent.json()["job_id"], timeout=20)
        assert time.monotonic() - started < 20
        assert job["status"] == "failed"
        assert job["attempts"] == 1
        assert "bomb.tif: declares 100000 x 100000 (yx) pixels" in job["error"]
        assert "far more pixels than the file holds" in job["error"]
        images = client.get(f"/api/datasets/{dataset_id}/images").raise_for_status().json()
        assert images["total"] == 0
        assert written() == before

        real = one_shot(client, dataset_id, FEI.name, FEI.read_bytes())
        assert real.status_code == 201, real.text
        assert wait_for_job(client, real.json()["job_id"])["status"] == "succeeded"
        assert written() == before + 1


def test_quota_sizes_are_read_as_operators_write_them() -> None:
    assert parse_size("none") is None
    assert parse_size("123") == 123
    assert parse_size("500GB") == 500 * 10**9
    assert parse_size("2 TiB") == 2 * 1024**4
    assert parse_size("1.5kib") == 1536
    for bad in ("lots", "-5", "5 parsecs", ""):
        with pytest.raises(Invalid, match="not a size"):
            parse_size(bad)
