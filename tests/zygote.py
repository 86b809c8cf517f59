"""A pre-imported process that forks the test servers: `allmicro serve` without its imports' CPU.

Each test process starts hundreds of CPU-seconds of `allmicro serve` over a run, most of them
spent importing the same modules and building the same FastAPI routes. The zygote imports them
once (every module a server imports that does not import prometheus_client: `allmicro serve`
must set PROMETHEUS_MULTIPROC_DIR before that client is imported) and forks a child for each
server a test starts. The child then becomes what `allmicro serve` would have been: the
caller's argv, environment, working directory, umask and stdin/stdout/stderr, the console script
run as `__main__` (so the job pool's spawned processes start as a real server's do), and an exit
code or signal reported back as Popen's returncode. `ForkedProcess` is the caller's Popen-like handle.

What a forked child shares with its zygote, and why it does not matter:
- no threads: the zygote checks it has exactly one before each fork (OpenBLAS would start one
  per core when numpy is imported, so the zygote alone runs with OPENBLAS_NUM_THREADS=1; the
  child's BLAS is single-threaded too, its job processes are not);
- import-time state read from the environment: none in our modules (settings are read when the
  command runs); tempfile's cached directory and the timezone are reset from the child's own;
- open files: the zygote's sockets and pidfds are closed in the child, stdio replaced;
- multiprocessing's authkey and start directory are the child's own, random is reseeded by
  CPython at fork.

ALLMICRO_TEST_NO_ZYGOTE=1 starts servers as plain subprocesses again (to compare, or to rule the
zygote out when a server misbehaves).
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import json
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SOURCES = [REPO / name for name in ("allmicro_data", "api", "ingest", "storage")]

# What `allmicro serve` imports before it answers /healthz, in the order it imports them, less
# the modules that import prometheus_client (the metrics, the job runner and everything that
# imports them; the child imports those itself). A module missing here, or listed here and gone,
# only costs CPU; one that starts importing prometheus_client is skipped (see _preload).
PRELOAD = (
    "allmicro_data.cli",
    "allmicro_data.errors",
    "allmicro_data.storage.base",
    "allmicro_data.logs",
    "allmicro_data.settings",
    "allmicro_data.api.http_middleware",
    "allmicro_data.api.cors",
    "allmicro_data.api.proxies",
    "allmicro_data.api.routers",
    "allmicro_data.catalogue.models",
    "allmicro_data.access",
    "allmicro_data.csv_export",
    "allmicro_data.paging",
    "allmicro_data.audit",
    "allmicro_data.passwords",
    "allmicro_data.directory",
    "allmicro_data.institutional",
    "allmicro_data.ldap_login",
    "allmicro_data.auth",
    "allmicro_data.notifications",
    "allmicro_data.catalogue.db",
    # Imported by catalogue.db only where migrations run, which every server start does.
    "alembic.command",
    "alembic.config",
    "allmicro_data.object_keys",
    "allmicro_data.fixity",
    "allmicro_data.storage.checksums",
    "allmicro_data.storage.replicated",
    "allmicro_data.storage.local",
    "allmicro_data.storage.factory",
    "allmicro_data.replica_catchup",
    "allmicro_data.services",
    "allmicro_data.api.deps",
    "allmicro_data.api.paging",
    "allmicro_data.acquisition",
    "allmicro_data.names",
    "allmicro_data.api.schemas",
    "allmicro_data.api.routers.auth",
    "allmicro_data.api.routers.admin",
    "allmicro_data.api.openapi_media",
    "allmicro_data.annotations",
    "allmicro_data.archives",
    "allmicro_data.delivery",
    "allmicro_data.quotas",
    "allmicro_data.modalities",
    "allmicro_data.vendors",
    "allmicro_data.search",
    "allmicro_data.lifecycle",
    "allmicro_data.ingest.ome_xml",
    "allmicro_data.scratch",
    "allmicro_data.rois",
    "allmicro_data.api.iiif",
    "allmicro_data.api.rendering",
    "allmicro_data.ingest.ngff.codec",
    "allmicro_data.storage.zarr_adapter",
    "allmicro_data.api.pyramids",
    "allmicro_data.api.figures",
    "allmicro_data.capabilities",
    "allmicro_data.api.iiif_auth",
    "allmicro_data.api.web.i18n",
    "allmicro_data.api.web.formatting",
    "allmicro_data.api.manifests",
    "allmicro_data.api.plane_statistics",
    "allmicro_data.api.render_budget",
    "allmicro_data.api.viewing",
    "allmicro_data.api.routers.iiif",
    "allmicro_data.api.routers.health",
    "allmicro_data.spool",
    "allmicro_data.oidc_login",
    "allmicro_data.api.routers.lifecycle",
    "allmicro_data.api.saved_renderings",
    "allmicro_data.api.routers.renderings",
    "allmicro_data.api.routers.tiles",
    "allmicro_data.throttle",
    "allmicro_data.sharing",
    "allmicro_data.scrub",
    "allmicro_data.api.routers.storage_admin",
    "allmicro_data.ingest.ngff.collection",
    "allmicro_data.api.zarr_documents",
    "allmicro_data.api.security_headers",
    "allmicro_data.api.web.forms",
    "allmicro_data.api.web.api_docs",
    "allmicro_data.bootstrap",
    "allmicro_data.api.http_server",
    # Third-party modules the server imports once it runs (uvicorn picks its loop and protocols
    # in uvicorn.run, the app imports these in modules that import prometheus_client).
    "uvicorn.loops.auto",
    "uvicorn.loops.uvloop",
    "uvicorn.protocols.http.auto",
    "uvicorn.protocols.websockets.auto",
    "uvicorn.lifespan.on",
    "anyio._backends._asyncio",
    "fastapi.telemetry._runtime",
    "zxcvbn",
    "concurrent.futures.process",
    "multiprocessing.synchronize",
    "multiprocessing.spawn",
    "multiprocessing.resource_tracker",
    # Imported by a server when it first needs them (the NGFF models half a CPU-second when it
    # first opens a pyramid, the job pool's start method when it first runs a job).
    "ome_zarr_models.v04.image",
    "ome_zarr_models.v05.image",
    "ome_zarr_models.v04.omero",
    "multiprocessing.popen_spawn_posix",
    "numpy.ma",
    "jinja2.ext",
    "_strptime",
)
# Imported by the child only: see the module docstring.
NOT_BEFORE_FORK = "prometheus_client"
_HEADER = struct.Struct("!I")


class _Refused(ImportError):
    """A module the zygote leaves to each child (see NOT_BEFORE_FORK)."""


class _NotBeforeFork:
    """An import hook that refuses prometheus_client while the zygote preloads."""

    def find_spec(self, name: str, path: Any, target: Any = None) -> None:
        if name.partition(".")[0] == NOT_BEFORE_FORK:
            raise _Refused(f"{name} is imported by each server itself, not by the zygote")


def _preload() -> None:
    """Import PRELOAD. A module that fails to import for any other reason than _Refused ends
    the zygote: the test process then starts its servers as plain subprocesses, which fail
    on that module as they always did (a child importing a half-run module again would not)."""
    hook = _NotBeforeFork()
    sys.meta_path.insert(0, hook)
    try:
        for name in PRELOAD:
            # Modules start with their imports (ruff E402), so one refused here has defined
            # nothing yet: the child imports it whole.
            try:
                importlib.import_module(name)
            except _Refused:
                pass
            except ModuleNotFoundError as exc:
                if exc.name != name:  # a module it imports is missing, not the one listed
                    raise
    finally:
        sys.meta_path.remove(hook)
    assert NOT_BEFORE_FORK not in sys.modules, f"the zygote imported {NOT_BEFORE_FORK}"


def _threads() -> int:
    return len(os.listdir("/proc/self/task"))


def _receive_request(conn: socket.socket) -> tuple[dict[str, Any], list[int]]:
    data, fds, _flags, _address = socket.recv_fds(conn, 1 << 16, 3)
    while len(data) < _HEADER.size or len(data) < _HEADER.size + _HEADER.unpack_from(data)[0]:
        more = conn.recv(1 << 16)
        if not more:
            raise EOFError("the caller hung up before its request was complete")
        data += more
    (length,) = _HEADER.unpack_from(data)
    request: dict[str, Any] = json.loads(data[_HEADER.size : _HEADER.size + length])
    return request, fds


def _serve(listener: socket.socket) -> tuple[dict[str, Any], list[int]]:
    """The zygote's loop: fork a child per request, report each child's end to its caller.
    Returns only in a child, with the child's request and stdio descriptors. Once its stdin
    closes (the test process is done with it, or gone) it forks no more and ends with its
    last child."""
    children: dict[int, tuple[int, socket.socket]] = {}  # pidfd -> (pid, caller's socket)
    accepting = True
    while accepting or children:
        waiting_on: list[Any] = [listener, sys.stdin] if accepting else []
        readable, _, _ = select.select([*waiting_on, *children], [], [])
        if sys.stdin in readable and not os.read(sys.stdin.fileno(), 1 << 12):
            accepting = False
            listener.close()
        for pidfd in [fd for fd in readable if isinstance(fd, int)]:
            pid, conn = children.pop(pidfd)
            _, status = os.waitpid(pid, 0)
            os.close(pidfd)
            returncode = os.waitstatus_to_exitcode(status)
            with contextlib.suppress(OSError):
                conn.sendall(json.dumps({"returncode": returncode}).encode() + b"\n")
            conn.close()
        if not accepting or listener not in readable:
            continue
        conn, _ = listener.accept()
        try:
            request, fds = _receive_request(conn)
        except (OSError, EOFError, ValueError):
            conn.close()
            continue
        if _threads() != 1:
            raise RuntimeError(f"the zygote has {_threads()} threads: it must not fork")
        sys.stdout.flush()
        sys.stderr.flush()
        gc.freeze()
        pid = os.fork()
        if pid == 0:
            gc.enable()
            listener.close()
            conn.close()
            for pidfd, (_, other) in children.items():
                os.close(pidfd)
                other.close()
            return request, fds
        for fd in fds:
            os.close(fd)
        children[os.pidfd_open(pid)] = (pid, conn)
        conn.sendall(json.dumps({"pid": pid}).encode() + b"\n")
    sys.exit(0)


def _become(request: dict[str, Any], fds: list[int]) -> None:
    """In the forked child: turn into `argv` as the console script would run it."""
    import multiprocessing.process
    import runpy

    for target, fd in enumerate(fds):
        os.dup2(fd, target)
    for fd in set(fds):
        if fd > 2:
            os.close(fd)
    os.chdir(request["cwd"])
    os.umask(request["umask"])
    os.environ.clear()
    os.environ.update(request["env"])
    time.tzset()
    tempfile.tempdir = None
    multiprocessing.process.ORIGINAL_DIR = os.path.abspath(request["cwd"])
    multiprocessing.process.current_process().authkey = os.urandom(32)
    argv: list[str] = request["argv"]
    sys.argv = list(argv)
    sys.path[0] = os.path.dirname(argv[0])
    # The pip-generated console script: imports allmicro_data.cli and exits with main()'s code.
    runpy.run_path(argv[0], run_name="__main__")
    sys.exit(0)


def main() -> None:
    """The zygote process (started by Zygote, argv[1]: the socket path to listen on)."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(sys.argv[1])
    listener.listen(64)
    # The zygote's objects are frozen out of the collector (gc.freeze, as CPython's docs advise
    # for a process that forks without exec): a child's collections and its exit would otherwise
    # walk every imported module's objects, touching each page they sit on and so copying it;
    # a forked `allmicro --help` took 0.9 s to exit, 0.1 s with them frozen.
    gc.disable()
    _preload()
    gc.freeze()
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    request, fds = _serve(listener)
    _become(request, fds)


