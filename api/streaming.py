"""Streamed responses for originals (single byte ranges) and archives; shared by every download route."""

from __future__ import annotations

import re
import unicodedata
from urllib.parse import quote

from fastapi.responses import Response, StreamingResponse

from allmicro_data.api.problems import problem
from allmicro_data.archives import DatasetArchive
from allmicro_data.catalogue.models import File
from allmicro_data.storage import ObjectStore

_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


# RFC 8187 attr-char besides letters and digits: everything else in filename* is %-encoded.
_ATTR_CHARS = "!#$&+-.^_`|~"
# Kept in the quoted ASCII fallback: printable ASCII less the quote, the escape, the percent
# (some clients decode it) and path separators.
_FALLBACK = re.compile(r"[^\x20-\x7e]|[\"\\%/]")


def content_disposition(filename: str, disposition: str = "attachment") -> str:
    """A Content-Disposition header (RFC 6266) for a file of this name: the exact name, UTF-8, in
    `filename*`, and an ASCII stand-in in `filename` for clients that do not read it. Every
    response that names a file builds its header here, so no name can break the header."""
    # "Jožef µm.tif" → "Jozef _m.tif": letters lose their accents, what has no ASCII form is _.
    folded = "".join(
        unicodedata.normalize("NFKD", ch).encode("ascii", "ignore").decode() or "_"
        for ch in filename
    )
    fallback = _FALLBACK.sub("_", folded).strip() or "download"
    exact = quote(filename, safe=_ATTR_CHARS)
    return f"{disposition}; filename=\"{fallback}\"; filename*=UTF-8''{exact}"


def parse_range(header: str | None, size: int) -> tuple[int, int] | Response | None:
    """(start, end) of a single `bytes=` range; None for no range; a 416 problem when invalid."""
    if not header:
        return None
    match = _RANGE.match(header.strip())
    unsatisfiable = problem(
        416, "Range not satisfiable", headers={"Content-Range": f"bytes */{size}"}
    )
    if not match or (not match.group(1) and not match.group(2)):
        return unsatisfiable
    if match.group(1):
        start = int(match.group(1))
        end = min(size, int(match.group(2)) + 1) if match.group(2) else size
    else:
        start, end = max(0, size - int(match.group(2))), size
    if start >= size or start >= end:
        return unsatisfiable
    return start, end


def original_response(store: ObjectStore, f: File, byte_range: tuple[int, int] | None) -> Response:
    """The original's bytes exactly as stored, whole or one range, with its sha256."""
    start, end = byte_range or (0, f.size)
    headers = {
        "Content-Disposition": content_disposition(f.original_name),
        "Content-Length": str(end - start),
        "Accept-Ranges": "bytes",
        "X-Checksum-SHA256": f.sha256,
        "ETag": f'"{f.sha256}"',
    }
    if byte_range is not None:
        headers["Content-Range"] = f"bytes {start}-{end - 1}/{f.size}"
    return StreamingResponse(
        store.open(f.storage_key, start, end),
        status_code=206 if byte_range is not None else 200,
        media_type="application/octet-stream",
        headers=headers,
    )


def archive_response(archive: DatasetArchive, filename: str) -> Response:
    return StreamingResponse(
        iter(archive),
        media_type="application/zip",
        headers={
            "Content-Disposition": content_disposition(filename),
            "Content-Length": str(len(archive)),
        },
    )
