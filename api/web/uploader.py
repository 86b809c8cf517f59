"""What the dataset page's resumable uploader (static/upload.js) is given: the tus endpoint, the
vendors' naming rules of allmicro_data.ingest.grouping as JavaScript patterns, and its texts."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from allmicro_data.api.routers.uploads import PREFIX
from allmicro_data.ingest.grouping import ACQUISITION_RULES

# Bytes sent per PATCH: each carries its sha256 (tus checksum extension), and the server keeps a
# chunk only once it matches, so a cut connection costs at most this much again.
CHUNK_BYTES = 32 * 1024 * 1024
# Python's named group; the rules use no other syntax that JavaScript reads differently.
_NAMED_GROUP = re.compile(r"\(\?P<")


def acquisition_rules() -> list[dict[str, Any]]:
    """grouping.ACQUISITION_RULES in the form upload.js applies: each kind's pattern as a
    JavaScript RegExp source (matched case-insensitively) with its `stem` group, and its rank
    (None: a sidecar, never opened on its own)."""
    return [
        {
            "vendor": rule.vendor,
            "byNameAlone": rule.by_name_alone,
            "kinds": [
                {
                    "name": kind.name,
                    "pattern": _NAMED_GROUP.sub("(?<", kind.pattern.pattern),
                    "rank": kind.rank,
                }
                for kind in rule.kinds
            ],
        }
        for rule in ACQUISITION_RULES
    ]


def uploader_strings(gettext: Callable[[str], str]) -> dict[str, str]:
    """The texts the uploader shows, translated on the server."""
    return {
        "ready": gettext("Ready to upload"),
        "starting": gettext("Starting…"),
        "sending": gettext("Sending"),
        "paused": gettext("Paused"),
        "pause": gettext("Pause"),
        "resume": gettext("Resume"),
        "waiting": gettext("Connection lost: trying again…"),
        "offline": gettext("Connection lost: the upload goes on when the network is back."),
        "received": gettext("Received and verified. Processing starts now."),
        "present": gettext("Already in this dataset: not processed again."),
        "refused": gettext("Refused"),
        "failed": gettext("Could not be sent"),
        "acquisition": gettext("One acquisition, one image"),
        "together": gettext("These files belong together"),
        "separate": gettext("Upload separately"),
        "total": gettext("Total"),
        "choose": gettext("Choose files to upload first."),
        "unfinished": gettext(
            "Unfinished uploads from an earlier visit: choose the same files again to go on "
            "where they stopped."
        ),
        "follow": gettext("Show the processing"),
    }


def uploader_config(
    dataset_id: str, csrf: str | None, language: str, gettext: Callable[[str], str]
) -> dict[str, Any]:
    return {
        "datasetId": dataset_id,
        "endpoint": f"{PREFIX}/",
        "csrf": csrf,
        "chunkBytes": CHUNK_BYTES,
        "language": language,
        "rules": acquisition_rules(),
        "strings": uploader_strings(gettext),
    }
