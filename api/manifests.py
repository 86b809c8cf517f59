"""IIIF Presentation API 3.0 manifests: a dataset as a sequence of canvases, one per ready image,
with the dataset's and each image's metadata in the UI's languages."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from sqlalchemy import select

from allmicro_data.access import Caller, get_visible, scoped
from allmicro_data.acquisition import ACQUISITION_FIELDS
from allmicro_data.api import iiif_auth
from allmicro_data.api.web.formatting import FIELDS
from allmicro_data.api.web.i18n import LANGUAGES, translations
from allmicro_data.catalogue.models import Dataset, Image, ImageStatus, Project
from allmicro_data.services import Services

CONTEXT = "http://iiif.io/api/presentation/3/context.json"
THUMBNAIL = 256
Language = dict[str, list[str]]

# Labels of the dataset's own facts, in the UI's languages (en, it, sl).
PROJECT = {"en": ["Project"], "it": ["Progetto"], "sl": ["Projekt"]}
DATASET = {"en": ["Dataset"], "it": ["Dataset"], "sl": ["Nabor podatkov"]}
DESCRIPTION = {"en": ["Description"], "it": ["Descrizione"], "sl": ["Opis"]}
IMAGES = {"en": ["Images"], "it": ["Immagini"], "sl": ["Slike"]}
_LABELS = {field.name: field.label for field in ACQUISITION_FIELDS}
_SHOWN = dict(FIELDS)
# Facts that differ from image to image; the manifest lists the values its images share.
SHARED_FIELDS = ("modality", "vendor", "instrument", "detector", "operator")


def _each_language(text: Callable[[str], str]) -> Language:
    """One value per UI language; collapsed to `none` when every language says the same."""
    values = {language: text(language) for language in LANGUAGES}
    if len(set(values.values())) == 1:
        return {"none": [values[LANGUAGES[0]]]}
    return {language: [value] for language, value in values.items()}


def _label(msgid: str) -> Language:
    return {language: [translations(language).gettext(msgid)] for language in LANGUAGES}


def _entry(label: str | Language, value: Language) -> dict[str, Language]:
    """A metadata pair; a str label is a msgid of the UI catalogues (an acquisition field's)."""
    return {"label": _label(label) if isinstance(label, str) else label, "value": value}


def _plain(text: str) -> Language:
    return {"none": [text]}


def _natural(name: str) -> list[Any]:
    """Sort key that puts image_9 before image_10, as microscopists number their acquisitions."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def image_size(image: Image) -> tuple[int, int] | None:
    """Width and height in pixels of the full-resolution plane, from the stored shape."""
    if not image.axes or not image.shape or len(image.axes) != len(image.shape):
        return None
    sizes = dict(zip(image.axes, image.shape, strict=True))
    if "x" not in sizes or "y" not in sizes:
        return None
    return int(sizes["x"]), int(sizes["y"])


def image_metadata(image: Image) -> list[dict[str, Language]]:
    """The acquisition fields the image's files state, each shown as the image page shows it."""
    entries = []
    for field in ACQUISITION_FIELDS:
        value = getattr(image, field.name, None)
        if value is None or value == "":
            continue
        entries.append(_entry(field.label, _each_language(_shown(field.name, value))))
    return entries


def _shown(name: str, value: Any) -> Callable[[str], str]:
    """How the image page writes a field's value, as a function of the language."""
    show = _SHOWN[name]
    return lambda language: show(value, language)


def _dataset_metadata(project: Project, dataset: Dataset, images: list[Image]) -> list[Any]:
    entries = [_entry(PROJECT, _plain(project.name)), _entry(DATASET, _plain(dataset.name))]
    if dataset.description:
        entries.append(_entry(DESCRIPTION, _plain(dataset.description)))
    entries.append(_entry(IMAGES, _plain(str(len(images)))))
    for name in SHARED_FIELDS:
        values = sorted({str(v) for v in (getattr(i, name) for i in images) if v})
        if values:
            entries.append({"label": _label(_LABELS[name]), "value": {"none": values}})
    acquired = sorted(i.acquired_at for i in images if i.acquired_at is not None)
    if acquired:
        show = _SHOWN["acquired_at"]
        first, last = acquired[0], acquired[-1]
        entries.append(
            _entry(
                _LABELS["acquired_at"],
                _each_language(
                    lambda language: (
                        show(first, language)
                        if first == last
                        else f"{show(first, language)} \u2013 {show(last, language)}"
                    )
                ),
            )
        )
    return entries


def _canvas(
    manifest_id: str,
    image: Image,
    size: tuple[int, int],
    service_id: str,
    auth: list[dict[str, Any]] | None,
) -> dict[str, Any]:
    width, height = size
    canvas_id = f"{manifest_id}/canvas/{image.id}"
    service: dict[str, Any] = {"id": service_id, "type": "ImageService3", "profile": "level2"}
    if auth:
        service["service"] = auth
    canvas: dict[str, Any] = {
        "id": canvas_id,
        "type": "Canvas",
        "label": _plain(image.name),
        "width": width,
        "height": height,
        "thumbnail": [
            {
                "id": f"{service_id}/full/!{THUMBNAIL},{THUMBNAIL}/0/default.jpg",
                "type": "Image",
                "format": "image/jpeg",
                "service": [service],
            }
        ],
        "items": [
            {
                "id": f"{canvas_id}/page",
                "type": "AnnotationPage",
                "items": [
                    {
                        "id": f"{canvas_id}/page/image",
                        "type": "Annotation",
                        "motivation": "painting",
                        "target": canvas_id,
                        "body": {
                            "id": f"{service_id}/full/max/0/default.jpg",
                            "type": "Image",
                            "format": "image/jpeg",
                            "width": width,
                            "height": height,
                            "service": [service],
                        },
                    }
                ],
            }
        ],
    }
    metadata = image_metadata(image)
    if metadata:
        canvas["metadata"] = metadata
    if image.pixel_size_x and (
        not image.pixel_size_y
        or abs(image.pixel_size_x - image.pixel_size_y) <= 1e-6 * image.pixel_size_x
    ):
        # A ruler in viewers that read it: millimetres per canvas unit (= per pixel).
        canvas["service"] = [
            {
                "@context": "http://iiif.io/api/annex/services/physdim/1/context.json",
                "id": f"{service_id}/physdim",
                "type": "Service",
                "profile": "http://iiif.io/api/annex/services/physdim",
                "physicalScale": image.pixel_size_x * 1000.0,
                "physicalUnits": "mm",
            }
        ]
    return canvas


def build(
    services: Services,
    caller: Caller,
    dataset_id: str,
    *,
    manifest_id: str,
    service_of: Callable[[str], str],
    origin: str,
    auth: bool = False,
) -> dict[str, Any]:
    """The manifest of a dataset the caller may see (404 otherwise): its ready images in name
    order, each painted by the image service `service_of(image_id)`. With `auth`, each service
    declares the IIIF Authorization Flow services that protect it."""
    with services.session() as session:
        dataset = get_visible(session, caller, Dataset, dataset_id)
        project = session.get(Project, dataset.project_id)
        assert project is not None
        images = list(
            session.scalars(
                scoped(
                    select(Image).where(
                        Image.dataset_id == dataset.id,
                        Image.status == ImageStatus.READY,
                        Image.pyramid_key.is_not(None),
                    ),
                    Image,
                    caller,
                )
            )
        )
        images.sort(key=lambda i: (_natural(i.name), i.series_index, i.id))
        sized = [(image, size) for image in images if (size := image_size(image))]
        canvases = [
            _canvas(
                manifest_id,
                image,
                size,
                service_of(image.id),
                iiif_auth.services(origin, image.id) if auth else None,
            )
            for image, size in sized
        ]
        manifest: dict[str, Any] = {
            "@context": CONTEXT,
            "id": manifest_id,
            "type": "Manifest",
            "label": _plain(dataset.name),
            "metadata": _dataset_metadata(project, dataset, [i for i, _ in sized]),
            "homepage": [
                {
                    "id": f"{origin}/datasets/{dataset.id}",
                    "type": "Text",
                    "label": _plain(f"{project.name} · {dataset.name}"),
                    "format": "text/html",
                }
            ],
            "items": canvases,
        }
        if dataset.description:
            manifest["summary"] = _plain(dataset.description)
        if canvases:
            manifest["start"] = {"id": canvases[0]["id"], "type": "Canvas"}
        return manifest
