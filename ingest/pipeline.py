"""The ingest job: read a stored original, catalogue its series, write their pyramids, mark them ready.

Each step can run again: images are found again by (file, series), pyramids are written to the
same keys, and an image turns `ready` only after its pyramid and OME-XML are complete, so a job
that dies half-way leaves nothing visible and its rerun produces the same result.
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from allmicro_data import metrics
from allmicro_data.acquisition import ACQUISITION_FIELDS, catalogue_time
from allmicro_data.catalogue.models import (
    File,
    Image,
    ImageFile,
    ImageStatus,
    Job,
    JobStatus,
    utcnow,
)
from allmicro_data.fixity import original_objects, record_image_fixity, write_image_manifest
from allmicro_data.ingest.grouping import (
    group_files,
    is_project,
    may_be_project_member,
    missing_members,
)
from allmicro_data.ingest.ngff import pyramid_options
from allmicro_data.ingest.ome_xml import build_ome_xml
from allmicro_data.ingest.pixel_limits import check_declared_pixels
from allmicro_data.ingest.pyramid import PyramidInfo, write_pyramid
from allmicro_data.ingest.readers import ReadError, Series, open_image_file
from allmicro_data.ingest.readers.jeol import project_lists
from allmicro_data.ingest.readers.normalise import jsonable
from allmicro_data.jobs import STORAGE_FULL_MESSAGE, JobContext, JobFailure, public_error, rerun
from allmicro_data.object_keys import image_prefix, ome_xml_key, pyramid_key
from allmicro_data.originals import local_copy, release_local_copy
from allmicro_data.scratch import INGEST_PREFIX, scratch_directory, sweep_scratch
from allmicro_data.search import search_text
from allmicro_data.storage import (
    ObjectStore,
    StorageError,
    SupportsLocalPaths,
    is_storage_full,
)

if TYPE_CHECKING:
    from allmicro_data.services import Services
    from allmicro_data.settings import Settings

log = logging.getLogger(__name__)

_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9._ +()\[\]-]")
# Job payload keys: since when a job waits for the rest of its acquisition, and which other
# files the primary's last build read (a companion's job then knows it was included).
WAITING_SINCE = "companions_waiting_since"
BUILT_WITH = "built_with"


def safe_filename(name: str) -> str:
    """A file name safe to create locally, keeping the extension readers may look at."""
    base = name.replace("\\", "/").rsplit("/", 1)[-1].strip() or "original"
    base = _UNSAFE_NAME.sub("_", base)
    return base.lstrip(".") or "original"


@contextmanager
def local_originals(
    store: ObjectStore, files: list[File], settings: Settings | None = None
) -> Iterator[list[Path]]:
    """The originals as local files named as uploaded, side by side (readers find companions
    by name, and some look at the extension). Local files are linked, and so are the local
    copies that uploads left for their jobs (given settings); other objects are downloaded."""
    with scratch_directory(INGEST_PREFIX) as workdir:
        paths: list[Path] = []
        used: set[str] = set()
        for f in files:
            name = safe_filename(f.original_name)
            while name.lower() in used:
                name = f"_{name}"
            used.add(name.lower())
            local = workdir / name
            if isinstance(store, SupportsLocalPaths):
                os.symlink(store.local_path(f.storage_key), local)
            elif (copy := _local_copy(settings, f)) is not None:
                os.symlink(copy, local)
            else:
                with local.open("wb") as out:
                    for block in store.open(f.storage_key):
                        out.write(block)
            paths.append(local)
        yield paths


def _local_copy(settings: Settings | None, f: File) -> Path | None:
    """The local copy the upload of f left for its job, when there is one to read."""
    if settings is None or not f.sha256 or f.size is None:
        return None
    return local_copy(settings, f.sha256, f.size)


def _companions(session: Session, file: File) -> list[File]:
    """Other files of the same acquisition: same dataset and group key.

    Another version of a file with the same name is not its companion, and of several
    versions of one companion name, the latest uploaded is.
    """
    if not file.group_key:
        return []
    found = session.scalars(
        select(File)
        .where(
            File.dataset_id == file.dataset_id,
            File.group_key == file.group_key,
            File.id != file.id,
        )
        .order_by(File.uploaded_at)
    )
    by_name = {f.original_name.lower(): f for f in found}
    by_name.pop(file.original_name.lower(), None)
    return list(by_name.values())


# At most this many .ASW projects of a dataset are read to find the one listing a data file.
_MAX_PROJECTS = 50


def _project_partners(
    session: Session, store: ObjectStore, file: File
) -> tuple[File | None, list[File]]:
    """A JEOL Analysis Station file's partners by its project's contents (the names share no
    stem): for an .ASW, (None, the dataset's files it lists); for a data file, (the project
    that lists it, []) or (None, [])."""
    in_dataset = select(File).where(File.dataset_id == file.dataset_id, File.id != file.id)
    if is_project(file.original_name):
        data_names = or_(
            *(File.original_name.ilike(f"%.{x}") for x in ("img", "map", "pts", "eds"))
        )
        candidates = list(session.scalars(in_dataset.where(data_names)))
        if not candidates:
            return None, []
        with local_originals(store, [file]) as (path,):
            listed = {n.lower() for n in project_lists(path, [f.original_name for f in candidates])}
        return None, [f for f in candidates if f.original_name.lower() in listed]
    if not may_be_project_member(file.original_name):
        return None, []
    projects = session.scalars(
        in_dataset.where(File.original_name.ilike("%.asw"))
        .order_by(File.uploaded_at)
        .limit(_MAX_PROJECTS)
    )
    for project in projects:
        with local_originals(store, [project]) as (path,):
            if project_lists(path, [file.original_name]):
                return project, []
    return None, []


def _roles_in_group(file: File, group: list[File]) -> tuple[File, list[File]]:
    """The primary of file's acquisition (by name stem and kind) and its companions."""
    members = [file, *group]
    by_name = {m.original_name: m for m in members}
    for found in group_files(list(by_name)):
        if file.original_name in found.members:
            return by_name[found.primary], [by_name[n] for n in found.companions]
    return file, group