class ForkedProcess:
    """A zygote's child as the test sees it: Popen's pid, returncode, poll, wait and signals.

    The zygote reaps the child and sends its status; signals go through a pidfd, so a signal
    never reaches another process that took the pid of one already gone."""

    def __init__(self, args: Sequence[str], conn: socket.socket) -> None:
        self.args = list(args)
        self.returncode: int | None = None
        self._conn = conn
        self._buffer = b""
        self.pid = int(json.loads(self._read_line(timeout=None))["pid"])
        self._pidfd: int | None = None
        with contextlib.suppress(ProcessLookupError):
            self._pidfd = os.pidfd_open(self.pid)

    def _read_line(self, timeout: float | None) -> bytes | None:
        deadline = None if timeout is None else time.monotonic() + timeout
        while b"\n" not in self._buffer:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not select.select([self._conn], [], [], left)[0]:
                return None
            more = self._conn.recv(1 << 12)
            if not more:
                raise RuntimeError(f"the test zygote died while running {self.args}")
            self._buffer += more
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line

    def _finish(self, line: bytes) -> int:
        self.returncode = int(json.loads(line)["returncode"])
        self._conn.close()
        if self._pidfd is not None:
            os.close(self._pidfd)
            self._pidfd = None
        return self.returncode

    def poll(self) -> int | None:
        if self.returncode is None:
            line = self._read_line(timeout=0)
            if line is not None:
                self._finish(line)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None:
            line = self._read_line(timeout)
            if line is None:
                raise subprocess.TimeoutExpired(self.args, timeout or 0)
            self._finish(line)
        assert self.returncode is not None
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.poll() is None and self._pidfd is not None:
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(self._pidfd, sig)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


