"""OME-XML for a series built with ome-types: instrument, pixels with physical sizes, channels, vendor keys."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from lxml import etree

from allmicro_data.acquisition import ACQUISITION_FIELDS

if TYPE_CHECKING:
    # Imported where documents are built: the server imports this module only to annotate a
    # stored document (with_annotations, lxml alone), and ome-types would add a second of CPU
    # to every server start.
    from ome_types import model as ome

    from allmicro_data.ingest.readers.base import Series

ACQUISITION_NS = "https://allmicro-data.eu/ns/acquisition"
VENDOR_NS = "https://allmicro-data.eu/ns/vendor"
# A MapAnnotation is for search and display, not for bulk data: the lossless vendor JSON is kept
# beside the pyramid; the annotation holds at most this many flattened keys.
MAX_VENDOR_KEYS = 20_000
MAX_VALUE_CHARS = 4096

_PIXEL_TYPES = {
    "int8": "int8",
    "int16": "int16",
    "int32": "int32",
    "uint8": "uint8",
    "uint16": "uint16",
    "uint32": "uint32",
    "float32": "float",
    "float64": "double",
    "bool": "bit",
    "complex64": "complex",
    "complex128": "double-complex",
}


def _flatten(value: Any, prefix: str, out: list[tuple[str, str]]) -> None:
    if len(out) >= MAX_VENDOR_KEYS:
        return
    if isinstance(value, dict):
        for key, item in value.items():
            _flatten(item, f"{prefix}.{key}" if prefix else str(key), out)
        return
    if isinstance(value, list) and value and any(isinstance(v, dict | list) for v in value):
        for index, item in enumerate(value):
            _flatten(item, f"{prefix}[{index}]", out)
        return
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    # XML 1.0 cannot carry most control characters; vendor strings sometimes hold them.
    text = "".join(ch for ch in text if ch in "\t\n\r" or ord(ch) >= 0x20)
    out.append((prefix or "value", text[:MAX_VALUE_CHARS]))


def _pairs(pairs: list[tuple[str, str]]) -> ome.Map:
    from ome_types import model as ome

    return ome.Map(ms=[ome.Map.M(k=k, value=v) for k, v in pairs])


def _pixel_type(dtype: np.dtype[Any]) -> str:
    name = np.dtype(dtype).name
    if name not in _PIXEL_TYPES:
        raise ValueError(f"dtype {name} has no OME pixel type")
    return _PIXEL_TYPES[name]


def build_ome_xml(series: Series, name: str) -> str:
    """An OME-XML document (2016-06 schema) describing one series; validates against the schema."""
    import ome_types
    from ome_types import model as ome

    acq = series.acquisition
    sizes = dict(zip(series.axes, series.shape, strict=True))
    n_channels = sizes.get("c", 1)
    ps = series.pixel_size

    instrument = None
    instrument_ref = None
    objective_settings = None
    detector_id = None
    if acq.instrument or acq.vendor or acq.detector or acq.objective:
        microscope = (
            ome.Microscope(manufacturer=acq.vendor, model=acq.instrument)
            if acq.instrument or acq.vendor
            else None
        )
        detectors = []
        if acq.detector:
            detector_id = "Detector:0:0"
            detectors.append(ome.Detector(id=detector_id, model=acq.detector))
        objectives = []
        if acq.objective:
            objectives.append(
                ome.Objective(
                    id="Objective:0:0",
                    model=acq.objective,
                    nominal_magnification=acq.magnification if acq.modality == "optical" else None,
                )
            )
            objective_settings = ome.ObjectiveSettings(id="Objective:0:0")
        instrument = ome.Instrument(
            id="Instrument:0", microscope=microscope, detectors=detectors, objectives=objectives
        )
        instrument_ref = ome.InstrumentRef(id="Instrument:0")

    channels = []
    for index in range(n_channels):
        known = acq.channels[index] if index < len(acq.channels) else None
        channel_args: dict[str, Any] = {
            "id": f"Channel:0:{index}",
            "samples_per_pixel": 1,
        }
        if known is not None:
            channel_args["name"] = known.name
            if known.excitation_wavelength:
                channel_args["excitation_wavelength"] = known.excitation_wavelength * 1e9
                channel_args["excitation_wavelength_unit"] = "nm"
            if known.emission_wavelength:
                channel_args["emission_wavelength"] = known.emission_wavelength * 1e9
                channel_args["emission_wavelength_unit"] = "nm"
            if known.color:
                red, green, blue = (int(known.color[i : i + 2], 16) for i in (0, 2, 4))
                channel_args["color"] = (red << 24) | (green << 16) | (blue << 8) | 0xFF
        elif series.rgb and n_channels in (3, 4):
            channel_args["name"] = "RGBA"[index]
        if detector_id is not None:
            channel_args["detector_settings"] = ome.DetectorSettings(id=detector_id)
        channels.append(ome.Channel(**channel_args))

    pixels_args: dict[str, Any] = {
        "id": "Pixels:0",
        "dimension_order": "XYZCT",
        "type": _pixel_type(series.dtype),
        "size_x": sizes.get("x", 1),
        "size_y": sizes.get("y", 1),
        "size_z": sizes.get("z", 1),
        "size_c": n_channels,
        "size_t": sizes.get("t", 1),
        "channels": channels,
        "metadata_only": ome.MetadataOnly(),
    }
    # Physical sizes in nm keep the numbers readable for EM; OME units carry the meaning.
    for axis, value in (("x", ps.x), ("y", ps.y), ("z", ps.z)):
        if value is not None and value > 0:
            pixels_args[f"physical_size_{axis}"] = value * 1e9
            pixels_args[f"physical_size_{axis}_unit"] = "nm"
    if "t" in series.axis_calibration and series.axis_calibration["t"][1] in ("s", "ms"):
        scale, unit = series.axis_calibration["t"]
        pixels_args["time_increment"] = scale
        pixels_args["time_increment_unit"] = unit

    # Every field of the table the file states, under its own name, whether or not OME also has
    # an attribute for it (the table's `ome` says which do); then the channels.
    recorded = acq.to_json()
    acquisition_pairs: list[tuple[str, str]] = []
    for field in ACQUISITION_FIELDS:
        _flatten(recorded[field.name], field.name, acquisition_pairs)
    _flatten(recorded["channels"], "channels", acquisition_pairs)
    acquisition_pairs = [(k, v) for k, v in acquisition_pairs if v not in ("null", "[]")]
    if series.image_region is not None:
        acquisition_pairs.append(("image_region", json.dumps(list(series.image_region))))
    vendor_pairs: list[tuple[str, str]] = []
    _flatten(series.vendor, "", vendor_pairs)
    annotations = ome.StructuredAnnotations(
        map_annotations=[
            ome.MapAnnotation(
                id="Annotation:0", namespace=ACQUISITION_NS, value=_pairs(acquisition_pairs)
            ),
            ome.MapAnnotation(id="Annotation:1", namespace=VENDOR_NS, value=_pairs(vendor_pairs)),
        ]
    )
    image = ome.Image(
        id="Image:0",
        name=series.name or name,
        description=f"{name}: {acq.modality or 'image'}",
        acquisition_date=acq.acquired_at,
        instrument_ref=instrument_ref,
        objective_settings=objective_settings,
        pixels=ome.Pixels(**pixels_args),
        annotation_refs=[
            ome.AnnotationRef(id="Annotation:0"),
            ome.AnnotationRef(id="Annotation:1"),
        ],
    )
    document = ome.OME(
        creator="AllMicro Data",
        images=[image],
        instruments=[instrument] if instrument is not None else [],
        structured_annotations=annotations,
    )
    return ome_types.to_xml(document)


# ---- annotations people add later (allmicro_data.annotations), put in as the document is served

ANNOTATIONS_NS = "https://allmicro-data.eu/ns/annotations"
DATASET_ANNOTATIONS_NS = "https://allmicro-data.eu/ns/dataset-annotations"


def with_annotations(
    document: bytes,
    *,
    tags: Sequence[str],
    pairs: Sequence[tuple[str, str]],
    dataset_tags: Sequence[str] = (),
    dataset_pairs: Sequence[tuple[str, str]] = (),
) -> bytes:
    """The stored OME-XML with an image's tags as TagAnnotations and its key-value pairs as a
    MapAnnotation (its dataset's in a MapAnnotation of their own namespace), referenced from
    the Image, so the served document always says what the catalogue says now. The stored
    document is left as ingest wrote it."""
    if not (tags or pairs or dataset_tags or dataset_pairs):
        return document
    parser = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=True)
    root = etree.fromstring(document, parser)
    ns = etree.QName(root).namespace
    q = (lambda local: f"{{{ns}}}{local}") if ns else (lambda local: local)
    images = root.findall(q("Image"))
    if not images:
        return document
    structured = root.find(q("StructuredAnnotations"))
    if structured is None:
        structured = etree.Element(q("StructuredAnnotations"))
        rois = root.findall(q("ROI"))
        if rois:
            rois[0].addprevious(structured)
        else:
            images[-1].addnext(structured)
    ids: list[str] = []

    def add(kind: str, namespace: str) -> etree._Element:
        annotation_id = f"Annotation:allmicro-{len(ids)}"
        ids.append(annotation_id)
        return etree.SubElement(structured, q(kind), {"ID": annotation_id, "Namespace": namespace})

    for tag in tags:
        etree.SubElement(add("TagAnnotation", ANNOTATIONS_NS), q("Value")).text = tag
    for namespace, wanted in ((ANNOTATIONS_NS, pairs), (DATASET_ANNOTATIONS_NS, dataset_pairs)):
        if wanted:
            value = etree.SubElement(add("MapAnnotation", namespace), q("Value"))
            for key, text in wanted:
                etree.SubElement(value, q("M"), {"K": key}).text = text
    for tag in dataset_tags:
        etree.SubElement(add("TagAnnotation", DATASET_ANNOTATIONS_NS), q("Value")).text = tag
    for image in images:
        for annotation_id in ids:
            etree.SubElement(image, q("AnnotationRef"), {"ID": annotation_id})
    return bytes(etree.tostring(root, xml_declaration=True, encoding="UTF-8"))
