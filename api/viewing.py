"""The hot path of viewing: who may see which image, decided once and remembered briefly, and the
caches of decoded chunks and encoded tiles that make repeat requests cheap."""

from __future__ import annotations

import json
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from functools import partial
from typing import Any

from fastapi import Request
from lxml import etree
from sqlalchemy import select, update
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from allmicro_data import capabilities
from allmicro_data.access import Caller, get_visible
from allmicro_data.api.deps import presented_token
from allmicro_data.api.plane_statistics import sample_defaults
from allmicro_data.api.pyramids import ChunkCache, OpenPyramid, PyramidCache
from allmicro_data.api.render_budget import RenderBudget
from allmicro_data.audit import record
from allmicro_data.auth import caller_for_token
from allmicro_data.capabilities import Capability
from allmicro_data.catalogue.models import AuditEvent, Image, TokenKind
from allmicro_data.errors import NotFound, Unauthorised
from allmicro_data.services import Services
from allmicro_data.settings import secret_key
from allmicro_data.storage import ObjectNotFound, ObjectStore

# How long a decision about a credential, a capability or an image is reused without asking the
# catalogue: revoking a token, a session or a membership, changing a password or disabling a user
# takes effect for tiles, IIIF, zarr and capability URLs within this time (in each process).
DECISION_SECONDS = 10.0


class TTLCache:
    """A small thread-safe map whose entries expire; bounded by count."""

    def __init__(self, ttl: float, size: int = 10_000) -> None:
        self.ttl = ttl
        self.size = size
        self._items: OrderedDict[Any, tuple[float, Any]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Any) -> Any:
        with self._lock:
            found = self._items.get(key)
            if found is None:
                return None
            expires, value = found
            if expires < time.monotonic():
                del self._items[key]
                return None
            return value

    def put(self, key: Any, value: Any) -> None:
        with self._lock:
            self._items[key] = (time.monotonic() + self.ttl, value)
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


@dataclass(frozen=True)
class Rendered:
    """An encoded picture as served: body, media type and its strong ETag."""

    body: bytes
    media_type: str
    etag: str


