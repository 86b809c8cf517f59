"""A job process loads what its jobs use and not what only the server or the CLI needs."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import REPO

# What a spawned job process imports before and while it ingests: the job runner's module, the
# ingest handler and the OME model it builds documents with.
_JOB_PROCESS = """
import json, sys
import allmicro_data.jobs
import allmicro_data.ingest.pipeline
import ome_types
units = sys.modules.get("ome_types.units")
print(json.dumps({
    "alembic": "alembic" in sys.modules,
    "pint_registry": getattr(units, "ureg", None) is not None,
}))
"""


def test_a_job_process_loads_neither_the_migrations_nor_a_unit_registry() -> None:
    done = subprocess.run(
        [sys.executable, "-c", _JOB_PROCESS],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=True,
        timeout=120,
    )
    loaded = json.loads(done.stdout.splitlines()[-1])
    assert loaded == {"alembic": False, "pint_registry": False}
