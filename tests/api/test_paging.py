"""Paged listings: every one takes the same bounded limit and offset, and answers one window of
the listing with the count of all of it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from allmicro_data.api.app import create_app
from allmicro_data.settings import Settings
from tests.conftest import LiveServer

# Each paged listing and its default page size; all but the share link's answer a Page.
LISTINGS = {
    "/api/organisations": 100,
    "/api/users": 100,
    "/api/projects": 100,
    "/api/projects/{project_id}/datasets": 100,
    "/api/datasets/{dataset_id}/images": 100,
    "/api/datasets/{dataset_id}/jobs": 100,
    "/api/jobs": 100,
    "/api/images": 100,
    "/api/audit": 100,
    "/api/admin/storage/scrubs": 20,
    "/api/share/{token}/datasets/{dataset_id}/images": 200,
}
PAGE_KEYS = {"items", "total", "total_exact", "limit", "offset"}


def test_every_listing_takes_the_same_bounded_limit_and_offset(tmp_path: Path) -> None:
    document = create_app(Settings(data_dir=tmp_path)).openapi()
    schemas = document["components"]["schemas"]
    paged: dict[str, dict[str, Any]] = {}
    for path, operations in document["paths"].items():
        for operation in operations.values():
            query = {p["name"]: p for p in operation.get("parameters", []) if p["in"] == "query"}
            if "limit" in query or "offset" in query:
                paged[path] = {"query": query, "operation": operation}
    assert set(paged) == set(LISTINGS)
    for path, found in paged.items():
        limit, offset = found["query"]["limit"], found["query"]["offset"]
        assert limit["schema"] == {
            "type": "integer",
            "maximum": 1000,
            "minimum": 1,
            "description": "page size",
            "default": LISTINGS[path],
            "title": "Limit",
        }, path
        assert offset["schema"] == {
            "type": "integer",
            "maximum": 1_000_000_000,
            "minimum": 0,
            "description": "items to skip",
            "default": 0,
            "title": "Offset",
        }, path
        if "/share/" in path:
            continue
        ok = found["operation"]["responses"]["200"]["content"]["application/json"]["schema"]
        page = schemas[ok["$ref"].rsplit("/", 1)[1]]
        assert set(page["properties"]) == PAGE_KEYS, path
        assert page["properties"]["total_exact"]["default"] is True


def test_a_page_is_a_window_of_the_listing_with_the_count_of_all(
    shared_server: LiveServer,
) -> None:
    admin = shared_server.client()
    for n in range(3):
        admin.post("/api/projects", json={"name": f"paging {n}"}).raise_for_status()
    everything = admin.get("/api/projects", params={"limit": 1000}).json()
    assert everything["total"] == len(everything["items"]) >= 3
    assert (everything["limit"], everything["offset"], everything["total_exact"]) == (1000, 0, True)

    page = admin.get("/api/projects", params={"limit": 2, "offset": 1}).json()
    assert set(page) == PAGE_KEYS
    assert page["items"] == everything["items"][1:3]
    assert (page["total"], page["limit"], page["offset"]) == (everything["total"], 2, 1)
    assert admin.get("/api/projects").json()["limit"] == 100

    for bad in ({"limit": 0}, {"limit": 1001}, {"offset": -1}, {"offset": 1_000_000_001}):
        refused = admin.get("/api/projects", params=bad)
        assert refused.status_code == 422, bad
        assert refused.headers["content-type"].startswith("application/problem+json")
