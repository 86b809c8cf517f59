"""The instrument-PC agent: `allmicro upload` and `allmicro watch` send finished files over tus, resuming after cuts.

The tus client is our own rather than tuspy: tuspy reads each chunk whole into memory, pulls in
requests, aiohttp and tinydb, and knows nothing of our sha256 or the file and job ids the server
answers with. Ours hashes the file in a thread while it sends it, hands PATCH bodies to the kernel
(socket.sendfile, so the bytes are not copied through Python), declares the whole file's sha256
with its last request, verifies the stored sha256, and keeps its state in a small SQLite file,
all in portable Python (Windows included). It talks to the server over one kept-alive
connection of the standard library's http.client; httpx is loaded only when a proxy from the
environment stands in between (it starts in a fraction of the time: no TLS set-up for plain
HTTP, no CA bundle, none of httpx's imports).
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import logging
import os
import select
import ssl
import sys
import threading
import time
import tomllib
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urljoin, urlsplit

import click

from allmicro_data.ingest.agent_state import (
    DONE,
    FAILED,
    HASHED,
    UPLOADING,
    AgentState,
    SentFile,
)

log = logging.getLogger("allmicro.agent")

TUS = {"Tus-Resumable": "1.0.0"}
READ_BLOCK = 1024 * 1024
HASH_BLOCK = 8 * 1024 * 1024
DEFAULT_CHUNK = 256 * 1024 * 1024
# The last request carries the whole file's sha256, so it waits for the hash thread; keeping it
# small lets everything before it go out while the hash is still being computed.
LAST_CHUNK = 8 * 1024 * 1024
WHOLE_FILE_SHA256 = "X-Allmicro-Sha256"
# Answers that mean "not now" rather than "no": the server is restarting or overloaded (5xx),
# out of disk (507) or at a limit of uploads in flight (429). Retried for --retry-for seconds.
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504, 507})
FIRST_RETRY_DELAY = 0.5
MAX_RETRY_DELAY = 30.0
# Names instruments and editors use for files still being written or for scratch.
SKIPPED_SUFFIXES = (".tmp", ".part", ".partial", ".crdownload", ".lock")
SKIPPED_PREFIXES = (".", "~$", "~")
# Windows: another process has the file open without sharing (still writing it).
_SHARING_VIOLATIONS = (32, 33)


class AgentError(Exception):
    """The agent cannot go on; the message says why. `code` is the exit status."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


class Refused(AgentError):
    """The server refuses us for good (credentials, permissions, the dataset): no retry helps."""

    def __init__(self, message: str) -> None:
        super().__init__(message, code=3)


class StartAgain(Exception):
    """The server no longer has the upload (expired, failed verification): start a new one."""


def config_dir() -> Path:
    """Where the agent keeps its config, state and log: per user, no admin rights needed."""
    if os.name == "nt":
        base = os.environ.get("APPDATA") or str(Path.home() / "AppData" / "Roaming")
        return Path(base) / "allmicro"
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "allmicro"


def native(path: Path) -> str:
    """A path string the OS accepts even past Windows' 260-character limit."""
    text = str(path.absolute())
    if os.name == "nt" and len(text) >= 240 and not text.startswith("\\\\?\\"):
        if text.startswith("\\\\"):
            return "\\\\?\\UNC\\" + text[2:]
        return "\\\\?\\" + text
    return text


def is_locked(path: Path) -> bool:
    """True while another program holds the file open for writing without sharing it.

    Only Windows enforces such locks; elsewhere a writer is caught by the size and
    modification time still changing.
    """
    if os.name != "nt":
        return False
    try:
        with open(native(path), "ab"):
            return False
    except PermissionError as exc:
        return getattr(exc, "winerror", None) in _SHARING_VIOLATIONS
    except OSError:
        return True


def sha256_of(
    path: Path,
    progress: Callable[[int], None] | None = None,
    stop: threading.Event | None = None,
) -> str:
    digest = hashlib.sha256()
    buffer = bytearray(HASH_BLOCK)
    view = memoryview(buffer)
    with open(native(path), "rb", buffering=0) as handle:
        while n := handle.readinto(buffer):
            digest.update(view[:n])
            if progress is not None:
                progress(n)
            if stop is not None and stop.is_set():
                raise AgentError("hashing stopped")
    return digest.hexdigest()