def _sources_stamp() -> tuple[int, int]:
    """How many of the project's modules there are and when the last one changed."""
    times = [path.stat().st_mtime_ns for root in SOURCES for path in root.rglob("*.py")]
    return len(times), max(times, default=0)


class Zygote:
    """The test process's zygote, started on first use; a new one if the last one died, or if
    the project's code changed since it imported it (a child must run the code a new process
    would). A zygote left behind serves its children until they end. If one cannot start (the
    project's code does not import), commands start as plain subprocesses from then on."""

    def __init__(self) -> None:
        self._process: subprocess.Popen[bytes] | None = None
        self._stamp: tuple[int, int] | None = None
        self._retired: list[subprocess.Popen[bytes]] = []  # zygotes let go, reaped when done
        self._failed = False
        self._directory: tempfile.TemporaryDirectory[str] | None = None
        self._lock = threading.Lock()

    @property
    def _socket_path(self) -> str:
        assert self._directory is not None
        return os.path.join(self._directory.name, "zygote.sock")

    def _start(self) -> None:
        self._stamp = _sources_stamp()
        self._directory = tempfile.TemporaryDirectory(prefix="allmicro-zygote-")
        log = Path(self._directory.name) / "zygote.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("ALLMICRO_")}
        env["OPENBLAS_NUM_THREADS"] = "1"  # no thread may exist at fork time
        with log.open("wb") as stderr:
            self._process = subprocess.Popen(
                [sys.executable, "-c", "from tests.zygote import main; main()", self._socket_path],
                cwd=REPO,
                env=env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=stderr,
            )
        assert self._process.stdout is not None
        if self._process.stdout.readline() != b"ready\n":
            self._process.wait()
            self._failed = True
            warnings.warn(
                "the test zygote did not start, servers start as subprocesses:\n"
                + log.read_text(errors="replace")[-4000:],
                stacklevel=3,
            )
            self._let_go()

    def popen(
        self, argv: Sequence[str], *, env: dict[str, str], stdout: int, stderr: int
    ) -> ForkedProcess | subprocess.Popen[bytes]:
        """Like Popen(argv, env=env, stdout=stdout, stderr=stderr) with stdin inherited; argv[0]
        is a Python console script (the `allmicro` command)."""
        with self._lock:
            if self._process is not None and (
                self._process.poll() is not None or _sources_stamp() != self._stamp
            ):
                self._let_go()
            if self._process is None and not self._failed:
                self._start()
            if self._failed:
                return subprocess.Popen(argv, env=env, stdout=stdout, stderr=stderr)
            conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            conn.connect(self._socket_path)
        umask = os.umask(0o022)
        os.umask(umask)
        request = json.dumps(
            {"argv": list(argv), "env": env, "cwd": os.getcwd(), "umask": umask}
        ).encode()
        message = _HEADER.pack(len(request)) + request
        # fd 0 itself: pytest's sys.stdin stands in for it and has no descriptor.
        sent = socket.send_fds(conn, [message], [0, stdout, stderr])
        if sent < len(message):
            conn.sendall(message[sent:])
        return ForkedProcess(argv, conn)

    def _let_go(self) -> None:
        """Stop the zygote forking: it ends with its last child (Popen leaves children
        running too)."""
        self._retired = [process for process in self._retired if process.poll() is None]
        if self._process is not None:
            for pipe in (self._process.stdin, self._process.stdout):
                with contextlib.suppress(OSError):
                    pipe.close()  # type: ignore[union-attr]
            self._retired.append(self._process)
            self._process = None
        if self._directory is not None:
            self._directory.cleanup()
            self._directory = None

    def close(self, timeout: float = 30.0) -> None:
        """Let the zygote go and wait for it (and so its children) to end: their CPU then
        counts in this process's children's, as a Popen server's did, for /usr/bin/time."""
        with self._lock:
            self._let_go()
            deadline = time.monotonic() + timeout
            for process in self._retired:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(max(0.0, deadline - time.monotonic()))
            self._retired = [process for process in self._retired if process.poll() is None]
