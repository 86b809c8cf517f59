"""Shared fixtures: real catalogue databases (SQLite and PostgreSQL), stores, and live servers."""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from tests.zygote import ForkedProcess, Zygote

REPO = Path(__file__).resolve().parents[1]
# The real-sample corpus lives in the repository, so a plain clone tests every reader.
SAMPLES = REPO / "tests" / "data" / "samples"
ADMIN_EMAIL = "admin@example.org"
ADMIN_PASSWORD = "correct horse battery staple"
ALLMICRO = str(Path(sys.executable).with_name("allmicro"))
# Test servers hash passwords with argon2id at its lowest cost: the suite signs in and creates
# users thousands of times, and what it checks does not depend on the cost (the sign-in timing
# test sets the production cost again).
CHEAP_PASSWORD_HASHES = {
    "ALLMICRO_ARGON2_TIME_COST": "1",
    "ALLMICRO_ARGON2_MEMORY_KIB": "1024",
    "ALLMICRO_ARGON2_PARALLELISM": "1",
}
# The suite starts hundreds of Python processes (servers, their job processes, CLI commands):
# with bytecode caching off (PYTHONDONTWRITEBYTECODE, set in some CI images) each of them would
# compile the project's modules again, a few tenths of a second of CPU every time.
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
sys.dont_write_bytecode = False
# httpx builds an SSL context (loading the CA bundle, ~30 ms of CPU) for every Client and every
# httpx.get it is not given one: waiting for a server polls its /healthz every 0.1 s, and tests
# open many clients. Every test's clients share this one (verify=TLS).
TLS = httpx.create_ssl_context()
# Live servers are forked from a process that has imported them already (tests/zygote.py):
# about two CPU-seconds less for each of the suite's server starts.
ZYGOTE = None if os.environ.get("ALLMICRO_TEST_NO_ZYGOTE") else Zygote()


def pytest_sessionfinish(session: pytest.Session) -> None:
    if ZYGOTE is not None:
        ZYGOTE.close()


def run_allmicro(
    *args: str, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """`allmicro args…` as subprocess.run(capture_output=True, text=True) runs it, in a process
    forked from the zygote: each command otherwise spends one to two CPU-s importing what it needs."""
    argv = [ALLMICRO, *args]
    if ZYGOTE is None:
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env)
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        process = ZYGOTE.popen(
            argv,
            env=dict(os.environ) if env is None else env,
            stdout=out.fileno(),
            stderr=err.fileno(),
        )
        try:
            returncode = process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            raise
        out.seek(0)
        err.seek(0)
        return subprocess.CompletedProcess(
            argv,
            returncode,
            out.read().decode(errors="replace"),
            err.read().decode(errors="replace"),
        )


# The test files that take longest, longest first, run first: `make pytest` has pytest-xdist hand
# files out in collection order (--no-loadscope-reorder), so a long file never starts last while
# the other processes sit idle. Ordered by each file's wall time run alone on a loaded 2-core
# machine (2026-12-06; new files of that day by their authors' figures). A missing or renamed
# file here only costs time. Browser tests are here too: collected last (tests/web), they would
# otherwise make the tail.
LONG_FILES = (
    "tests/api/test_token_scopes.py",
    "tests/api/test_schemathesis.py",
    "tests/api/test_viewing.py",
    "tests/api/test_shares_pages.py",
    "tests/api/test_uploads.py",
    "tests/web/test_browser_upload.py",
    "tests/web/test_admin_pages.py",
    "tests/api/test_lifecycle.py",
    "tests/api/test_login.py",
    "tests/test_scale_out.py",
    "tests/api/test_job_recovery.py",
    "tests/api/test_upload_limits.py",
    "tests/api/test_uploads_scale_out.py",
    "tests/api/test_openapi.py",
    "tests/web/test_lifecycle_pages.py",
    "tests/web/test_mirador.py",
    "tests/api/test_zarr_readers.py",
    "tests/api/test_paging.py",
    "tests/web/test_pages.py",
    "tests/api/test_revocation.py",
    "tests/web/test_layout.py",
    "tests/api/test_end_to_end.py",
    "tests/web/test_measure.py",
    "tests/api/test_rois.py",
    "tests/web/test_figures.py",
    "tests/api/test_iiif_limits.py",
    "tests/api/test_agent.py",
    "tests/api/test_upload_races.py",
    "tests/web/test_display_settings.py",
    "tests/api/test_storage_full.py",
    "tests/test_acquisition_fields.py",
    "tests/test_cli.py",
    "tests/api/test_iiif_conformance.py",
    "tests/api/test_ldap_login.py",
    "tests/api/test_iiif_services.py",
    "tests/api/test_file_modes.py",
    "tests/api/test_hostile_input.py",
    "tests/api/test_access_matrix.py",
    "tests/web/test_second_origin.py",
)


