"""Scrub: check every copy of every recorded object on every store, mend bad copies, keep the results."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from allmicro_data.catalogue.models import (
    File,
    ImageFile,
    ImageFixity,
    ScrubRun,
    ScrubStatus,
    utcnow,
)
from allmicro_data.catalogue.models import Image as CatalogueImage
from allmicro_data.errors import Conflict, NotFound
from allmicro_data.fixity import Manifest
from allmicro_data.replica_catchup import catch_up_replicas
from allmicro_data.storage import (
    ObjectStore,
    StorageError,
    StoredObject,
    SupportsReplicas,
)
from allmicro_data.storage.checksums import Bandwidth, CopyState, ObjectReport, scrub_object

if TYPE_CHECKING:
    from allmicro_data.services import Services

log = logging.getLogger(__name__)

MAX_PROBLEMS = 1000
# A run whose heartbeat is older than this died with its process.
STALE_AFTER = timedelta(minutes=10)
_HEARTBEAT_SECONDS = 5.0
# Objects checked at once: S3 latency, not bandwidth, bounds a scrub of small chunks.
WORKERS = 4


class ScrubCancelled(Exception):
    """The process is stopping; the run is recorded as interrupted."""


@dataclass
class ScrubTally:
    """Counts over copies (one object on one store), except objects and unrecoverable."""

    objects: int = 0
    copies: int = 0
    ok: int = 0
    missing: int = 0
    corrupt: int = 0
    unreachable: int = 0
    repaired: int = 0
    unrecoverable: int = 0
    problems: list[dict[str, Any]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, report: ObjectReport) -> None:
        with self._lock:
            self.objects += 1
            for state in report.states.values():
                self.copies += 1
                if state is CopyState.OK:
                    self.ok += 1
                elif state is CopyState.MISSING:
                    self.missing += 1
                elif state is CopyState.CORRUPT:
                    self.corrupt += 1
                else:
                    self.unreachable += 1
            self.repaired += len(report.repaired)
            if report.unrecoverable:
                self.unrecoverable += 1
            for problem in report.problems():
                if report.unrecoverable:
                    problem["unrecoverable"] = True
                self.note(problem)

    def note(self, problem: dict[str, Any]) -> None:
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append(problem)

    @property
    def outstanding(self) -> int:
        """Copies still not as recorded after this run (found bad and not mended)."""
        return self.missing + self.corrupt + self.unreachable - self.repaired

    def copy_to(self, run: ScrubRun) -> None:
        with self._lock:
            for name in (
                "objects",
                "copies",
                "ok",
                "missing",
                "corrupt",
                "unreachable",
                "repaired",
                "unrecoverable",
            ):
                setattr(run, name, getattr(self, name))
            run.problems = list(self.problems)


def stores_of(store: ObjectStore) -> list[ObjectStore]:
    """Every store that holds a copy: a replicated store's primary and replicas, else itself."""
    return store.stores if isinstance(store, SupportsReplicas) else [store]


def running_scrub(session: Session) -> ScrubRun | None:
    """A run under way in some process (its heartbeat is recent)."""
    return session.scalars(
        select(ScrubRun)
        .where(
            ScrubRun.status == ScrubStatus.RUNNING,
            ScrubRun.heartbeat_at > utcnow() - STALE_AFTER,
        )
        .order_by(ScrubRun.started_at)
    ).first()


def begin_scrub(
    session: Session, *, trigger: str, repair: bool, image_id: str | None, exclusive: bool
) -> ScrubRun:
    """Record a new run; with exclusive, refuse while another one is under way."""
    if image_id is not None and session.get(CatalogueImage, image_id) is None:
        raise NotFound(f"no image {image_id}")
    if exclusive and running_scrub(session) is not None:
        raise Conflict("a scrub is already running")
    run = ScrubRun(trigger=trigger, repair=repair, image_id=image_id)
    session.add(run)
    session.flush()
    return run


def run_scrub(
    services: Services,
    *,
    repair: bool,
    image_id: str | None = None,
    trigger: str = "cli",
    bandwidth: int | None = None,
    cancel: threading.Event | None = None,
    exclusive: bool = False,
) -> ScrubRun:
    """Scrub now, in this thread; the finished run as recorded."""
    with services.session() as session:
        run = begin_scrub(
            session, trigger=trigger, repair=repair, image_id=image_id, exclusive=exclusive
        )
    return execute_scrub(services, run.id, bandwidth=bandwidth, cancel=cancel)


