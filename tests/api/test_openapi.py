"""The OpenAPI document is valid OpenAPI, names every operation once, and types byte bodies;
a client generated from it by openapi-python-client has every operation and works."""

from __future__ import annotations

import importlib
import io
import json
import pkgutil
import re
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import numpy as np
import pytest
import tifffile
from openapi_spec_validator import validate

from allmicro_data.api.app import create_app
from allmicro_data.api.openapi_media import BINARY_SCHEMA, CLIENT_CONTENT_TYPE_OVERRIDES
from allmicro_data.settings import Settings
from tests.conftest import TLS, LiveServer, PostgresDatabases, module_server, wait_until

GENERATOR = Path(sys.executable).with_name("openapi-python-client")
# The generated package's import name (unique, so it cannot shadow anything of ours).
CLIENT_PACKAGE = "allmicro_generated_client"

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
    ("get", "/api/images/{image_id}/figure"): {"image/png", "image/tiff"},
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


# ------------------------------------------------------------------ a generated client


@pytest.fixture(scope="module", params=["sqlite"])
def server(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    postgres_databases: PostgresDatabases | None,
) -> Iterator[LiveServer]:
    with module_server(request, tmp_path_factory, postgres_databases, "openapi") as server:
        yield server


@pytest.fixture(scope="module")
def generated(
    server: LiveServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ModuleType, Path, str]]:
    """The client openapi-python-client generates from the live server's /openapi.json,
    imported: (package, its directory, what the generator printed)."""
    directory = tmp_path_factory.mktemp("generated")
    document = directory / "openapi.json"
    document.write_bytes(
        httpx.get(f"{server.url}/openapi.json", verify=TLS).raise_for_status().content
    )
    config = directory / "config.json"
    config.write_text(
        json.dumps(
            {
                "content_type_overrides": CLIENT_CONTENT_TYPE_OVERRIDES,
                # No ruff run over the output: not needed to import it, and seconds slower.
                "post_hooks": [],
            }
        )
    )
    package = directory / CLIENT_PACKAGE
    generator = subprocess.run(
        [
            str(GENERATOR),
            "generate",
            f"--path={document}",
            f"--output-path={package}",
            f"--config={config}",
            "--meta=none",
            "--fail-on-warning",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    printed = generator.stdout + generator.stderr
    assert generator.returncode == 0, printed
    sys.path.insert(0, str(directory))
    try:
        yield importlib.import_module(CLIENT_PACKAGE), package, printed
    finally:
        sys.path.remove(str(directory))
        for name in [n for n in sys.modules if n.split(".")[0] == CLIENT_PACKAGE]:
            del sys.modules[name]


def _endpoint(package: ModuleType, tag: str, operation: str) -> Any:
    return importlib.import_module(f"{package.__name__}.api.{tag}.{operation}")


def test_the_generated_client_has_every_operation_and_imports(
    generated: tuple[ModuleType, Path, str], server: LiveServer
) -> None:
    package, directory, printed = generated
    assert "warning" not in printed.lower(), printed
    # Every module imports (a broken function would fail here) ...
    for module in pkgutil.walk_packages(package.__path__, f"{package.__name__}."):
        importlib.import_module(module.name)
    # ... and every operation of the document is one of them, none left out.
    request = re.compile(r'"method": "(\w+)",\s*"url": "([^"]+)"')
    generated_operations = {
        (method, url)
        for path in (directory / "api").rglob("*.py")
        for method, url in request.findall(path.read_text())
    }
    document = httpx.get(f"{server.url}/openapi.json", verify=TLS).json()
    assert generated_operations == set(_operations(document))


def _tiny_tiff() -> tuple[bytes, np.ndarray]:
    pixels = (np.arange(24 * 32, dtype=np.uint16) * 7).reshape(24, 32)
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, pixels)
    return buffer.getvalue(), pixels


def test_a_generated_client_lists_projects_datasets_and_images_and_downloads_ome_xml(
    generated: tuple[ModuleType, Path, str], server: LiveServer
) -> None:
    package = generated[0]
    types = importlib.import_module(f"{package.__name__}.types")
    models = importlib.import_module(f"{package.__name__}.models")

    def call(tag: str, operation: str, *args: Any, status: int = 200, **kwargs: Any) -> Any:
        response = _endpoint(package, tag, operation).sync_detailed(*args, client=api, **kwargs)
        assert response.status_code == status, response.content
        return response.parsed

    api = package.AuthenticatedClient(base_url=server.url, token=server.token(), timeout=60)
    project = call(
        "catalogue",
        "create_project_api_projects_post",
        body=models.ProjectIn(name="Generated client"),
        status=201,
    )
    dataset = call(
        "catalogue",
        "create_dataset_api_projects_project_id_datasets_post",
        project.id,
        body=models.DatasetIn(name="Generated session"),
        status=201,
    )
    data, pixels = _tiny_tiff()
    uploaded = call(
        "files",
        "upload_file_api_datasets_dataset_id_files_post",
        dataset.id,
        body=models.BodyUploadFileApiDatasetsDatasetIdFilesPost(
            file=types.File(payload=io.BytesIO(data), file_name="generated.tif")
        ),
        status=201,
    )

    def job_done() -> Any:
        job = call("catalogue", "get_job_api_jobs_job_id_get", uploaded.job_id)
        return job if job.status in ("succeeded", "failed") else None

    job = wait_until(job_done, timeout=90, what="the ingest job")
    assert job.status == "succeeded", job.error

    projects = call("catalogue", "list_projects_api_projects_get")
    assert project.id in [p.id for p in projects.items]
    datasets = call("catalogue", "list_datasets_api_projects_project_id_datasets_get", project.id)
    assert [d.id for d in datasets.items] == [dataset.id]
    images = call("catalogue", "list_dataset_images_api_datasets_dataset_id_images_get", dataset.id)
    (image,) = images.items
    assert image.shape[-2:] == list(pixels.shape)

    ome_xml = call("catalogue", "get_image_ome_xml_api_images_image_id_ome_xml_get", image.id)
    # A byte body (the override made it a File), the image's OME-XML.
    text = ome_xml.payload.read().decode("utf-8")
    assert "<OME" in text and f'SizeX="{pixels.shape[1]}"' in text

    # Without a token the same client gets the problem document, parsed.
    anonymous = package.Client(base_url=server.url)
    refused = _endpoint(package, "catalogue", "list_projects_api_projects_get").sync_detailed(
        client=anonymous
    )
    assert refused.status_code == 401
    assert isinstance(refused.parsed, models.Problem)
