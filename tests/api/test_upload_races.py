"""Uploads racing each other over real HTTP: one file sent by several clients at once, and two
PATCHes of one upload at once."""

from __future__ import annotations

import threading
from typing import Any

import httpx
from sqlalchemy import create_engine, func, select

from allmicro_data.catalogue.db import normalise_url
from allmicro_data.catalogue.models import File, Image, ImageFile, Job
from tests.api.test_end_to_end import FEI, USER_PASSWORD, wait_for_job
from tests.api.test_uploads import create, new_project, patch
from tests.conftest import LiveServer

CLIENTS = 5


def _catalogue_counts(server: LiveServer, dataset_id: str) -> tuple[int, int, int]:
    """File rows, jobs and images of a dataset, read from the server's catalogue itself."""
    engine = create_engine(normalise_url(server.env["ALLMICRO_DATABASE_URL"]))
    try:
        with engine.connect() as conn:
            files = conn.scalar(
                select(func.count()).select_from(File).where(File.dataset_id == dataset_id)
            )
            jobs = conn.scalar(
                select(func.count()).select_from(Job).where(Job.dataset_id == dataset_id)
            )
            images = conn.scalar(
                select(func.count(func.distinct(Image.id)))
                .select_from(Image)
                .join(ImageFile, ImageFile.image_id == Image.id)
                .where(Image.dataset_id == dataset_id)
            )
    finally:
        engine.dispose()
    return int(files or 0), int(jobs or 0), int(images or 0)


def _patch_at_once(clients: list[httpx.Client], locations: list[str], data: bytes) -> list[Any]:
    """Each client sends data from offset 0 to its location, all released at the same moment
    (real threads, one connection each); the clients are closed afterwards."""
    start = threading.Barrier(len(clients))
    answers: list[Any] = [None] * len(clients)

    def send(index: int) -> None:
        start.wait()
        try:
            answers[index] = patch(clients[index], locations[index], 0, data)
        except httpx.HTTPError as exc:
            answers[index] = exc

    threads = [threading.Thread(target=send, args=(i,)) for i in range(len(clients))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    for client in clients:
        client.close()
    return answers


def test_one_file_from_five_clients_at_once_is_one_file_one_job_one_image(
    shared_server: LiveServer,
) -> None:
    email = "racer@upload-races.example"
    _project_id, dataset_id = new_project(shared_server, email, "Upload races")
    data = FEI.read_bytes()
    clients = [shared_server.client(email, USER_PASSWORD) for _ in range(CLIENTS)]
    locations = [
        create(client, len(data), filename=FEI.name, dataset_id=dataset_id).headers["location"]
        for client in clients
    ]
    answers = _patch_at_once(clients, locations, data)
    assert all(isinstance(a, httpx.Response) and a.status_code == 204 for a in answers), answers
    outcomes = {(a.headers["x-allmicro-file-id"], a.headers["x-allmicro-job-id"]) for a in answers}
    assert len(outcomes) == 1, outcomes
    (_file_id, job_id), *_ = outcomes
    with shared_server.client(email, USER_PASSWORD) as client:
        assert wait_for_job(client, job_id)["status"] == "succeeded"
    assert _catalogue_counts(shared_server, dataset_id) == (1, 1, 1)


def test_of_two_patches_at_once_the_loser_learns_the_offset_not_gone(
    shared_server: LiveServer,
) -> None:
    """Both send the whole file from offset 0: one writes it, the other waits for the upload's
    lock and then finds it complete (204 with its outcome) or moved on (409 with the offset),
    never '410 Gone, start a new one'."""
    email = "twice@upload-races.example"
    _project_id, dataset_id = new_project(shared_server, email, "Twin patches")
    data = FEI.read_bytes()
    for _round in range(3):
        with shared_server.client(email, USER_PASSWORD) as client:
            created = create(client, len(data), filename=f"twin{_round}.tif", dataset_id=dataset_id)
            location = created.headers["location"]
        clients = [shared_server.client(email, USER_PASSWORD) for _ in range(2)]
        answers = _patch_at_once(clients, [location, location], data)
        assert all(isinstance(a, httpx.Response) for a in answers), answers
        codes = sorted(a.status_code for a in answers)
        assert codes in ([204, 204], [204, 409]), [(a.status_code, a.text) for a in answers]
        for answer in answers:
            assert answer.headers["upload-offset"] == str(len(data)), answer.headers
            if answer.status_code == 204:
                assert answer.headers["x-allmicro-file-id"]
        ids = {a.headers.get("x-allmicro-file-id") for a in answers if a.status_code == 204}
        assert len(ids) == 1
