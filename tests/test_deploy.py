"""The production compose file is valid for Debian's docker-compose and runs every service."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import REPO

COMPOSE = shutil.which("docker-compose")


def test_compose_file_passes_docker_compose_config(tmp_path: Path) -> None:
    if COMPOSE is None:
        # `make pytest` installs it; in CI its absence is a failure, elsewhere a skip.
        reason = "docker-compose is missing (apt-get install docker-compose)"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    deploy = tmp_path / "deploy"
    shutil.copytree(REPO / "deploy", deploy)
    # An operator copies the example settings into place first; so does the test.
    shutil.copy(deploy / "compose" / "allmicro.env.example", deploy / "compose" / "allmicro.env")
    assert COMPOSE is not None
    checked = subprocess.run(
        [COMPOSE, "-f", str(deploy / "compose.yaml"), "config", "--services"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert checked.returncode == 0, checked.stderr
    services = set(checked.stdout.split())
    assert {f"minio{n}" for n in range(1, 5)} <= services
    assert {"postgres", "redis", "migrate", "api1", "api2", "worker", "scrub", "caddy"} <= services


def test_compose_settings_example_names_every_secret() -> None:
    example = (REPO / "deploy" / "compose" / "allmicro.env.example").read_text()
    for name in (
        "ALLMICRO_SECRET_KEY",
        "POSTGRES_PASSWORD",
        "MINIO_ROOT_PASSWORD",
        "ALLMICRO_S3_SECRET_KEY",
        "ALLMICRO_BROKER_URL",
    ):
        assert f"\n{name}=" in example, name


def test_compose_api_trusts_forwarded_headers_from_caddys_network_only() -> None:
    import ipaddress

    import yaml  # with uvicorn[standard]

    compose = yaml.safe_load((REPO / "deploy" / "compose.yaml").read_text())
    services, networks = compose["services"], compose["networks"]
    (edge,) = [c["subnet"] for c in networks["edge"]["ipam"]["config"]]
    # Caddy reaches the API only over the edge network, whose subnet the API trusts; nothing
    # else is on it.
    assert services["caddy"]["networks"] == ["edge"]
    on_edge = {name for name, s in services.items() if "edge" in s.get("networks", [])}
    assert on_edge == {"caddy", "api1", "api2"}
    for api in ("api1", "api2"):
        trusted = services[api]["environment"]["ALLMICRO_TRUSTED_PROXIES"].split(",")
        assert [ipaddress.ip_network(t) for t in trusted] == [ipaddress.ip_network(edge)]
        assert services[api]["environment"]["ALLMICRO_METRICS_PORT"]