def _retire_companion_images(session: Session, primary: File, originals: list[File]) -> None:
    """A companion ingested before its primary arrived made an image of its own; now that the
    acquisition's image exists, that one is withdrawn (its original stays stored)."""
    companion_ids = [f.id for f in originals if f.id != primary.id]
    if not companion_ids:
        return
    stale = session.scalars(
        select(Image)
        .join(ImageFile, ImageFile.image_id == Image.id)
        .where(ImageFile.file_id.in_(companion_ids), ImageFile.role == "primary")
    ).all()
    for image in stale:
        image.status = ImageStatus.FAILED
        image.error = f"part of the acquisition of {primary.original_name}"


def _latest_job(session: Session, file: File) -> Job | None:
    return session.scalars(
        select(Job).where(Job.file_id == file.id).order_by(Job.created_at.desc())
    ).first()


def _hand_over(ctx: JobContext, session: Session, file: File, primary: File) -> None:
    """file is a sidecar or data file of primary's acquisition: its bytes are stored and
    downloadable, and the image is built by the primary's job, which is made to include it."""
    job = _latest_job(session, primary)
    if job is not None and job.status is JobStatus.RUNNING:
        # That job may have listed the acquisition's files before this one was stored: look
        # again once per lease (a large movie's build takes long; no need to ask every second).
        ctx.defer_in(
            session,
            utcnow() + timedelta(seconds=ctx.services.settings.job_lease_seconds),
            dict(ctx.job.payload or {}),
            f"part of the acquisition of {primary.original_name}, whose image is being built",
        )
        return
    if job is not None and job.status is JobStatus.QUEUED:
        # It may be waiting for this very file: it runs now, and reads it.
        job.not_before = None
    elif job is not None and file.id not in (job.payload or {}).get(BUILT_WITH, []):
        rerun(session, job)
    ctx.finish_in(session)


def _wait_for_members(
    ctx: JobContext, session: Session, file: File, missing: list[str]
) -> str | None:
    """Defer the job while its acquisition lacks files its vendor always writes (an .emi's
    .ser, a DE movie's _info.txt), up to companion_wait_seconds from the first try.

    Returns None when the job goes ahead with all it needs, the warning to record when it
    goes ahead without what never came, and "" when it was deferred.
    """
    if not missing:
        return None
    payload = dict(ctx.job.payload or {})
    now = utcnow()
    since = payload.get(WAITING_SINCE)
    started = datetime.fromisoformat(since) if isinstance(since, str) else now
    wait = ctx.services.settings.companion_wait_seconds
    deadline = started + timedelta(seconds=wait)
    what = ", ".join(missing)
    if now < deadline:
        payload[WAITING_SINCE] = started.isoformat()
        ctx.defer_in(session, deadline, payload, f"waiting for the {what}")
        log.info("job %s: %s waits for the %s", ctx.job.id, file.original_name, what)
        return ""
    return f"built without the {what}: not uploaded within {wait:.0f} s of this file"


def _image_for(session: Session, file: File, index: int, name: str) -> Image:
    """The catalogue image of series `index` of file, created on the first run."""
    image = session.scalars(
        select(Image)
        .join(ImageFile, ImageFile.image_id == Image.id)
        .where(ImageFile.file_id == file.id, ImageFile.role == "primary")
        .where(Image.series_index == index)
    ).first()
    if image is None:
        image = Image(dataset_id=file.dataset_id, name=name, series_index=index)
        session.add(image)
        session.flush()
        session.add(ImageFile(image_id=image.id, file_id=file.id, role="primary"))
    image.status = ImageStatus.PROCESSING
    image.error = None
    return image