def execute_scrub(
    services: Services,
    run_id: str,
    *,
    bandwidth: int | None = None,
    cancel: threading.Event | None = None,
) -> ScrubRun:
    """Carry out a recorded run: catch replicas up (when repairing), then check every copy."""
    with services.session() as session:
        run = session.get(ScrubRun, run_id)
        if run is None:
            raise NotFound(f"no scrub run {run_id}")
        repair, image_id = run.repair, run.image_id
    tally = ScrubTally()
    meter = Bandwidth(bandwidth)
    last_beat = time.monotonic()

    def heartbeat(force: bool = False) -> None:
        nonlocal last_beat
        if cancel is not None and cancel.is_set():
            raise ScrubCancelled
        if not force and time.monotonic() - last_beat < _HEARTBEAT_SECONDS:
            return
        last_beat = time.monotonic()
        with services.session() as session:
            row = session.get(ScrubRun, run_id)
            assert row is not None
            tally.copy_to(row)
            row.bytes_read = meter.bytes
            row.heartbeat_at = utcnow()

    status, error = ScrubStatus.SUCCEEDED, None
    try:
        if repair:
            catch_up_replicas(services.store, services.sessions)
        _scrub_all(services, tally, meter, repair=repair, image_id=image_id, heartbeat=heartbeat)
    except ScrubCancelled:
        status, error = ScrubStatus.FAILED, "interrupted: the server stopped"
    except Exception as exc:
        log.exception("scrub %s failed", run_id)
        status, error = ScrubStatus.FAILED, f"{type(exc).__name__}: {exc}"
    with services.session() as session:
        row = session.get(ScrubRun, run_id)
        assert row is not None
        tally.copy_to(row)
        row.bytes_read = meter.bytes
        row.status = status
        row.error = error
        row.finished_at = row.heartbeat_at = utcnow()
    log.info(
        "scrub %s %s: %d objects, %d copies, %d ok, %d missing, %d corrupt, %d unreachable, "
        "%d repaired, %d unrecoverable",
        run_id,
        status.value,
        tally.objects,
        tally.copies,
        tally.ok,
        tally.missing,
        tally.corrupt,
        tally.unreachable,
        tally.repaired,
        tally.unrecoverable,
    )
    return row


def _scrub_all(
    services: Services,
    tally: ScrubTally,
    meter: Bandwidth,
    *,
    repair: bool,
    image_id: str | None,
    heartbeat: Callable[[bool], None],
) -> None:
    stores = stores_of(services.store)
    with services.session() as session:
        originals, manifests = _recorded(session, image_id)
    seen: set[str] = set()
    with ThreadPoolExecutor(WORKERS, thread_name_prefix="scrub") as pool:
        in_flight: set[Future[None]] = set()

        def check(objects: Iterable[StoredObject]) -> None:
            for obj in objects:
                if obj.key in seen:
                    continue
                seen.add(obj.key)
                while len(in_flight) >= 4 * WORKERS:
                    done, _ = wait(in_flight, return_when=FIRST_COMPLETED)
                    for future in done:
                        in_flight.discard(future)
                        future.result()
                    heartbeat(False)
                in_flight.add(pool.submit(_check_one, obj, stores, repair, meter, tally))

        try:
            check(originals)
            for fixity in manifests:
                record = StoredObject(
                    fixity.manifest_key, fixity.manifest_size, fixity.manifest_sha256
                )
                seen.add(record.key)
                report = scrub_object(record, stores, repair=repair, bandwidth=meter)
                tally.add(report)
                manifest = _read_manifest(stores, report)
                if manifest is None:
                    tally.note(
                        {
                            "key": record.key,
                            "store": None,
                            "state": "unreadable",
                            "repaired": False,
                            "error": "no copy of the manifest is intact: its objects went "
                            "unchecked",
                        }
                    )
                    continue
                check(manifest.objects)
            for future in list(in_flight):
                future.result()
        finally:
            for future in in_flight:
                future.cancel()


def _check_one(
    obj: StoredObject,
    stores: list[ObjectStore],
    repair: bool,
    meter: Bandwidth,
    tally: ScrubTally,
) -> None:
    tally.add(scrub_object(obj, stores, repair=repair, bandwidth=meter))


def _read_manifest(stores: list[ObjectStore], report: ObjectReport) -> Manifest | None:
    """The manifest from a copy that passed its check (or was just mended)."""
    for store in stores:
        state = report.states.get(store.url)
        if state is CopyState.OK or store.url in report.repaired:
            try:
                return Manifest.from_json(store.get_bytes(report.obj.key))
            except StorageError:
                continue
    return None