# Where the catalogue's dialect matters (SQL, locking, counting, upserts, anything a schemathesis
# run may reach), tests run on SQLite and on PostgreSQL; elsewhere on SQLite only, which keeps
# `make test` within its time. ALLMICRO_TEST_EVERY_DIALECT=1 runs every variant.
POSTGRESQL_FILES = (
    "tests/catalogue/",
    "tests/storage/test_fixity_catalogue.py",
    "tests/test_acquisition_fields.py",
    "tests/api/test_end_to_end.py",
    "tests/api/test_access_matrix.py",
    "tests/api/test_account_security.py",
    "tests/api/test_schemathesis.py",
    "tests/api/test_paging.py",
    "tests/api/test_upload_races.py",
    "tests/api/test_upload_limits.py",
    "tests/api/test_uploads.py",
)


def _postgresql_variant_left_out(item: pytest.Item) -> bool:
    callspec = getattr(item, "callspec", None)
    if callspec is None or "postgresql" not in callspec.params.values():
        return False
    return not item.nodeid.split("::")[0].startswith(POSTGRESQL_FILES)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not os.environ.get("ALLMICRO_TEST_EVERY_DIALECT"):
        left_out = [item for item in items if _postgresql_variant_left_out(item)]
        if left_out:
            config.hook.pytest_deselected(items=left_out)
            items[:] = [item for item in items if not _postgresql_variant_left_out(item)]
    rank = {path: i for i, path in enumerate(LONG_FILES)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::")[0], len(rank)))


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """Debian's Chromium through Playwright, one per test process (tests/web/conftest.py)."""
    from tests.web.conftest import launch_browser

    yield from launch_browser()


def wait_until(
    condition: Callable[[], Any], timeout: float = 60.0, interval: float = 0.1, what: str = ""
) -> Any:
    """Poll condition until it returns something truthy, or fail after timeout seconds."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = condition()
        except Exception as exc:  # the server may not be up yet
            last_error = exc
            result = None
        if result:
            return result
        time.sleep(interval)
    raise AssertionError(
        f"timed out after {timeout}s waiting for {what or condition}: {last_error}"
    )


# ------------------------------------------------------------------ databases


def _postgres_unavailable(reason: str) -> None:
    # In CI a missing PostgreSQL is a failure; on a developer machine it is a skip.
    if os.environ.get("CI"):
        pytest.fail(f"PostgreSQL is required in CI: {reason}")
    pytest.skip(f"PostgreSQL tests skipped: {reason}")


class PostgresDatabases:
    """Throw-away databases on the test server, each emptied and handed out again once its test
    is done, and dropped after the session.

    DROP DATABASE makes PostgreSQL write a checkpoint (seconds on a busy server): dropping every
    database at the end kept one test process busy for half a minute after its last test. An
    emptied database is renamed first, so a process left over from its test cannot reach it."""

    def __init__(self, server_url: str) -> None:
        self.server_url = make_url(server_url).set(drivername="postgresql+psycopg")
        self.created: list[str] = []
        self.free: list[str] = []
        self.engine = create_engine(self.server_url, isolation_level="AUTOCOMMIT")

    def create(self) -> str:
        name = self.free.pop() if self.free else self._new()
        return self.server_url.set(database=name).render_as_string(hide_password=False)

    def _new(self) -> str:
        name = _database_name()
        with self.engine.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        self.created.append(name)
        return name

    def release(self, url: str) -> None:
        """Empty the database at url (its users gone) and keep it for the next create()."""
        old = make_url(url).database
        assert old in self.created, url
        name = _database_name()

        def renamed() -> bool:
            with self.engine.connect() as conn:
                conn.execute(
                    text(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                        " WHERE datname = :name AND pid <> pg_backend_pid()"
                    ),
                    {"name": old},
                )
                # Fails while a terminated session is still leaving.
                conn.execute(text(f'ALTER DATABASE "{old}" RENAME TO "{name}"'))
            return True

        try:
            wait_until(renamed, timeout=5, interval=0.05, what=f"the users of {old} to leave")
        except AssertionError:
            return  # a process keeps coming back: the database is dropped at the end
        self.created[self.created.index(old)] = name
        engine = create_engine(self.server_url.set(database=name), poolclass=NullPool)
        try:
            with engine.begin() as conn:
                # As CREATE DATABASE makes it from template1: an empty public schema.
                conn.execute(text("DROP SCHEMA public CASCADE"))
                conn.execute(text("CREATE SCHEMA public AUTHORIZATION pg_database_owner"))
                conn.execute(text("GRANT USAGE ON SCHEMA public TO PUBLIC"))
        finally:
            engine.dispose()
        self.free.append(name)

    def drop_all(self) -> None:
        """Drop every database, in a process of its own that the session does not wait for:
        DROP DATABASE returns only after the checkpoint it asks for (up to ten seconds on a
        busy server), and nothing in the session needs it done."""
        self.engine.dispose()
        if not self.created:
            return
        script = (
            "import sys\n"
            "from sqlalchemy import create_engine, text\n"
            "engine = create_engine(sys.argv[1], isolation_level='AUTOCOMMIT')\n"
            "with engine.connect() as conn:\n"
            "    for name in sys.argv[2:]:\n"
            "        conn.execute(text(f'DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)'))\n"
        )
        server = self.server_url.render_as_string(hide_password=False)
        subprocess.Popen(
            [sys.executable, "-c", script, server, *self.created],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )


def _database_name() -> str:
    return f"allmicro_test_{os.getpid()}_{secrets.token_hex(4)}"


@pytest.fixture(scope="session")
def postgres_databases() -> Iterator[PostgresDatabases | None]:
    url = os.environ.get("ALLMICRO_TEST_DATABASE_URL")
    if not url:
        yield None
        return
    databases = PostgresDatabases(url)
    try:
        with databases.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:
        databases.engine.dispose()
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL at ALLMICRO_TEST_DATABASE_URL is unreachable: {exc}")
        yield None
        return
    yield databases
    databases.drop_all()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(
    request: pytest.FixtureRequest, tmp_path: Path, postgres_databases: PostgresDatabases | None
) -> Iterator[str]:
    """An empty catalogue database of each kind (one per test)."""
    url = _empty_catalogue(request.param, tmp_path, postgres_databases)
    yield url
    _release_catalogue(url, postgres_databases)


def _empty_catalogue(
    kind: str, directory: Path, postgres_databases: PostgresDatabases | None
) -> str:
    """The URL of a new, empty catalogue: a SQLite file in directory, or a PostgreSQL database."""
    if kind == "sqlite":
        return f"sqlite:///{directory / 'catalogue.sqlite3'}"
    if postgres_databases is None:
        _postgres_unavailable("ALLMICRO_TEST_DATABASE_URL is not set or the server is unreachable")
    assert postgres_databases is not None
    return postgres_databases.create()


def _release_catalogue(url: str, postgres_databases: PostgresDatabases | None) -> None:
    """Done with the catalogue at url: a PostgreSQL database goes back to be used again."""
    if postgres_databases is not None and url.startswith("postgresql"):
        postgres_databases.release(url)


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Any:
    from allmicro_data.settings import Settings

    return Settings(
        data_dir=tmp_path / "data",
        database_url=database_url,
        admin_email=ADMIN_EMAIL,
        admin_password=ADMIN_PASSWORD,
        job_lease_seconds=5,
        # Jobs of tests run beside other tests: not in the idle class (see _server_env).
        job_idle_scheduling=False,
        **{k.removeprefix("ALLMICRO_").lower(): int(v) for k, v in CHEAP_PASSWORD_HASHES.items()},
    )


@pytest.fixture
def services(settings: Any) -> Iterator[Any]:
    """Services on a migrated catalogue, without a server."""
    from allmicro_data.catalogue.db import upgrade
    from allmicro_data.services import Services

    upgrade(settings.resolved_database_url)
    services = Services.from_settings(settings)
    yield services
    services.close()


# ------------------------------------------------------------------ live servers


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class LiveServer:
    """`allmicro serve` in its own process, over real HTTP."""

    url: str
    env: dict[str, str]
    log_path: Path
    process: subprocess.Popen[bytes] | ForkedProcess | None = None
    tokens: dict[str, str] = field(default_factory=dict)

    def start(self) -> None:
        log = self.log_path.open("ab")
        if ZYGOTE is None:
            self.process = subprocess.Popen(
                [ALLMICRO, "serve"], env=self.env, stdout=log, stderr=subprocess.STDOUT
            )
        else:
            fd = log.fileno()
            self.process = ZYGOTE.popen([ALLMICRO, "serve"], env=self.env, stdout=fd, stderr=fd)
        log.close()
        try:
            wait_until(self._healthy, timeout=60, what=f"server at {self.url}")
        except BaseException:
            # A server that never answered is no one's to stop: it would outlive the session.
            self.stop(signal.SIGKILL)
            raise

    def _healthy(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"server exited with {self.process.returncode}:\n{self.log()}")
        return httpx.get(f"{self.url}/healthz", timeout=2, verify=TLS).status_code == 200

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def token(self, email: str = ADMIN_EMAIL, password: str = ADMIN_PASSWORD) -> str:
        if email not in self.tokens:
            response = httpx.post(
                f"{self.url}/api/auth/token",
                verify=TLS,
                data={"username": email, "password": password},
                timeout=30,
            )
            assert response.status_code == 200, response.text
            self.tokens[email] = response.json()["access_token"]
        return self.tokens[email]

    def client(self, email: str = ADMIN_EMAIL, password: str = ADMIN_PASSWORD) -> httpx.Client:
        return httpx.Client(
            base_url=self.url,
            headers={"Authorization": f"Bearer {self.token(email, password)}"},
            timeout=60,
            verify=TLS,
        )

    def allmicro(
        self, *args: str, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run the CLI against this server's catalogue and store."""
        return run_allmicro(*args, env={**self.env, **(env or {})}, timeout=120)


def _server_env(data_dir: Path, database_url: str) -> dict[str, str]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ALLMICRO_")}
    env.update(
        {
            "ALLMICRO_DATA_DIR": str(data_dir),
            "ALLMICRO_DATABASE_URL": database_url,
            "ALLMICRO_ADMIN_EMAIL": ADMIN_EMAIL,
            "ALLMICRO_ADMIN_PASSWORD": ADMIN_PASSWORD,
            "ALLMICRO_HOST": "127.0.0.1",
            "ALLMICRO_PORT": str(port),
            "ALLMICRO_JOB_WORKERS": "1",
            # Short, so a killed job runs again within seconds; long enough that a job process
            # starved of CPU for a while (4 test processes on 2 cores) keeps its lease.
            "ALLMICRO_JOB_LEASE_SECONDS": "10",
            # Test servers' jobs keep an even share of the CPU against the test processes, and
            # the lint and mypy that `make test` runs beside them, as before job processes were
            # niced (tests/catalogue/test_job_lanes.py checks the niceness and the idle
            # scheduling class itself).
            "ALLMICRO_JOB_NICE": "0",
            "ALLMICRO_JOB_IDLE_SCHEDULING": "false",
            # A lone member of a multi-file acquisition (a .mib without its .hdr) waits this
            # long for the rest before its image is built: seconds here, not minutes.
            "ALLMICRO_COMPANION_WAIT_SECONDS": "4",
            **CHEAP_PASSWORD_HASHES,
        }
    )
    return env


@pytest.fixture
def server_env(tmp_path: Path, database_url: str) -> dict[str, str]:
    return _server_env(tmp_path / "server-data", database_url)


def _running_server(env: dict[str, str], log_path: Path) -> LiveServer:
    server = LiveServer(url=f"http://127.0.0.1:{env['ALLMICRO_PORT']}", env=env, log_path=log_path)
    server.start()
    return server


@pytest.fixture
def live_server(server_env: dict[str, str], tmp_path: Path) -> Iterator[LiveServer]:
    """A server of its own for a test that stops, kills or reconfigures it."""
    server = _running_server(server_env, tmp_path / "server.log")
    yield server
    server.stop()


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def shared_server(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    postgres_databases: PostgresDatabases | None,
) -> Iterator[LiveServer]:
    """One server for all tests of a module, per database: starting a server and its job
    processes costs seconds, so tests that only add their own data share one. Such tests
    give everything they create names of their own."""
    with module_server(request, tmp_path_factory, postgres_databases, "shared") as server:
        yield server


@contextlib.contextmanager
def module_server(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    postgres_databases: PostgresDatabases | None,
    name: str,
    env: dict[str, str] | None = None,
) -> Iterator[LiveServer]:
    """A live server for a module-scoped fixture parametrised by database ("sqlite",
    "postgresql"): shared_server's, or, with settings of its own in env, a test module's."""
    directory = tmp_path_factory.mktemp(f"{name}-{request.param}")
    url = _empty_catalogue(request.param, directory, postgres_databases)
    server_env = {**_server_env(directory / "server-data", url), **(env or {})}
    try:
        server = _running_server(server_env, directory / "server.log")
        try:
            yield server
        finally:
            server.stop()
    finally:
        _release_catalogue(url, postgres_databases)