def _series_name(file: File, series: Series, index: int, count: int) -> str:
    if count == 1:
        return file.original_name
    label = series.name or f"series {index}"
    return f"{file.original_name} [{label}]"


def _record(image: Image, series: Series, info: PyramidInfo, ome_xml_key: str, fmt: str) -> None:
    acq = series.acquisition
    image.format = fmt
    image.axes = info.axes
    image.shape = [int(n) for n in info.level_shapes[0]]
    image.dtype = info.dtype
    for field in ACQUISITION_FIELDS:
        setattr(image, field.name, getattr(acq, field.name))
    # A wall-clock time without a zone is kept as if UTC, flagged local (searchable by date).
    image.acquired_at, image.acquired_at_local = catalogue_time(acq.acquired_at)
    image.pixel_size_x = series.pixel_size.x
    image.pixel_size_y = series.pixel_size.y
    image.pixel_size_z = series.pixel_size.z
    acquisition = acq.to_json()
    image.channels = acquisition["channels"]
    image.vendor_metadata = jsonable(dict(series.vendor))
    image.warnings = list(series.warnings)
    image.pyramid_key = info.key
    image.ngff_version = info.ngff_version
    image.levels = len(info.level_shapes)
    image.ome_xml_key = ome_xml_key
    # The viewer shows only this part by default; histograms and default windows leave the
    # rest (an instrument's data bar) out.
    image.image_region = list(series.image_region) if series.image_region else None
    image.search_text = search_text(image)


def run_ingest_job(ctx: JobContext) -> None:
    """Ingest the job's file: every series becomes an image with a pyramid."""
    services = ctx.services
    store: ObjectStore = services.store
    # What jobs killed mid-way left in the temp folder (with S3, whole copies of originals).
    sweep_scratch(INGEST_PREFIX)
    with services.session() as session:
        file = session.get(File, ctx.job.file_id)
        if file is None:
            raise JobFailure("the file of this job no longer exists")
        companions = _companions(session, file)
        if companions:
            primary, companions = _roles_in_group(file, companions)
            if primary.id != file.id:
                _hand_over(ctx, session, file, primary)
                return
        project, listed = _project_partners(session, store, file)
        if project is not None:
            # The project's job makes the images of the files it lists, with its facts.
            _hand_over(ctx, session, file, project)
            return
        companions += [f for f in listed if f not in companions]
        missing = missing_members([f.original_name for f in [file, *companions]])
        if is_project(file.original_name) and not listed:
            missing.append(f"JEOL Analysis Station data files {file.original_name} lists")
        incomplete = _wait_for_members(ctx, session, file, missing)
        if incomplete == "":
            return
        session.expunge_all()
    kind = ctx.job.kind.value
    originals = [file, *companions]
    originals_size = sum(f.size or 0 for f in originals)
    try:
        with ExitStack() as cleanup:
            with metrics.stage(kind, "fetch", originals_size):
                paths = cleanup.enter_context(local_originals(store, originals, services.settings))
            try:
                with metrics.stage(kind, "read", originals_size):
                    image_file = open_image_file(paths[0], paths[1:])
            except ReadError as exc:
                raise JobFailure(str(exc)) from exc
            with image_file:
                try:
                    # Before anything is written: a header that claims far more pixels than
                    # the file holds would cost a worker and the store for nothing.
                    check_declared_pixels(
                        file.original_name,
                        image_file.series,
                        originals_size,
                        max_pixels=services.settings.max_image_pixels,
                        max_ratio=services.settings.max_pixel_compression_ratio,
                    )
                except ReadError as exc:
                    raise JobFailure(str(exc)) from exc
                if incomplete:
                    for series in image_file.series:
                        series.warnings = [*series.warnings, incomplete]
                _ingest_series(ctx, file, image_file.format, image_file.series, originals)
    except JobFailure as exc:
        if not exc.transient:
            _release_local_copies(services.settings, originals)
        raise
    except StorageError as exc:
        if is_storage_full(exc):
            # Waited for, however long it takes: the image is failed with this reason until
            # space is freed and the job's next try makes it.
            raise JobFailure(STORAGE_FULL_MESSAGE, storage_full=True) from exc
        raise JobFailure(f"storage unavailable: {exc}", transient=True) from exc
    _release_local_copies(services.settings, originals)


def _release_local_copies(settings: Settings, originals: list[File]) -> None:
    """The job is over for good (made its images, or failed on its input): the local copies
    its originals' uploads left go; a job to be tried again keeps them."""
    for f in originals:
        if f.sha256:
            release_local_copy(settings, f.sha256)


