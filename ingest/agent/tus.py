"""The tus client: create an upload, resume it, PATCH its bytes with the file's sha256, retry what the server says is "not now".

The tus client is our own rather than tuspy: tuspy reads each chunk whole into memory, pulls in
requests, aiohttp and tinydb, and knows nothing of our sha256 or the file and job ids the server
answers with. Ours hashes the file in a thread while it sends it, declares the whole file's
sha256 with its last request, verifies the stored sha256, and keeps its state in a small SQLite
file, all in portable Python (Windows included).
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urljoin

from allmicro_data.ingest.agent.errors import AgentError, Refused, StartAgain
from allmicro_data.ingest.agent.files import HashInBackground, native, sha256_of
from allmicro_data.ingest.agent.progress import ProgressBar
from allmicro_data.ingest.agent.state import (
    DONE,
    FAILED,
    HASHED,
    UPLOADING,
    AgentState,
    SentFile,
)
from allmicro_data.ingest.agent.transport import (
    Answer,
    Body,
    FilePart,
    Unreachable,
    open_transport,
)

log = logging.getLogger("allmicro.agent")

TUS = {"Tus-Resumable": "1.0.0"}
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
        self._hash: HashInBackground | None = None
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
            self._hash = HashInBackground(path)
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
            response = self._request("PATCH", entry.location, headers=headers, body=body)
        else:
            part = FilePart(path, offset, length)
            response = self._request("PATCH", entry.location, headers=headers, body=part)
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
                    body=b"",
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
        body: Body = b"",
    ) -> Answer:
        """A request, retried for retry_for seconds through network cuts, server restarts and
        answers that say "not now" (a full disk: 507, too many uploads at once: 429, 503).

        The retry_for window opens at the first such failure and closes when a request other
        than HEAD gets through (or the next file starts): a PATCH that fails goes back to asking
        the server's offset (HEAD) and sending again, and that round trip must not open the
        window afresh each time."""
        while True:
            try:
                response = self.transport.request(method, url, headers or {}, body)
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

    def _bar(self, total: int, label: str, initial: int = 0) -> ProgressBar:
        return ProgressBar(total, label, initial, enabled=self.settings.progress)
