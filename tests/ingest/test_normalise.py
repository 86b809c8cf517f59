"""The one sanitiser of vendor metadata (ingest/readers/normalise.jsonable): strict JSON out."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import numpy as np

from allmicro_data.ingest.readers.normalise import jsonable


def test_vendor_values_become_strict_json_nan_as_null_bytes_as_text_or_hex() -> None:
    vendor = {
        "nan": float("nan"),
        "inf": float("-inf"),
        "numpy_nan": np.float32("nan"),
        "array": np.array([1.5, np.nan, np.inf]),
        "complex": complex(float("nan"), 2.0),
        "text_bytes": b"Quanta FEG\x00\x00",
        "binary": b"\xff\x00\xfe",
        "long": bytes(300),
        "numbers": (np.uint16(7), np.bool_(True)),
        "when": datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC),
        3: "key made text",
    }
    clean = jsonable(vendor)
    assert clean == {
        "nan": None,
        "inf": None,
        "numpy_nan": None,
        "array": [1.5, None, None],
        "complex": [None, 2.0],
        "text_bytes": "Quanta FEG",
        "binary": "ff00fe",
        "long": "<300 bytes>",
        "numbers": [7, True],
        "when": "2024-05-06T07:08:09+00:00",
        "3": "key made text",
    }
    # What the catalogue stores: PostgreSQL's JSON refuses NaN and Infinity.
    json.dumps(clean, allow_nan=False)