class _HashInBackground:
    """The whole file's sha256, computed in a thread while its bytes are being sent.

    hashlib releases the GIL, so this runs beside the sending thread on another core. After a
    restart it hashes from the start again: the acknowledged prefix must be in the digest too.
    """

    def __init__(self, path: Path) -> None:
        self._path = path
        self._stop = threading.Event()
        self._sha256: str | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="agent-sha256", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._sha256 = sha256_of(self._path, stop=self._stop)
        except BaseException as exc:  # re-raised in the thread that asks for the digest
            self._error = exc

    def result(self) -> str:
        self._thread.join()
        if self._error is not None:
            if isinstance(self._error, OSError | AgentError):
                raise self._error
            raise AgentError(f"hashing {self._path} failed: {self._error}")
        assert self._sha256 is not None
        return self._sha256

    def cancel(self) -> None:
        self._stop.set()
        self._thread.join()


def _metadata(fields: dict[str, str | None]) -> str:
    return ",".join(
        f"{key} {base64.b64encode(value.encode('utf-8')).decode('ascii')}"
        for key, value in fields.items()
        if value
    )


def _retry_after(response: Answer) -> float:
    """Seconds the server asks us to wait (Retry-After in seconds), 0 if it names none."""
    value = response.headers.get("retry-after", "").strip()
    return min(float(value), MAX_RETRY_DELAY) if value.isdigit() else 0.0


def _problem(response: Answer) -> str:
    try:
        body = response.json()
        return str(body.get("detail") or body.get("title") or response.reason_phrase)
    except ValueError:
        return response.reason_phrase or str(response.status_code)


@dataclass
class AgentSettings:
    server: str
    dataset_id: str
    token: str = field(repr=False)
    state_path: Path
    chunk_size: int = DEFAULT_CHUNK
    chunk_checksum: bool = False
    retry_for: float = 600.0
    progress: bool = True


@dataclass
class Outcome:
    path: Path
    status: str  # "uploaded", "already uploaded", "failed"
    file_id: str | None = None
    job_id: str | None = None
    error: str | None = None


