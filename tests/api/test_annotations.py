"""Tags and key-value annotations on images and datasets: contributors edit them, anyone who
reads the project finds images by them, and they leave in the metadata exports and, as
Tag- and MapAnnotations, in the served OME-XML."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import ome_types
import pytest

from tests.api.test_end_to_end import USER_PASSWORD
from tests.api.test_lifecycle import _created, ingest, tiny_tiff
from tests.conftest import LiveServer, PostgresDatabases, module_server

CONTRIBUTOR = "tina@lab.example"
VIEWER = "viktor@lab.example"
ANNOTATIONS_NS = "https://allmicro-data.eu/ns/annotations"
DATASET_NS = "https://allmicro-data.eu/ns/dataset-annotations"


@dataclass
class Tagged:
    server: LiveServer
    dataset: str
    image: str
    other_image: str


@pytest.fixture(scope="module", params=["sqlite"])
def tagged(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    postgres_databases: PostgresDatabases | None,
) -> Iterator[Tagged]:
    with (
        module_server(request, tmp_path_factory, postgres_databases, "annotations") as server,
        server.client() as admin,
    ):
        org = _created(admin.post("/api/organisations", json={"name": "Lab", "kind": "partner"}))
        project = _created(admin.post("/api/projects", json={"name": "Batches"}))
        for email, role in ((CONTRIBUTOR, "contributor"), (VIEWER, "viewer")):
            body = {"email": email, "organisation_id": org, "password": USER_PASSWORD}
            user = _created(admin.post("/api/users", json=body))
            member = {"user_id": user, "role": role}
            _created(admin.post(f"/api/projects/{project}/members", json=member))
        dataset = _created(
            admin.post(f"/api/projects/{project}/datasets", json={"name": "Batch 7"})
        )
        yield Tagged(
            server=server,
            dataset=dataset,
            image=ingest(server, dataset, "coated.tif", tiny_tiff(11), CONTRIBUTOR),
            other_image=ingest(server, dataset, "bare.tif", tiny_tiff(12), CONTRIBUTOR),
        )


def client(tagged: Tagged, email: str) -> httpx.Client:
    return tagged.server.client(email, USER_PASSWORD)


def found(c: httpx.Client, **params: str) -> set[str]:
    response = c.get("/api/images", params=params)
    assert response.status_code == 200, response.text
    return {i["id"] for i in response.json()["items"]}


IMAGE_ANNOTATIONS = {
    "tags": ["batch-7", "Coating", " batch-7 "],
    "annotations": [
        {"key": "sample", "value": "S-12"},
        {"key": "client reference", "value": "PO 4471"},
    ],
}


def test_contributors_annotate_and_viewers_find_images_by_them(tagged: Tagged) -> None:
    with client(tagged, CONTRIBUTOR) as c:
        saved = c.put(f"/api/images/{tagged.image}/annotations", json=IMAGE_ANNOTATIONS)
        assert saved.status_code == 200, saved.text
        # Whitespace is tidied and a repeated tag kept once.
        assert saved.json()["tags"] == ["batch-7", "Coating"]
    with client(tagged, VIEWER) as v:
        shown = v.get(f"/api/images/{tagged.image}").json()
        assert shown["tags"] == ["batch-7", "Coating"]
        assert shown["annotations"] == IMAGE_ANNOTATIONS["annotations"]
        refused = v.put(f"/api/images/{tagged.image}/annotations", json={"tags": ["mine"]})
        assert refused.status_code == 403
        assert found(v, q="tag:batch-7") == {tagged.image}
        assert found(v, q="tag:COATING") == {tagged.image}
        assert found(v, q="tag:batch") == set()  # a tag is matched whole
        # Free text looks through the image's own values too.
        assert found(v, q="po 4471") == {tagged.image}
        assert found(v, q="tag:batch-7 bare") == set()


def test_a_dataset_tag_finds_every_image_of_the_dataset(tagged: Tagged) -> None:
    with client(tagged, CONTRIBUTOR) as c:
        body = {"tags": ["delivery-2026"], "annotations": [{"key": "batch", "value": "7"}]}
        saved = c.put(f"/api/datasets/{tagged.dataset}/annotations", json=body)
        assert saved.status_code == 200, saved.text
    with client(tagged, VIEWER) as v:
        assert v.get(f"/api/datasets/{tagged.dataset}").json()["tags"] == ["delivery-2026"]
        assert found(v, q="tag:delivery-2026") == {tagged.image, tagged.other_image}


def test_annotations_are_refused_when_they_are_not_one_line_or_lack_a_key(tagged: Tagged) -> None:
    with client(tagged, CONTRIBUTOR) as c:
        url = f"/api/images/{tagged.other_image}/annotations"
        assert c.put(url, json={"tags": ["bell\u0007"]}).status_code == 422
        missing = {"annotations": [{"key": " ", "value": "orphan"}]}
        assert c.put(url, json=missing).status_code == 422
        assert c.put(url, json={"tags": ["x" * 1001]}).status_code == 422


def test_annotations_leave_in_the_metadata_csv_and_json(tagged: Tagged) -> None:
    with client(tagged, CONTRIBUTOR) as c:
        c.put(f"/api/images/{tagged.image}/annotations", json=IMAGE_ANNOTATIONS).raise_for_status()
    with client(tagged, VIEWER) as v:
        records = v.get(f"/api/datasets/{tagged.dataset}/metadata.json").json()
        (record,) = [r for r in records if r["id"] == tagged.image]
        assert record["tags"] == ["batch-7", "Coating"]
        assert record["annotations"] == IMAGE_ANNOTATIONS["annotations"]
        table = v.get(f"/api/datasets/{tagged.dataset}/metadata.csv").text
    rows = {row["id"]: row for row in csv.DictReader(io.StringIO(table))}
    assert rows[tagged.image]["tags"] == "batch-7; Coating"
    assert rows[tagged.image]["annotations"] == "sample=S-12; client reference=PO 4471"
    assert rows[tagged.other_image]["tags"] == ""


def test_the_served_ome_xml_carries_the_annotations_as_they_are_now(tagged: Tagged) -> None:
    with client(tagged, CONTRIBUTOR) as c:
        c.put(f"/api/images/{tagged.image}/annotations", json=IMAGE_ANNOTATIONS).raise_for_status()
        body = {"tags": ["delivery-2026"], "annotations": [{"key": "batch", "value": "7"}]}
        c.put(f"/api/datasets/{tagged.dataset}/annotations", json=body).raise_for_status()
        document = c.get(f"/api/images/{tagged.image}/ome.xml")
        assert document.status_code == 200
    ome = ome_types.from_xml(document.text, validate=True)
    annotations = ome.structured_annotations
    by_id = {a.id: a for a in [*annotations.tag_annotations, *annotations.map_annotations]}
    referenced = {ref.id for ref in ome.images[0].annotation_refs}
    tags = {a.value for a in annotations.tag_annotations if a.namespace == ANNOTATIONS_NS}
    assert tags == {"batch-7", "Coating"}
    (pairs,) = [a for a in annotations.map_annotations if a.namespace == ANNOTATIONS_NS]
    assert [(m.k, m.value) for m in pairs.value.ms] == [
        ("sample", "S-12"),
        ("client reference", "PO 4471"),
    ]
    (of_dataset,) = [a for a in annotations.map_annotations if a.namespace == DATASET_NS]
    assert [(m.k, m.value) for m in of_dataset.value.ms] == [("batch", "7")]
    ours = {i for i, a in by_id.items() if a.namespace in (ANNOTATIONS_NS, DATASET_NS)}
    assert ours <= referenced
    # The acquisition annotations ingest wrote are still there.
    assert len(annotations.map_annotations) >= 4

    # Changed tags are served at once: the document is built as it is asked for.
    with client(tagged, CONTRIBUTOR) as c:
        c.put(f"/api/images/{tagged.image}/annotations", json={"tags": ["re-cut"]})
        again = ome_types.from_xml(c.get(f"/api/images/{tagged.image}/ome.xml").text)
    tags = {
        a.value
        for a in again.structured_annotations.tag_annotations
        if a.namespace == ANNOTATIONS_NS
    }
    assert tags == {"re-cut"}