class TileCache:
    """Encoded responses, least recently used out, bounded by bytes. One entry may be stored
    under several keys (the request as written and its canonical form) at the cost of one."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._items: OrderedDict[str, Rendered] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key: str) -> Rendered | None:
        with self._lock:
            found = self._items.get(key)
            if found is not None:
                self._items.move_to_end(key)
            return found

    def put(self, key: str, rendered: Rendered) -> None:
        if len(rendered.body) > self.max_bytes // 8:
            return
        with self._lock:
            if key in self._items:
                return
            self._items[key] = rendered
            self._bytes += len(rendered.body)
            while self._bytes > self.max_bytes and self._items:
                _, evicted = self._items.popitem(last=False)
                self._bytes -= len(evicted.body)


@dataclass(frozen=True)
class ImageView:
    """What the viewing endpoints need of an image the caller may see."""

    id: str
    dataset_id: str
    name: str
    pyramid_key: str
    version: str  # changes when the image is re-ingested
    pixel_size_x: float | None
    pixel_size_y: float | None
    pixel_size_z: float | None
    # The part of the frame that is the sample, (y0, y1, x0, x1), when a data bar is burnt in.
    image_region: tuple[int, int, int, int] | None = None

    @classmethod
    def of(cls, image: Image) -> ImageView:
        if image.pyramid_key is None:
            raise NotFound(f"image {image.id} not found")
        return cls(
            id=image.id,
            dataset_id=image.dataset_id,
            name=image.name,
            pyramid_key=image.pyramid_key,
            version=image.updated_at.isoformat(),
            pixel_size_x=image.pixel_size_x,
            pixel_size_y=image.pixel_size_y,
            pixel_size_z=image.pixel_size_z,
            image_region=_region(image.image_region),
        )


def _region(value: Any) -> tuple[int, int, int, int] | None:
    if isinstance(value, list | tuple) and len(value) == 4:
        try:
            y0, y1, x0, x1 = (int(v) for v in value)
        except (TypeError, ValueError):
            return None
        return y0, y1, x0, x1
    return None


class Viewing:
    """Per-process state of the viewing endpoints."""

    def __init__(self, services: Services, *, chunk_mb: int = 256, tile_mb: int = 128) -> None:
        self.services = services
        self.pyramids = PyramidCache()
        self.chunks = ChunkCache(chunk_mb * 1024 * 1024)
        self.tiles = TileCache(tile_mb * 1024 * 1024)
        self.renders = RenderBudget.from_settings(services.settings)
        self.callers = TTLCache(DECISION_SECONDS)
        self.images = TTLCache(DECISION_SECONDS)
        self._key = secret_key(services.settings)
        self._seen_capabilities: set[str] = set()

    def pyramid(self, view: ImageView) -> OpenPyramid:
        return self.pyramids.get(
            self.services.store, view.pyramid_key, view.version, partial(self._prepare, view)
        )

    def _prepare(self, view: ImageView, pyramid: OpenPyramid) -> None:
        # The default windows of an image with a data bar come from the sample alone; computed
        # once when its pyramid opens (milliseconds, and only for such images).
        if view.image_region is not None:
            pyramid.defaults = sample_defaults(
                self.services.store, self.chunks, pyramid, view.image_region
            )

    async def open_pyramid(self, view: ImageView) -> OpenPyramid:
        """The image's pyramid, opened in a worker thread only the first time."""
        found = self.pyramids.peek(view.pyramid_key, view.version)
        return found if found is not None else await run_in_threadpool(self.pyramid, view)

    async def caller(self, request: Request) -> Caller:
        """The caller of a viewing request (bearer token or session cookie), remembered briefly."""
        presented = presented_token(request, self.services.settings)
        if presented is None:
            raise Unauthorised("sign in or send a valid bearer token")
        cache_key = (presented.plaintext, presented.kinds)
        caller: Caller | None = self.callers.get(cache_key)
        if caller is None:
            caller = await run_in_threadpool(self._resolve, presented.plaintext, presented.kinds)
            self.callers.put(cache_key, caller)
        return caller

    def _resolve(self, token: str, kinds: tuple[TokenKind, ...]) -> Caller:
        with self.services.session() as session:
            caller = caller_for_token(session, token, kinds)
        if caller is None:
            raise Unauthorised("sign in or send a valid bearer token")
        return caller

    async def image(self, caller: Caller, image_id: str) -> ImageView:
        """The image if the caller may see it (404 otherwise), remembered briefly."""
        cache_key = (caller.user_id, caller.scope, image_id)
        view: ImageView | None = self.images.get(cache_key)
        if view is None:
            view = await run_in_threadpool(self._visible_image, caller, image_id)
            self.images.put(cache_key, view)
        return view

    async def capability_caller(self, capability: Capability) -> Caller:
        """The caller a capability acts for: the credential that minted it, while that is
        valid, its user enabled and their password unchanged; remembered briefly. Whether
        they may still see the image is decided by `image`, as for any caller."""
        cache_key = ("capability", capability.id)
        caller: Caller | None = self.callers.get(cache_key)
        if caller is None:
            caller = await run_in_threadpool(self._capability_caller, capability)
            self.callers.put(cache_key, caller)
        return caller

    def _capability_caller(self, capability: Capability) -> Caller:
        with self.services.session() as session:
            caller = capabilities.holder(session, self._key, capability)
        if caller is None:
            raise NotFound("capability not found or expired")
        return caller

    async def note_capability_use(self, capability: Capability, address: str | None) -> None:
        """Audit the first use of a capability (once per process; the catalogue de-duplicates)."""
        if capability.id in self._seen_capabilities:
            return
        await run_in_threadpool(self._record_first_use, capability, address)
        self._seen_capabilities.add(capability.id)

    def _record_first_use(self, capability: Capability, address: str | None) -> None:
        with self.services.session() as session:
            seen = session.scalar(
                select(AuditEvent.id)
                .where(AuditEvent.action == "capability.use", AuditEvent.object_id == capability.id)
                .limit(1)
            )
            if seen is None:
                record(
                    session,
                    "capability.use",
                    actor_user_id=capability.user_id,
                    object_type="capability",
                    object_id=capability.id,
                    client_address=address,
                    detail={"kind": capability.kind, "target": capability.target},
                )

    def _visible_image(self, caller: Caller, image_id: str) -> ImageView:
        with self.services.session() as session:
            image = get_visible(session, caller, Image, image_id)
            if image.image_region is None and _has_data_bar(image):
                recorded_image_region(session, self.services.store, image)
            return ImageView.of(image)


def _has_data_bar(image: Image) -> bool:
    # The readers that find a data bar say so among the image's warnings.
    return any(str(w).startswith("data bar:") for w in image.warnings or ())


def recorded_image_region(session: Session, store: ObjectStore, image: Image) -> None:
    """Fill the catalogue's image region of an image ingested before the catalogue had one,
    from its OME-XML (the acquisition map annotation's "image_region"). Its version (updated_at)
    moves on: every process then opens its pyramid again, with default windows from the sample
    alone, and its default tiles get new ETags."""
    if image.ome_xml_key is None:
        return
    try:
        document = etree.fromstring(
            store.get_bytes(image.ome_xml_key), etree.XMLParser(resolve_entities=False)
        )
    except (ObjectNotFound, etree.XMLSyntaxError):
        return
    for element in document.iter("{*}M"):
        if element.get("K") == "image_region":
            try:
                region = _region(json.loads(element.text or ""))
            except ValueError:
                region = None
            if region is not None:
                session.execute(
                    update(Image)
                    .where(Image.id == image.id)
                    .values(image_region=list(region))
                    .execution_options(synchronize_session=False)
                )
                session.commit()
                session.refresh(image)
            return


def viewing(request: Request) -> Viewing:
    state: Viewing = request.app.state.viewing
    return state