class Agent:
    """Uploads files to one dataset of one server, remembering what it sent."""

    def __init__(self, settings: AgentSettings) -> None:
        self.settings = settings
        self.server = settings.server.rstrip("/")
        self.endpoint = f"{self.server}/api/uploads/"
        self.state = AgentState(settings.state_path)
        self.transport = open_transport(
            self.server, {"Authorization": f"Bearer {settings.token}", **TUS}
        )
        self._hash: _HashInBackground | None = None
        # When the server started failing us (see _request), and the wait before the next try.
        self._trouble_since: float | None = None
        self._delay = FIRST_RETRY_DELAY

    def close(self) -> None:
        self._stop_hashing()
        self.transport.close()
        self.state.close()

    def _stop_hashing(self) -> None:
        if self._hash is not None:
            self._hash.cancel()
            self._hash = None

    # ---------------------------------------------------------------- public

    def check_access(self) -> None:
        """Fail early, with the reason, if the token or the dataset is wrong."""
        response = self._request("GET", f"{self.server}/api/datasets/{self.settings.dataset_id}")
        if response.status_code == 401:
            raise Refused("the server does not accept the token (ALLMICRO_TOKEN or config file)")
        if response.status_code == 404:
            raise Refused(f"dataset {self.settings.dataset_id} does not exist or is not yours")
        if response.status_code >= 400:
            raise AgentError(f"the server answered {response.status_code}: {_problem(response)}")

    def send(
        self, path: Path, relative_path: str | None = None, group: str | None = None
    ) -> Outcome:
        """Upload one finished file unless this version of it was uploaded before."""
        self._trouble_since, self._delay = None, FIRST_RETRY_DELAY
        try:
            return self._send(path, relative_path, group)
        except (Refused, KeyboardInterrupt):
            raise
        except (AgentError, OSError) as exc:
            log.error("%s: %s", path, exc)
            return Outcome(path, "failed", error=str(exc))

    # ---------------------------------------------------------------- one file

    def _send(self, path: Path, relative_path: str | None, group: str | None) -> Outcome:
        stat = os.stat(native(path))
        key = str(path.absolute())
        entry = self.state.get(self.server, self.settings.dataset_id, key)
        if entry is not None and entry.same_version(stat.st_size, stat.st_mtime_ns):
            if entry.status == DONE:
                log.info("%s: already uploaded as file %s", path, entry.file_id)
                return Outcome(path, "already uploaded", entry.file_id, entry.job_id)
        else:
            entry = SentFile(
                server=self.server,
                dataset_id=self.settings.dataset_id,
                path=key,
                size=stat.st_size,
                mtime_ns=stat.st_mtime_ns,
            )
        if entry.sha256 is None and self.state.sent_with_size(
            self.server, self.settings.dataset_id, entry.size, key
        ):
            # Another file of this size was sent: it may be a copy, worth a hash to find out.
            with self._bar(entry.size, f"hashing {path.name}") as bar:
                entry.sha256 = sha256_of(path, bar)
            entry.status = HASHED
            self.state.save(entry)
        if entry.sha256 is not None:
            twin = self.state.sent_with_sha256(self.server, self.settings.dataset_id, entry.sha256)
            if twin is not None and twin.path != key:
                log.info("%s: same bytes as %s, uploaded as file %s", path, twin.path, twin.file_id)
                entry.status, entry.file_id, entry.job_id = DONE, twin.file_id, twin.job_id
                self.state.save(entry)
                return Outcome(path, "already uploaded", twin.file_id, twin.job_id)
        for _attempt in range(3):
            try:
                self._upload(path, entry, relative_path or path.name, group)
            except StartAgain as reason:
                log.warning("%s: %s; starting a new upload", path, reason)
                entry.location = None
                self.state.save(entry)
                self._check_unchanged(path, entry)
                continue
            entry.status, entry.error = DONE, None
            self.state.save(entry)
            log.info("%s: uploaded as file %s, job %s", path, entry.file_id, entry.job_id)
            return Outcome(path, "uploaded", entry.file_id, entry.job_id)
        entry.status, entry.error = FAILED, "the server refused the upload three times"
        self.state.save(entry)
        raise AgentError(entry.error)

    def _check_unchanged(self, path: Path, entry: SentFile) -> None:
        stat = os.stat(native(path))
        if not entry.same_version(stat.st_size, stat.st_mtime_ns):
            raise AgentError("the file changed while it was being uploaded; it will be sent again")

    def _upload(self, path: Path, entry: SentFile, relative_path: str, group: str | None) -> None:
        if entry.sha256 is None:
            self._hash = _HashInBackground(path)
        try:
            self._upload_hashing(path, entry, relative_path, group)
        finally:
            self._stop_hashing()

    def _whole_sha256(self, entry: SentFile) -> str:
        """The file's sha256: known already, or once the hash thread is done."""
        if entry.sha256 is None:
            assert self._hash is not None
            entry.sha256 = self._hash.result()
            self.state.save(entry)
        return entry.sha256

    def _upload_hashing(
        self, path: Path, entry: SentFile, relative_path: str, group: str | None
    ) -> None:
        offset = 0
        if entry.location is not None:
            resumed = self._resume_offset(entry)
            if resumed is None:
                return  # complete on the server already
            offset = resumed
            log.info("%s: resuming %s at offset %d of %d", path, entry.location, offset, entry.size)
        else:
            entry.location = self._create(path, entry, relative_path, group)
            entry.status = UPLOADING
            self.state.save(entry)
            log.info("%s: upload %s created (%d bytes)", path, entry.location, entry.size)
        with self._bar(entry.size, path.name, initial=offset) as bar:
            while True:
                done = self._patch(path, entry, offset)
                if isinstance(done, int):
                    bar(done - offset)
                    offset = done
                    continue
                bar(entry.size - offset)
                return

    def _create(self, path: Path, entry: SentFile, relative_path: str, group: str | None) -> str:
        headers = {
            "Upload-Length": str(entry.size),
            "Upload-Metadata": _metadata(
                {
                    "filename": path.name,
                    "dataset_id": self.settings.dataset_id,
                    "relative_path": relative_path,
                    "group": group,
                    "sha256": entry.sha256,
                }
            ),
        }
        response = self._request("POST", self.endpoint, headers=headers)
        if response.status_code == 460:
            raise StartAgain(_problem(response))
        if response.status_code != 201 or "location" not in response.headers:
            self._raise_for(response, "creating the upload")
        return urljoin(self.endpoint, response.headers["location"])

    def _resume_offset(self, entry: SentFile) -> int | None:
        """The server's offset for our upload; None once it holds the whole file."""
        assert entry.location is not None
        response = self._request("HEAD", entry.location)
        if response.status_code in (404, 410):
            raise StartAgain(f"the server no longer has upload {entry.location}")
        if response.status_code != 200:
            self._raise_for(response, "asking where the upload stands")
        if self._finished(entry, response):
            return None
        return int(response.headers["upload-offset"])

    def _patch(self, path: Path, entry: SentFile, offset: int) -> int | None:
        """Send the next chunk; the new offset, or None when the upload is complete."""
        assert entry.location is not None
        remaining = entry.size - offset
        # All but the last few MB go in big requests; the last one carries the file's sha256.
        length = min(self.settings.chunk_size, remaining - LAST_CHUNK)
        if length <= 0:
            length = remaining
        headers = {
            "Content-Type": "application/offset+octet-stream",
            "Upload-Offset": str(offset),
            "Content-Length": str(length),
        }
        if offset + length == entry.size:
            headers[WHOLE_FILE_SHA256] = self._whole_sha256(entry)
        if self.settings.chunk_checksum:
            with open(native(path), "rb") as handle:
                handle.seek(offset)
                body = handle.read(length)
            digest = base64.b64encode(hashlib.sha256(body).digest()).decode("ascii")
            headers["Upload-Checksum"] = f"sha256 {digest}"
            response = self._request("PATCH", entry.location, headers=headers, content=body)
        else:
            part = FilePart(path, offset, length)
            response = self._request("PATCH", entry.location, headers=headers, part=part)
        if response.status_code == 204:
            if self._finished(entry, response):
                return None
            return int(response.headers["upload-offset"])
        if response.status_code in (409, 423):
            if response.status_code == 423:
                # Another request (ours, cut off, still finishing on the server) holds it.
                time.sleep(1.0)
            # Our view of the offset is stale (a request lost in a cut): ask the server.
            resumed = self._resume_offset(entry)
            if resumed is not None:
                log.info("%s: resuming %s at offset %d", path, entry.location, resumed)
            return resumed
        if response.status_code == 460 and offset + length == entry.size:
            raise StartAgain(_problem(response))
        if response.status_code == 460:
            log.warning("%s: chunk at %d damaged on the way; sending it again", path, offset)
            return offset
        if response.status_code in (404, 410):
            raise StartAgain(_problem(response))
        self._raise_for(response, "sending bytes")
        return None

    def _finished(self, entry: SentFile, response: Answer) -> bool:
        file_id = response.headers.get("x-allmicro-file-id")
        if file_id is None:
            if int(response.headers.get("upload-offset", -1)) == entry.size:
                # Every byte is there but the server had not stored the file yet (it stopped
                # in between): an empty PATCH at the end asks it to finish.
                finish = self._request(
                    "PATCH",
                    str(entry.location),
                    headers={
                        "Content-Type": "application/offset+octet-stream",
                        "Upload-Offset": str(entry.size),
                        WHOLE_FILE_SHA256: self._whole_sha256(entry),
                    },
                    content=b"",
                )
                if finish.status_code == 204 and "x-allmicro-file-id" in finish.headers:
                    return self._finished(entry, finish)
                self._raise_for(finish, "completing the upload")
            return False
        stored = response.headers.get("x-allmicro-sha256")
        if stored is not None and stored != self._whole_sha256(entry):
            raise AgentError(f"the server stored sha256 {stored}, not the file's {entry.sha256}")
        entry.file_id = file_id
        entry.job_id = response.headers.get("x-allmicro-job-id")
        return True

    def _raise_for(self, response: Answer, doing: str) -> None:
        reason = _problem(response)
        if response.status_code in (401, 403):
            raise Refused(f"the server refused {doing}: {reason}")
        if response.status_code == 404:
            raise Refused(f"the server refused {doing}: {reason}")
        raise AgentError(f"{doing} failed with {response.status_code}: {reason}")

    # ---------------------------------------------------------------- transport

    def _request(
        self,
        method: str,
        url: str,
        headers: dict[str, str] | None = None,
        content: bytes = b"",
        part: FilePart | None = None,
    ) -> Answer:
        """A request, retried for retry_for seconds through network cuts, server restarts and
        answers that say "not now" (a full disk: 507, too many uploads at once: 429, 503).

        The retry_for window opens at the first such failure and closes when a request other
        than HEAD gets through (or the next file starts): a PATCH that fails goes back to asking
        the server's offset (HEAD) and sending again, and that round trip must not open the
        window afresh each time."""
        while True:
            try:
                response = self.transport.request(method, url, headers or {}, content, part)
            except Unreachable as exc:
                problem: str = str(exc)
                wait = self._delay
            else:
                if response.status_code not in RETRY_STATUSES:
                    if method != "HEAD":
                        self._trouble_since, self._delay = None, FIRST_RETRY_DELAY
                    return response
                problem = f"{response.status_code} {_problem(response)}"
                wait = max(self._delay, _retry_after(response))
            now = time.monotonic()
            if self._trouble_since is None:
                self._trouble_since = now
            if now + wait > self._trouble_since + self.settings.retry_for:
                self._trouble_since, self._delay = None, FIRST_RETRY_DELAY
                raise AgentError(
                    f"the server could not take the file for {self.settings.retry_for:.0f} s "
                    f"({problem})"
                )
            log.warning("%s %s: %s; retrying in %.1f s", method, url, problem, wait)
            time.sleep(wait)
            self._delay = min(self._delay * 2, MAX_RETRY_DELAY)
            if method == "PATCH":
                # The body may have been partly received (or cut back, after a 507): the
                # server's offset decides.
                return Answer(409, {})

    def _bar(self, total: int, label: str, initial: int = 0) -> _ProgressBar:
        return _ProgressBar(total, label, initial, enabled=self.settings.progress)


