"""The OpenAPI document is valid OpenAPI, names every operation once, and types byte bodies."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from openapi_spec_validator import validate

from allmicro_data.api.app import create_app
from allmicro_data.api.openapi_media import BINARY_SCHEMA
from allmicro_data.settings import Settings

# Every route that sends bytes rather than JSON, and its media types.
BINARY_ROUTES = {
    ("get", "/api/images/{image_id}/ome.xml"): {"application/xml"},
    ("get", "/api/files/{file_id}/download"): {"application/octet-stream"},
    ("get", "/api/datasets/{dataset_id}/download.zip"): {"application/zip"},
    ("post", "/api/downloads/zip"): {"application/zip"},
    ("get", "/api/datasets/{dataset_id}/metadata.csv"): {"text/csv"},
    ("get", "/api/audit.csv"): {"text/csv"},
    ("get", "/api/share/{token}/files/{file_id}/download"): {"application/octet-stream"},
    ("get", "/api/share/{token}/datasets/{dataset_id}/download.zip"): {"application/zip"},
    ("get", "/api/share/{token}/images/{image_id}/tiles/{level}/{ty}/{tx}.png"): {"image/png"},
    ("get", "/api/images/{image_id}/tiles/{level}/{ty}/{tx}.png"): {"image/png"},
    ("get", "/api/images/{image_id}/thumbnail.jpg"): {"image/jpeg"},
    ("get", "/iiif/3/{image_id}/{region}/{size}/{rotation}/{quality_format}"): {
        "image/jpeg",
        "image/png",
        "image/webp",
    },
    ("get", "/zarr/{image_id}/{path}"): {"application/octet-stream"},
    ("get", "/zarr/c/{token}/{path}"): {"application/octet-stream"},
}
TUS_ERRORS = {
    ("post", "/api/uploads/"): {"409", "412", "413", "415", "460"},
    ("head", "/api/uploads/{upload_id}"): {"412"},
    ("patch", "/api/uploads/{upload_id}"): {"409", "412", "413", "415", "460"},
    ("delete", "/api/uploads/{upload_id}"): {"412"},
}


@pytest.fixture(scope="module")
def document(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tmp_path: Path = tmp_path_factory.mktemp("openapi")
    return create_app(Settings(data_dir=tmp_path)).openapi()


def _operations(document: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {
        (method, path): operation
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if isinstance(operation, dict) and "responses" in operation
    }


def test_the_document_is_valid_openapi(document: dict[str, Any]) -> None:
    validate(document)


def test_every_operation_has_its_own_operation_id(document: dict[str, Any]) -> None:
    ids = Counter(op["operationId"] for op in _operations(document).values())
    assert [name for name, count in ids.items() if count > 1] == []
    # The GET/HEAD twins are both documented, each under its own id.
    operations = _operations(document)
    for path in ("/iiif/3/{image_id}/info.json", "/zarr/{image_id}/{path}"):
        assert operations[("get", path)]["operationId"] != operations[("head", path)]["operationId"]


def test_every_binary_response_has_a_binary_schema(document: dict[str, Any]) -> None:
    operations = _operations(document)
    for (method, path), media_types in BINARY_ROUTES.items():
        # HEAD twins document the same body as their GET.
        for twin in {method, "head"} if (("head", path) in operations) else {method}:
            content = operations[(twin, path)]["responses"]["200"]["content"]
            for media_type in media_types:
                assert content[media_type].get("schema") == BINARY_SCHEMA, (twin, path, media_type)


def test_tus_status_codes_are_documented(document: dict[str, Any]) -> None:
    operations = _operations(document)
    assert "204" in operations[("patch", "/api/uploads/{upload_id}")]["responses"]
    assert "204" in operations[("delete", "/api/uploads/{upload_id}")]["responses"]
    assert "204" in operations[("options", "/api/uploads/")]["responses"]
    for key, codes in TUS_ERRORS.items():
        responses = operations[key]["responses"]
        assert codes <= set(responses), (key, codes - set(responses))
        for code in codes:
            assert "application/problem+json" in responses[code]["content"], (key, code)
