"""OpenAPI response declarations for routes that send bytes (images, archives, XML, CSV), not JSON."""

from typing import Any

# Clients generated from the document read these bodies as raw bytes, not as parsed JSON.
BINARY_SCHEMA: dict[str, Any] = {"type": "string", "format": "binary"}


def binary(*media_types: str, description: str | None = None) -> dict[str, Any]:
    """One response entry whose body, in each of `media_types`, is a byte string."""
    response: dict[str, Any] = {"content": {m: {"schema": BINARY_SCHEMA} for m in media_types}}
    if description is not None:
        response["description"] = description
    return response


# The byte media types our responses use that openapi-python-client does not read as bytes by
# itself (it knows only application/octet-stream, JSON and text/*): a client is generated with
# these in its config's `content_type_overrides`, or it leaves those responses out. The
# document keeps the true media types; tests/api/test_openapi.py generates a client so.
CLIENT_CONTENT_TYPE_OVERRIDES: dict[str, str] = {
    media_type: "application/octet-stream"
    for media_type in (
        "application/xml",
        "application/zip",
        "image/jpeg",
        "image/png",
        "image/tiff",
        "image/webp",
    )
}