@dataclass(frozen=True)
class Answer:
    """A server's response: status, headers (names in lower case), body."""

    status_code: int
    headers: dict[str, str]
    content: bytes = b""
    reason_phrase: str = ""

    def json(self) -> Any:
        return json.loads(self.content)


@dataclass(frozen=True)
class FilePart:
    """A request body read from a file: length bytes from offset."""

    path: Path
    offset: int
    length: int


class Unreachable(Exception):
    """The request did not get an answer (connection refused, cut, timed out)."""


class Transport(Protocol):
    def request(
        self,
        method: str,
        url: str,
        headers: dict[str, str],
        content: bytes,
        part: FilePart | None,
    ) -> Answer: ...

    def close(self) -> None: ...


def open_transport(server: str, headers: dict[str, str]) -> Transport:
    """A direct connection to the server, or through the proxy the environment names for it."""
    parts = urlsplit(server)
    proxies = urllib.request.getproxies()
    if parts.scheme in proxies and not urllib.request.proxy_bypass(parts.netloc):
        return _ProxiedTransport(headers)
    return _DirectTransport(server, headers)


class _DirectTransport:
    """One kept-alive http.client connection; bodies from files go by sendfile, which has the
    kernel copy them from the file to the socket without passing through Python."""

    CONNECT_TIMEOUT = 15.0
    # Long enough for the server to verify and store a large file after the last byte.
    READ_TIMEOUT = 600.0

    def __init__(self, server: str, headers: dict[str, str]) -> None:
        parts = urlsplit(server)
        self._https = parts.scheme == "https"
        self._host = parts.hostname or "localhost"
        self._port = parts.port
        self._headers = headers
        self._tls: ssl.SSLContext | None = None
        self._connection: http.client.HTTPConnection | None = None

    def _connect(self) -> http.client.HTTPConnection:
        if self._connection is not None and _dropped(self._connection):
            # The server closed the idle connection (uvicorn does after 5 s): a new one.
            self.close()
        if self._connection is None:
            connection: http.client.HTTPConnection
            if self._https:
                if self._tls is None:
                    # The system's trust store (Windows' too), as browsers on the PC use.
                    self._tls = ssl.create_default_context()
                connection = http.client.HTTPSConnection(
                    self._host, self._port, timeout=self.CONNECT_TIMEOUT, context=self._tls
                )
            else:
                connection = http.client.HTTPConnection(
                    self._host, self._port, timeout=self.CONNECT_TIMEOUT
                )
            connection.connect()
            assert connection.sock is not None
            connection.sock.settimeout(self.READ_TIMEOUT)
            self._connection = connection
        return self._connection

    def request(
        self,
        method: str,
        url: str,
        headers: dict[str, str],
        content: bytes,
        part: FilePart | None,
    ) -> Answer:
        target = urlsplit(url)
        source = open(native(part.path), "rb") if part is not None else None  # noqa: SIM115
        try:
            connection = self._connect()
            connection.putrequest(
                method,
                (target.path or "/") + (f"?{target.query}" if target.query else ""),
                skip_accept_encoding=True,
            )
            length = part.length if part is not None else len(content)
            if method in ("POST", "PUT", "PATCH") or length:
                connection.putheader("Content-Length", str(length))
            for name, value in {**self._headers, **headers}.items():
                if name.lower() != "content-length":
                    connection.putheader(name, value)
            connection.endheaders()
            if source is not None and part is not None:
                assert connection.sock is not None
                sent = connection.sock.sendfile(source, part.offset, part.length)
                if sent != part.length:
                    raise _FileShrank(part.path)
            elif content:
                connection.send(content)
            answer = connection.getresponse()
            body = answer.read()
        except _FileShrank as exc:
            self.close()
            raise AgentError(f"{exc.path} became shorter while it was being uploaded") from None
        except (OSError, http.client.HTTPException) as exc:
            # The connection's state is unknown after a failure: start a fresh one next time.
            self.close()
            raise Unreachable(f"{type(exc).__name__}: {exc}") from exc
        except BaseException:
            self.close()
            raise
        finally:
            if source is not None:
                source.close()
        if answer.will_close:
            self.close()
        return Answer(
            answer.status,
            {name.lower(): value for name, value in answer.getheaders()},
            body,
            answer.reason,
        )

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None