def _recorded(
    session: Session, image_id: str | None
) -> tuple[list[StoredObject], list[ImageFixity]]:
    """Originals (from their catalogue rows) and image manifests to scrub."""
    files = select(File)
    fixities = select(ImageFixity)
    if image_id is not None:
        files = files.join(ImageFile, ImageFile.file_id == File.id).where(
            ImageFile.image_id == image_id
        )
        fixities = fixities.where(ImageFixity.image_id == image_id)
    originals = {
        f.storage_key: StoredObject(f.storage_key, f.size, f.sha256)
        for f in session.scalars(files.order_by(File.storage_key))
    }
    manifests = list(session.scalars(fixities.order_by(ImageFixity.image_id)))
    session.expunge_all()
    return list(originals.values()), manifests


# ---------------------------------------------------------------- in the server


class StorageMaintenance:
    """The server's storage housekeeping: catches replicas up from the to-do list every few
    seconds and runs the scheduled scrub (with repair, under the bandwidth cap)."""

    def __init__(self, services: Services) -> None:
        self.services = services
        settings = services.settings
        self.poll_seconds = float(settings.replica_retry_seconds)
        self.interval = timedelta(hours=float(settings.scrub_interval_hours))
        self.bandwidth = int(settings.scrub_bandwidth) or None
        self.started = utcnow()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="storage-maintenance", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def _loop(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            try:
                catch_up_replicas(self.services.store, self.services.sessions)
            except Exception:
                log.exception("replica catch-up failed")
            try:
                if self.scrub_due():
                    run_scrub(
                        self.services,
                        repair=True,
                        trigger="schedule",
                        bandwidth=self.bandwidth,
                        cancel=self._stop,
                        exclusive=True,
                    )
            except Conflict:
                pass  # another process is scrubbing
            except Exception:
                log.exception("scheduled scrub failed")

    def scrub_due(self, now: datetime | None = None) -> bool:
        """One interval after the last whole-store run, or after start-up when there was none."""
        if not self.interval:
            return False
        with self.services.session() as session:
            last = session.scalars(
                select(ScrubRun.started_at)
                .where(ScrubRun.image_id.is_(None))
                .order_by(ScrubRun.started_at.desc())
            ).first()
        since = max(self.started, last) if last is not None else self.started
        return (now or utcnow()) >= since + self.interval


# ---------------------------------------------------------------- reporting


def run_document(run: ScrubRun) -> dict[str, Any]:
    """A run as JSON: counts, the first problems, and whether the stores are now as recorded."""
    outstanding = run.missing + run.corrupt + run.unreachable - run.repaired
    problems = list(run.problems or [])
    clean = (
        run.status == ScrubStatus.SUCCEEDED
        and outstanding == 0
        and run.unrecoverable == 0
        and not any(p.get("state") == "unreadable" for p in problems)
    )
    return {
        "id": run.id,
        "trigger": run.trigger,
        "repair": run.repair,
        "image_id": run.image_id,
        "status": run.status.value,
        "started_at": run.started_at.isoformat(),
        "finished_at": run.finished_at.isoformat() if run.finished_at else None,
        "objects": run.objects,
        "copies": run.copies,
        "ok": run.ok,
        "missing": run.missing,
        "corrupt": run.corrupt,
        "unreachable": run.unreachable,
        "repaired": run.repaired,
        "unrecoverable": run.unrecoverable,
        "outstanding": outstanding,
        "bytes_read": run.bytes_read,
        "clean": clean,
        "error": run.error,
        "problems": problems,
    }


def describe_run(run: ScrubRun) -> str:
    """A run for a terminal: one summary line, then one line per problem."""
    lines = [
        f"scrub {run.status.value}: {run.objects} objects, {run.copies} copies checked: "
        f"{run.ok} ok, {run.missing} missing, {run.corrupt} corrupt, "
        f"{run.unreachable} unreachable; {run.repaired} repaired, "
        f"{run.unrecoverable} unrecoverable ({run.bytes_read / 1e6:.1f} MB read)"
    ]
    if run.error:
        lines.append(f"  error: {run.error}")
    for problem in run.problems or []:
        outcome = (
            "UNRECOVERABLE"
            if problem.get("unrecoverable")
            else "repaired"
            if problem.get("repaired")
            else (problem.get("error") or "not repaired")
        )
        where = f" on {problem['store']}" if problem.get("store") else ""
        lines.append(f"  {problem['state']:<12} {problem['key']}{where}: {outcome}")
    return "\n".join(lines)
