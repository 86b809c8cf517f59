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