def _dropped(connection: http.client.HTTPConnection) -> bool:
    """True if an idle kept-alive connection was closed by the other side (or is unusable):
    between requests nothing may arrive on it, so being readable means EOF or an error."""
    sock = connection.sock
    if sock is None:
        return True
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(readable)


class _FileShrank(Exception):
    def __init__(self, path: Path) -> None:
        self.path = path


class _ProxiedTransport:
    """Through a proxy from the environment (HTTP(S)_PROXY, NO_PROXY): httpx, which speaks to
    proxies of every kind; file bodies are read in blocks and streamed."""

    def __init__(self, headers: dict[str, str]) -> None:
        import httpx

        self._httpx = httpx
        self._client = httpx.Client(
            headers=headers,
            timeout=httpx.Timeout(connect=15.0, read=600.0, write=120.0, pool=15.0),
            follow_redirects=False,
        )

    def request(
        self,
        method: str,
        url: str,
        headers: dict[str, str],
        content: bytes,
        part: FilePart | None,
    ) -> Answer:
        body: bytes | Iterator[bytes] = content
        if part is not None:
            headers = {**headers, "Content-Length": str(part.length)}
            body = _file_chunk(part.path, part.offset, part.length)
        try:
            response = self._client.request(method, url, headers=headers, content=body)
        except self._httpx.TransportError as exc:
            raise Unreachable(f"{type(exc).__name__}: {exc}") from exc
        return Answer(
            response.status_code,
            {name.lower(): value for name, value in response.headers.items()},
            response.content,
            response.reason_phrase,
        )

    def close(self) -> None:
        self._client.close()