def _ingest_series(
    ctx: JobContext, file: File, fmt: str, all_series: list[Series], originals: list[File]
) -> None:
    services = ctx.services
    store: ObjectStore = services.store
    with services.session() as session:
        stored = session.get(File, file.id)
        assert stored is not None
        stored.format = fmt
    viewable = [s for s in all_series if _shown(s)]
    if not viewable:
        raise JobFailure(f"{file.original_name}: {fmt} file holds no image data to view")
    total = len(viewable)
    written: list[str] = []
    for index, series in enumerate(all_series):
        if not _shown(series):
            continue
        name = _series_name(file, series, index, len(all_series))
        with services.session() as session:
            stored = session.get(File, file.id)
            assert stored is not None
            image_id = _image_for(session, stored, index, name).id
        done = viewable.index(series)

        def progress(fraction: float, done: int = done) -> None:
            ctx.report((done + fraction) / total)

        key = pyramid_key(image_id)
        try:
            ome_xml = series.ome_xml() or build_ome_xml(series, name)
            xml_key = ome_xml_key(image_id)
            pixels = math.prod(series.shape) * series.dtype.itemsize
            with metrics.stage(ctx.job.kind.value, "pyramid", pixels):
                info = write_pyramid(
                    series,
                    store,
                    key,
                    ome_xml=ome_xml,
                    progress=progress,
                    **pyramid_options(services.settings),
                )
            ome_xml_object = store.put_bytes(xml_key, ome_xml.encode("utf-8"))
            # Fixity: the sha256 and size of every object the image consists of.
            manifest, manifest_object = write_image_manifest(
                store, image_id, [*original_objects(originals), *info.objects, ome_xml_object]
            )
        except ReadError as exc:
            _mark_failed(services, image_id, public_error(str(exc)))
            raise JobFailure(str(exc)) from exc
        except StorageError as exc:
            if is_storage_full(exc):
                # What was written of this pyramid only takes room others need meanwhile (the
                # catalogue, the spool); the next try writes it whole again.
                _discard_partial(store, image_id)
            raise
        with services.session() as session:
            image = session.get(Image, image_id)
            assert image is not None
            _record(image, series, info, xml_key, fmt)
            record_image_fixity(session, image_id, manifest, manifest_object)
        written.append(image_id)
        log.info("job %s: image %s written (%s)", ctx.job.id, image_id, name)
    with services.session() as session:
        current = session.get(File, file.id)
        assert current is not None
        group = _companions(session, current)
        primary = _roles_in_group(current, group)[0] if group else current
        if primary.id != file.id:
            # A file that outranks this one (the DE movie after its sums) arrived while this
            # image was built: the acquisition's image is the new primary's, not this one.
            for image_id in written:
                image = session.get(Image, image_id)
                assert image is not None
                image.status = ImageStatus.FAILED
                image.error = f"part of the acquisition of {primary.original_name}"
            _hand_over(ctx, session, current, primary)
            return
        # Last, in one transaction with the job's success and fenced by its lease: images
        # become visible only when every pyramid is complete and the job has succeeded, and a
        # runner that lost its lease to another cannot publish anything.
        for image_id in written:
            image = session.get(Image, image_id)
            assert image is not None
            image.status = ImageStatus.READY
            image.updated_at = utcnow()
        _retire_companion_images(session, file, originals)
        _settle_companion_jobs(session, ctx, file, originals)
        ctx.finish_in(session)
    log.info("job %s: %d images ready", ctx.job.id, len(written))


def _settle_companion_jobs(
    session: Session, ctx: JobContext, primary: File, originals: list[File]
) -> None:
    """Record which files this build read, and close the companions' jobs still queued (waiting
    for this file, or not yet run): their file is part of this image."""
    others = [f.id for f in originals if f.id != primary.id]
    session.execute(
        update(Job)
        .where(Job.id == ctx.job.id)
        .values(payload={**(ctx.job.payload or {}), BUILT_WITH: others})
    )
    if others:
        session.execute(
            update(Job)
            .where(Job.file_id.in_(others), Job.status == JobStatus.QUEUED)
            .values(status=JobStatus.SUCCEEDED, progress=100.0, error=None, finished_at=utcnow())
        )


def _shown(series: Series) -> bool:
    """Series that become images: not spectra (not viewable), not thumbnails (previews)."""
    return getattr(series, "viewable", True) and not getattr(series, "preview", False)


def _discard_partial(store: ObjectStore, image_id: str) -> None:
    try:
        for key in list(store.list(image_prefix(image_id))):
            store.delete(key)
    except StorageError as exc:
        log.warning("image %s: cannot remove its partial pyramid: %s", image_id, exc)


def _mark_failed(services: Services, image_id: str, message: str) -> None:
    with services.session() as session:
        image = session.get(Image, image_id)
        if image is not None:
            image.status = ImageStatus.FAILED
            image.error = message