def _file_chunk(path: Path, offset: int, length: int) -> Iterator[bytes]:
    with open(native(path), "rb") as handle:
        handle.seek(offset)
        remaining = length
        while remaining > 0:
            block = handle.read(min(READ_BLOCK, remaining))
            if not block:
                raise AgentError(f"{path} became shorter while it was being uploaded")
            remaining -= len(block)
            yield block


class _ProgressBar:
    """A byte progress bar on a terminal; nothing (and no tqdm to load) when output goes to a
    file or bars are turned off."""

    def __init__(self, total: int, label: str, initial: int, *, enabled: bool) -> None:
        self._bar: Any = None
        if enabled and sys.stderr.isatty():
            from tqdm import tqdm

            self._bar = tqdm(
                total=total,
                initial=initial,
                desc=label,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                leave=False,
            )

    def __call__(self, done: int) -> None:
        if self._bar is not None:
            self._bar.update(done)

    def __enter__(self) -> _ProgressBar:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.close()


# -------------------------------------------------------------------- watching


def _wanted(path: Path) -> bool:
    name = path.name
    return not name.startswith(SKIPPED_PREFIXES) and not name.lower().endswith(SKIPPED_SUFFIXES)


def _candidates(directory: Path, recursive: bool) -> Iterator[Path]:
    entries = directory.rglob("*") if recursive else directory.iterdir()
    for path in entries:
        try:
            if _wanted(path) and path.is_file():
                yield path
        except OSError:
            continue


@dataclass
class _Seen:
    size: int
    mtime_ns: int
    since: float
    handled: bool = False


class Watcher:
    """Uploads each file in a folder once it is finished: size and modification time unchanged
    for `settle` seconds and, on Windows, no longer held open by its writer."""

    def __init__(
        self,
        agent: Agent,
        directory: Path,
        *,
        recursive: bool,
        settle: float,
        interval: float,
        group_by_folder: bool,
    ) -> None:
        self.agent = agent
        self.directory = directory
        self.recursive = recursive
        self.settle = settle
        self.interval = interval
        self.group_by_folder = group_by_folder
        self.seen: dict[Path, _Seen] = {}
        self.failures = 0
        self.stop = threading.Event()

    def scan(self) -> bool:
        """One pass; True while some file is still waiting to be finished."""
        now = time.monotonic()
        waiting = False
        for path in _candidates(self.directory, self.recursive):
            try:
                stat = os.stat(native(path))
            except OSError:
                continue
            seen = self.seen.get(path)
            if seen is None or (seen.size, seen.mtime_ns) != (stat.st_size, stat.st_mtime_ns):
                self.seen[path] = _Seen(stat.st_size, stat.st_mtime_ns, now)
                waiting = True
                continue
            if seen.handled:
                continue
            if now - seen.since < self.settle or is_locked(path):
                waiting = True
                continue
            relative = path.relative_to(self.directory)
            group = relative.parent.as_posix() if self.group_by_folder else None
            outcome = self.agent.send(path, relative.as_posix(), group if group != "." else None)
            seen.handled = True
            if outcome.status == "failed":
                self.failures += 1
        return waiting

    def run(self, once: bool) -> None:
        while not self.stop.is_set():
            waiting = self.scan()
            if once and not waiting:
                return
            self.stop.wait(self.interval)


# -------------------------------------------------------------------- CLI


def _read_config(path: Path | None) -> dict[str, Any]:
    candidate = path or config_dir() / "agent.toml"
    if not candidate.exists():
        if path is not None:
            raise click.UsageError(f"config file {path} does not exist")
        return {}
    try:
        with candidate.open("rb") as handle:
            return tomllib.load(handle)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise click.UsageError(f"cannot read config file {candidate}: {exc}") from exc


def _setup_logging(log_file: Path) -> None:
    log_file.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(log_file, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False


def _agent_from_options(options: dict[str, Any]) -> Agent:
    config = _read_config(options["config"])
    server = options["server"] or config.get("server")
    dataset = options["dataset"] or config.get("dataset")
    token = os.environ.get("ALLMICRO_TOKEN") or config.get("token")
    if not server:
        raise click.UsageError("give --server URL (or `server` in the config file)")
    if not dataset:
        raise click.UsageError("give --dataset ID (or `dataset` in the config file)")
    if not token:
        raise click.UsageError("set ALLMICRO_TOKEN or put `token` in the config file")
    base = config_dir()
    _setup_logging(options["log_file"] or Path(config.get("log_file") or base / "agent.log"))
    state = options["state"] or Path(config.get("state") or base / "agent-state.sqlite3")
    return Agent(
        AgentSettings(
            server=str(server),
            dataset_id=str(dataset),
            token=str(token),
            state_path=Path(state),
            chunk_size=options["chunk_size"],
            chunk_checksum=options["checksum"],
            retry_for=options["retry_for"],
            progress=options["progress"],
        )
    )


def _common_options(func: Callable[..., None]) -> Callable[..., None]:
    decorators = [
        click.option("--server", envvar="ALLMICRO_SERVER", help="Server URL, e.g. https://host"),
        click.option("--dataset", envvar="ALLMICRO_DATASET", help="Dataset id to upload into."),
        click.option(
            "--config",
            type=click.Path(dir_okay=False, path_type=Path),
            default=None,
            help=f"TOML file with server, dataset, token (default: {config_dir() / 'agent.toml'}).",
        ),
        click.option(
            "--state",
            type=click.Path(dir_okay=False, path_type=Path),
            default=None,
            help="The agent's state database (default: beside the config file).",
        ),
        click.option(
            "--log-file",
            type=click.Path(dir_okay=False, path_type=Path),
            default=None,
            help="Log file (default: beside the config file).",
        ),
        click.option(
            "--chunk-size",
            type=click.IntRange(min=64 * 1024),
            default=DEFAULT_CHUNK,
            show_default=True,
            help="Bytes per request; the server acknowledges each.",
        ),
        click.option(
            "--checksum/--no-checksum",
            default=False,
            show_default=True,
            help="Also send a sha256 with every chunk, so that a chunk damaged on the way is "
            "resent at once (the whole file's sha256 is always verified).",
        ),
        click.option(
            "--retry-for",
            type=click.FloatRange(min=0),
            default=600.0,
            show_default=True,
            help="Seconds to keep retrying while the server cannot be reached or cannot take "
            "the file now (503; 507: out of disk; 429: too many uploads at once).",
        ),
        click.option("--progress/--no-progress", default=True, help="Show a progress bar."),
    ]
    for decorator in reversed(decorators):
        func = decorator(func)
    return func


def _run(work: Callable[[Agent], int], options: dict[str, Any]) -> None:
    agent = _agent_from_options(options)
    try:
        agent.check_access()
        code = work(agent)
    except AgentError as exc:
        log.error("stopping: %s", exc)
        click.echo(f"allmicro: {exc}", err=True)
        sys.exit(exc.code)
    except KeyboardInterrupt:
        click.echo("allmicro: interrupted; run again to resume", err=True)
        sys.exit(130)
    finally:
        agent.close()
    sys.exit(code)


@click.command("upload")
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--group", default=None, help="Group key: files of one multi-file acquisition.")
@_common_options
def upload(files: tuple[Path, ...], group: str | None, **options: Any) -> None:
    """Upload files to a dataset, resuming where a previous run stopped."""
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise click.UsageError(f"not a file: {', '.join(missing)}")

    def work(agent: Agent) -> int:
        failed = 0
        for path in files:
            outcome = agent.send(path, path.name, group)
            click.echo(
                f"{path}: {outcome.status}" + (f" ({outcome.error})" if outcome.error else "")
            )
            failed += outcome.status == "failed"
        if failed:
            click.echo(f"allmicro: {failed} of {len(files)} files failed (see the log)", err=True)
        return 1 if failed else 0

    _run(work, options)


@click.command("watch")
@click.argument("directory", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--recursive", is_flag=True, help="Watch subfolders too.")
@click.option(
    "--settle",
    type=click.FloatRange(min=0),
    default=30.0,
    show_default=True,
    help="Seconds a file's size and time must stay unchanged before it counts as finished.",
)
@click.option(
    "--interval",
    type=click.FloatRange(min=0.05),
    default=2.0,
    show_default=True,
    help="Seconds between two looks at the folder.",
)
@click.option("--group-by-folder", is_flag=True, help="Files in one folder form one acquisition.")
@click.option("--once", is_flag=True, help="Upload what is there, wait for it to finish, exit.")
@_common_options
def watch(
    directory: Path,
    recursive: bool,
    settle: float,
    interval: float,
    group_by_folder: bool,
    once: bool,
    **options: Any,
) -> None:
    """Watch a folder and upload each file once it is finished being written."""

    def work(agent: Agent) -> int:
        watcher = Watcher(
            agent,
            directory,
            recursive=recursive,
            settle=settle,
            interval=interval,
            group_by_folder=group_by_folder,
        )
        log.info(
            "watching %s (recursive=%s) for dataset %s",
            directory,
            recursive,
            agent.settings.dataset_id,
        )
        watcher.run(once)
        if watcher.failures:
            click.echo(f"allmicro: {watcher.failures} files failed (see the log)", err=True)
        return 1 if watcher.failures else 0

    _run(work, options)
