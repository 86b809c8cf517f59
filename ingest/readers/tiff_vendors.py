"""Vendor metadata inside TIFF files (FEI/Thermo, Zeiss SEM, JEOL, Olympus SIS, TVIPS, ImageJ, Gatan, Hitachi, Tescan)."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

from allmicro_data.ingest.readers.base import Acquisition, PixelSize, Series
from allmicro_data.ingest.readers.dm_tags import (
    dm_acquisition,
    dm_tags_from_imagej_info,
    find_image_tags,
)
from allmicro_data.ingest.readers.normalise import (
    CURRENT_UNITS,
    LENGTH_UNITS,
    TIME_UNITS,
    VOLTAGE_UNITS,
    as_float,
    dig,
    jsonable,
    length_factor,
    parse_datetime,
    parse_quantity,
    positive,
    text_or_none,
    to_utc,
)

# Resolution units (TIFF tag 296) in metres; 1 (NONE) has no physical meaning.
RESOLUTION_UNIT_M = {2: 0.0254, 3: 0.01}


class TiffContext:
    """What a vendor parser sees: the page that carries the tags, the tifffile handle, companions."""

    def __init__(self, tiff: Any, page: Any, series: Series, companions: Sequence[Path]) -> None:
        self.tiff = tiff
        self.page = page
        self.series = series
        self.companions = companions

    def tag(self, name_or_code: str | int) -> Any:
        tag = self.page.tags.get(name_or_code)
        return None if tag is None else tag.value

    @property
    def height(self) -> int:
        return int(self.series.shape[self.series.axes.index("y")])

    @property
    def width(self) -> int:
        return int(self.series.shape[self.series.axes.index("x")])


def resolution_pixel_size(ctx: TiffContext, *, allow_inch: bool = False) -> PixelSize:
    """Pixel size from X/YResolution in centimetre units. Inch units are what image libraries
    and cameras write for printing (72, 96, 150, 300 dpi), never a specimen calibration."""
    unit = ctx.tag("ResolutionUnit")
    metres = RESOLUTION_UNIT_M.get(int(unit)) if unit is not None else None
    if metres is None or (metres == 0.0254 and not allow_inch):
        return PixelSize()

    def size(name: str) -> float | None:
        value = ctx.tag(name)
        if not value:
            return None
        num, den = value
        return float(metres * den / num) if num and den else None

    return PixelSize(x=size("XResolution"), y=size("YResolution"))


def baseline(ctx: TiffContext) -> None:
    """Baseline TIFF tags: make, model, date, artist, software; the only facts a plain TIFF has."""
    acq = ctx.series.acquisition
    acq.vendor = text_or_none(ctx.tag("Make"))
    acq.instrument = text_or_none(ctx.tag("Model"))
    acq.operator = text_or_none(ctx.tag("Artist"))
    stamp = text_or_none(ctx.tag("DateTime"))
    if stamp:
        acq.acquired_at = parse_datetime(
            stamp, ("%Y:%m:%d %H:%M:%S", "%Y/%m/%d %H:%M", "%Y/%m/%d %H:%M:%S")
        )
    ctx.series.pixel_size = resolution_pixel_size(ctx)


def fei(ctx: TiffContext, meta: Mapping[str, Any]) -> None:
    """Thermo Fisher / FEI xT and Helios/Quanta/Scios/Apreo metadata (tags 34680/34682)."""
    series, acq = ctx.series, ctx.series.acquisition
    series.vendor["fei"] = jsonable(meta)
    acq.vendor = "Thermo Fisher Scientific"
    acq.instrument = text_or_none(dig(meta, "System", "SystemType"))
    beam = text_or_none(dig(meta, "Beam", "Beam")) or ""
    beam_section = meta.get(beam) if beam else None
    beam_section = beam_section if isinstance(beam_section, Mapping) else meta.get("EBeam", {})
    acq.modality = "FIB" if beam.upper().startswith("IBEAM") else "SEM"
    acq.accelerating_voltage = positive(
        as_float(dig(meta, "Beam", "HV")) or as_float(dig(beam_section, "HV"))
    )
    acq.working_distance = positive(
        as_float(dig(beam_section, "WD")) or as_float(dig(meta, "Stage", "WorkingDistance"))
    )
    acq.horizontal_field_width = positive(
        as_float(dig(beam_section, "HFW")) or as_float(dig(meta, "Scan", "HorFieldsize"))
    )
    acq.beam_current = positive(as_float(dig(beam_section, "BeamCurrent")))
    acq.spot_size = positive(as_float(dig(meta, "Beam", "Spot")))
    acq.dwell_time = positive(as_float(dig(meta, "Scan", "Dwelltime")))
    acq.operator = text_or_none(dig(meta, "User", "User"))
    name, mode = (
        text_or_none(dig(meta, "Detectors", "Name")),
        text_or_none(dig(meta, "Detectors", "Mode")),
    )
    acq.detector = f"{name} ({mode})" if name and mode else name
    tilt = as_float(dig(meta, "Stage", "StageT"))
    # xT writes stage tilt in radians.
    acq.tilt_angle_deg = math.degrees(tilt) if tilt is not None else None
    date, time = text_or_none(dig(meta, "User", "Date")), text_or_none(dig(meta, "User", "Time"))
    if date and time:
        acq.acquired_at = parse_datetime(
            f"{date} {time}", ("%m/%d/%Y %I:%M:%S %p", "%m/%d/%Y %H:%M:%S", "%d.%m.%Y %H:%M:%S")
        )
    series.pixel_size = _fei_pixel_size(ctx, meta, beam)
    # The data bar xT burns under the image: the stored raster is ResolutionY + DatabarHeight.
    res_y = as_float(dig(meta, "Image", "ResolutionY"))
    if res_y is not None and 0 < res_y < ctx.height:
        bar = ctx.height - int(res_y)
        series.image_region = (0, int(res_y), 0, ctx.width)
        series.warnings.append(
            f"data bar: the bottom {bar} rows are the instrument's data bar, not image "
            f"(image region is rows 0-{int(res_y)})"
        )


def _zeiss_value(entry: Any) -> tuple[Any, str | None]:
    if isinstance(entry, tuple | list):
        if len(entry) >= 3:
            return entry[1], str(entry[2])
        if len(entry) == 2:
            return entry[1], None
    return entry, None


def _zeiss_si(meta: Mapping[str, Any], key: str, units: Mapping[str, float]) -> float | None:
    value, unit = _zeiss_value(meta.get(key))
    number = as_float(value)
    if number is None or unit is None:
        return None
    factor = units.get(unit.lower().replace("μ", "µ"))
    return number * factor if factor is not None else None


def _fei_pixel_size(ctx: TiffContext, meta: Mapping[str, Any], beam: str) -> PixelSize:
    """The pixel size an xT header states, wherever it states it.

    Scan images carry [Scan] PixelWidth/PixelHeight; images of other sources (the navigation
    camera, whose pixels are hundreds of micrometres) may leave [Scan] out or zero and state the
    calibration in their own section, or only as a field of view over the image resolution.
    Every size is kept, however large: plausibility is the sanity checks' to report.
    """
    scan_sections = ["Scan", f"{beam[:1]}Scan" if beam else "EScan", beam]
    scan_sections += [name for name in meta if name not in scan_sections]
    for name in scan_sections:
        section = meta.get(name)
        if not isinstance(section, Mapping):
            continue
        px = positive(as_float(section.get("PixelWidth")))
        py = positive(as_float(section.get("PixelHeight")))
        if px is not None or py is not None:
            return PixelSize(x=px or py, y=py or px)
    for name in scan_sections:
        section = meta.get(name)
        if not isinstance(section, Mapping):
            continue
        width = positive(as_float(section.get("HorFieldsize") or section.get("HFW")))
        height = positive(as_float(section.get("VerFieldsize") or section.get("VFW")))
        if width is None:
            continue
        columns = as_float(dig(meta, "Image", "ResolutionX")) or ctx.width
        rows = as_float(dig(meta, "Image", "ResolutionY"))
        px = width / columns
        py = height / rows if height and rows else px
        ctx.series.warnings.append(
            f"pixel size from the field of view: [{name}] field width {width:g} m over "
            f"{columns:g} px (the file states no pixel width)"
        )
        return PixelSize(x=px, y=py)
    return PixelSize()


def _zeiss_magnification(entry: Any) -> float | None:
    """SmartSEM's 'Mag = 50.00 K X', which tifffile leaves as text or splits into
    (50.0, 'KX') or (500, 'X') depending on the spaces; K and M are thousand and million."""
    value, unit = _zeiss_value(entry)
    text = " ".join(str(part) for part in (value, unit) if part is not None)
    match = re.match(r"^\s*([\d.]+)\s*([KM])?\s*[X\u00d7]\s*$", text, re.IGNORECASE)
    if not match:
        return None
    factor = {"K": 1e3, "M": 1e6}.get((match.group(2) or "").upper(), 1.0)
    return positive(float(match.group(1)) * factor)


def _zeiss_time(meta: Mapping[str, Any], *keys: str) -> float | None:
    """The first of keys holding a time, as ('Dwell Time', 100, 'ns') or ('…', '100 ns')."""
    for key in keys:
        value, unit = _zeiss_value(meta.get(key))
        seconds = (
            parse_quantity(f"{value} {unit}", TIME_UNITS)
            if unit is not None
            else parse_quantity(value, TIME_UNITS)
        )
        if positive(seconds) is not None:
            return seconds
    return None


def zeiss_sem(ctx: TiffContext, meta: Mapping[str, Any]) -> None:
    """Zeiss SmartSEM (CZ_SEM tag 34118): label/value/unit tuples keyed ap_*, dp_*, sv_*."""
    series, acq = ctx.series, ctx.series.acquisition
    series.vendor["zeiss_sem"] = jsonable(meta)
    acq.vendor = "Zeiss"
    acq.modality = "SEM"
    acq.instrument = text_or_none(_zeiss_value(meta.get("sv_serial_number"))[0])
    acq.accelerating_voltage = positive(_zeiss_si(meta, "ap_actualkv", VOLTAGE_UNITS))
    acq.working_distance = positive(_zeiss_si(meta, "ap_wd", LENGTH_UNITS))
    acq.beam_current = positive(_zeiss_si(meta, "ap_iprobe", CURRENT_UNITS))
    acq.detector = text_or_none(_zeiss_value(meta.get("dp_detector_channel"))[0])
    acq.operator = text_or_none(_zeiss_value(meta.get("sv_user_name"))[0]) or text_or_none(
        _zeiss_value(meta.get("sv_operator"))[0]
    )
    tilt_value, _ = _zeiss_value(meta.get("ap_stage_at_t"))
    acq.tilt_angle_deg = as_float(tilt_value)
    acq.magnification = _zeiss_magnification(meta.get("ap_mag"))
    # SmartSEM names the pixel dwell time dp_dwell_time; some versions write ap_dwell_time.
    acq.dwell_time = _zeiss_time(meta, "dp_dwell_time", "ap_dwell_time", "ap_pixel_dwell_time")
    date = text_or_none(_zeiss_value(meta.get("ap_date"))[0])
    time = text_or_none(_zeiss_value(meta.get("ap_time"))[0])
    if date and time:
        acq.acquired_at = parse_datetime(f"{date} {time}", ("%d %b %Y %H:%M:%S",))
    width_m = positive(_zeiss_si(meta, "ap_width", LENGTH_UNITS))
    height_m = positive(_zeiss_si(meta, "ap_height", LENGTH_UNITS))
    acq.horizontal_field_width = width_m
    tagged = positive(_zeiss_si(meta, "ap_pixel_size", LENGTH_UNITS))
    px = width_m / ctx.width if width_m else None
    py = height_m / ctx.height if height_m else None
    if px is not None and py is not None and abs(py - px) > 0.01 * px:
        # SmartSEM's data zone adds rows under the scan: the field height covers fewer rows.
        image_rows = round(height_m / px) if height_m else ctx.height
        if 0 < image_rows < ctx.height:
            series.image_region = (0, image_rows, 0, ctx.width)
            series.warnings.append(
                f"data bar: the bottom {ctx.height - image_rows} rows are the SmartSEM data zone"
            )
            py = px
    if px is None and tagged is not None:
        # Without the field width only the tagged size exists; it refers to a 1024-px scan.
        px = py = tagged * 1024 / ctx.width
        series.warnings.append(
            "pixel size derived from the Zeiss reference-scan pixel size (1024 px wide); "
            "field width missing"
        )
    if series.image_region is None:
        # The field height covers every row: the data zone, if shown, was drawn over the scan.
        zone = _drawn_data_zone(ctx)
        if zone is not None:
            series.image_region = (0, zone, 0, ctx.width)
            series.warnings.append(
                f"data bar: the bottom {ctx.height - zone} rows are the SmartSEM data zone"
            )
    if tagged is not None and px is not None and abs(tagged - px) > 0.01 * px:
        series.warnings.append(
            f"vendor pixel size {tagged:.4g} m refers to a different scan resolution than the "
            f"stored {ctx.width} px; using field width / width = {px:.4g} m"
        )
    series.pixel_size = PixelSize(x=px, y=py)


# Frames larger than this are not read to look for a drawn data zone (SmartSEM frames are at
# most a few tens of megabytes; a bigger one is not a SmartSEM screen capture).
_DATA_ZONE_SCAN_BYTES = 256 * 1024 * 1024


def _drawn_data_zone(ctx: TiffContext) -> int | None:
    """The first row of a data zone SmartSEM drew over the bottom of the scan, or None.

    SmartSEM frames its data zone with a one-pixel line in one colour across the whole width,
    and fills it with a flat panel colour behind the text: a band, in the bottom quarter, of rows
    most of whose pixels share one value, under a full-width line. A scanned image has no such
    rows (its grey levels vary from pixel to pixel), so nothing is cut from a frame without one.
    """
    import numpy as np

    page = ctx.page
    if ctx.series.axes not in ("YX", "yx") or getattr(page, "samplesperpixel", 1) != 1:
        return None
    if int(page.shape[0]) * int(page.shape[1]) * page.dtype.itemsize > _DATA_ZONE_SCAN_BYTES:
        return None
    try:
        pixels = np.asarray(page.asarray())
    except Exception:  # unreadable pixels fail the conversion later, with its own message
        return None
    height = pixels.shape[0]
    flat = np.zeros(height, dtype=bool)
    full_line = np.zeros(height, dtype=bool)
    colour = np.zeros(height, dtype=pixels.dtype)
    for row in range(height * 3 // 4, height):
        values, counts = np.unique(pixels[row], return_counts=True)
        share = counts.max() / pixels.shape[1]
        colour[row] = values[counts.argmax()]
        flat[row] = share >= 0.6
        full_line[row] = share >= 0.99
    # The zone's top line: the highest full-width line in the bottom quarter, in another colour
    # than the flat panel rows under it down to (nearly) the bottom of the frame, which carry
    # text (not every row of the panel is one colour).
    for top in range(height * 3 // 4, height - 4):
        if not full_line[top] or colour[top] == colour[top + 1]:
            continue
        below = slice(top + 1, height)
        if (
            flat[below].mean() >= 0.9
            and flat[top + 1 : top + 4].all()
            and not full_line[below].all()
        ):
            return top
    return None


def _xml_to_dict(element: ElementTree.Element, depth: int = 0) -> Any:
    children = list(element)
    if not children or depth > 30:
        return (element.text or "").strip()
    out: dict[str, Any] = {}
    for child in children:
        tag = child.tag.split("}")[-1]
        value = _xml_to_dict(child, depth + 1)
        if tag in out:
            if not isinstance(out[tag], list):
                out[tag] = [out[tag]]
            out[tag].append(value)
        else:
            out[tag] = value
    return out


def parse_xml(text: str) -> ElementTree.Element | None:
    # Documents with a DTD are refused: entity expansion is how XML bombs work.
    if "<!DOCTYPE" in text[:4096] or "<!ENTITY" in text:
        return None
    try:
        return ElementTree.fromstring(text.strip("\x00 \r\n\t"))  # noqa: S314 - DTDs refused above
    except ElementTree.ParseError:
        return None


def jeol_sightx(ctx: TiffContext, xml_text: str) -> bool:
    """JEOL SightX TEM TIFF: a <TemReporter> XML document in ImageDescription."""
    root = parse_xml(xml_text)
    if root is None or root.tag != "TemReporter":
        return False
    meta = _xml_to_dict(root)
    series, acq = ctx.series, ctx.series.acquisition
    measurement = meta.pop("Measurement", None)
    series.vendor["jeol"] = jsonable(meta)
    if measurement is not None:
        series.vendor["jeol"]["Measurement"] = "<annotation drawing objects omitted>"
    acq.vendor = text_or_none(meta.get("Manufacturer")) or "JEOL"
    acq.instrument = text_or_none(meta.get("Instruments")) or text_or_none(ctx.tag("Model"))
    acq.operator = text_or_none(meta.get("Operator"))
    stamp = text_or_none(meta.get("DateTime"))
    acq.acquired_at = to_utc(parse_datetime(stamp, ())) if stamp else None
    eos = text_or_none(dig(meta, "Eos", "EosMode")) or ""
    acq.modality = "STEM" if eos == "eosASID" else "TEM"
    acq.accelerating_voltage = positive(as_float(dig(meta, "ElectronGun", "AccelerationVoltage")))
    acq.tilt_angle_deg = as_float(dig(meta, "GonioStage", "StagePosition", "TX"))
    # SpotSize is a 0-based index; SpotSizeString is the spot number the operator selected.
    acq.spot_size = positive(as_float(dig(meta, "IlluminationSystem", "SpotSizeString")))
    forming = meta.get("ImageFormingSystem") or {}
    mode = text_or_none(dig(forming, "ModeString")) or ""
    selector = as_float(dig(forming, "SelectorValue"))
    # The mode summary SightX shows as the image title, e.g. "TEM, BrightField, MAG1, X150k".
    field = text_or_none(dig(meta, "IlluminationSystem", "ImageField")) or ""
    forming_mode = (
        text_or_none(
            dig(forming, "ScanningImageFormingMode" if eos == "eosASID" else "ImageFormingMode")
        )
        or ""
    )
    title = [
        acq.modality,
        field.removeprefix("mode"),
        forming_mode.removeprefix("mode"),
        text_or_none(dig(forming, "SelectorString")) or "",
    ]
    series.name = ", ".join(p for p in title if p) or series.name
    detector = text_or_none(meta.get("ImageSourceDetector"))
    acq.detector = detector
    if "camera" in (detector or "").lower():
        exposure = text_or_none(dig(meta, "JemBaumerCamera", "Parameter", "ExposureTimeString"))
        acq.exposure_time = positive(parse_quantity(exposure, TIME_UNITS))
    if mode == "MAG" and selector:
        acq.magnification = selector
        # SightX writes the resolution of the image at the recording plane; dividing by the
        # magnification gives the specimen pixel size.
        plane = resolution_pixel_size(ctx, allow_inch=True)
        if plane.x is not None and plane.y is not None:
            series.pixel_size = PixelSize(x=plane.x / selector, y=plane.y / selector)
    elif mode == "DIFF" and selector:
        unit = (text_or_none(dig(forming, "SelectorUnitString")) or "").lower()
        factor = {"mm": 1e-3, "cm": 1e-2, "m": 1.0}.get(unit)
        acq.camera_length = selector * factor if factor else None
        series.pixel_size = PixelSize()
        series.warnings.append("diffraction pattern: calibration is in reciprocal space")
    return True


def olympus_sis(ctx: TiffContext, meta: Mapping[str, Any]) -> None:
    """Olympus / EMSIS Soft Imaging Solutions (tag 33560, iTEM, Quemesa, Morada cameras)."""
    series, acq = ctx.series, ctx.series.acquisition
    series.vendor["olympus_sis"] = jsonable(meta)
    acq.vendor = text_or_none(ctx.tag("Make")) or "Olympus Soft Imaging Solutions"
    acq.instrument = text_or_none(meta.get("cameraname")) or text_or_none(ctx.tag("Model"))
    acq.magnification = positive(as_float(meta.get("magnification")))
    stamp = meta.get("datetime")
    if stamp is not None and hasattr(stamp, "year"):
        acq.acquired_at = stamp
    series.pixel_size = PixelSize(
        x=positive(as_float(meta.get("pixelsizex"))), y=positive(as_float(meta.get("pixelsizey")))
    )


def tvips(ctx: TiffContext, meta: Mapping[str, Any]) -> None:
    """TVIPS EM-MENU camera header (tag 37706)."""
    series, acq = ctx.series, ctx.series.acquisition
    series.vendor["tvips"] = jsonable(meta)
    acq.vendor = "TVIPS"
    acq.modality = "TEM"
    acq.detector = text_or_none(meta.get("CameraType"))
    acq.instrument = text_or_none(meta.get("TemType"))
    acq.accelerating_voltage = positive(as_float(meta.get("TemHighTension")))
    acq.magnification = positive(as_float(meta.get("TemMagnification")))
    exposure_ms = positive(as_float(meta.get("ExposureTime")))
    acq.exposure_time = exposure_ms * 1e-3 if exposure_ms else None
    px = positive(as_float(meta.get("PixelSizeX")))
    py = positive(as_float(meta.get("PixelSizeY")))
    # Version 2 headers give the specimen pixel size in nm.
    series.pixel_size = PixelSize(x=px * 1e-9 if px else None, y=py * 1e-9 if py else None)


def imagej(ctx: TiffContext, meta: Mapping[str, Any]) -> None:
    """ImageJ hyperstacks: 'unit' and 'spacing' with X/YResolution in pixels per unit."""
    series = ctx.series
    info = meta.get("Info")
    series.vendor["imagej"] = jsonable({k: v for k, v in meta.items() if k != "Info"})
    factor = length_factor(text_or_none(meta.get("unit")))
    if factor is not None:
        xres, yres = ctx.tag("XResolution"), ctx.tag("YResolution")

        def size(res: Any) -> float | None:
            if not res or not res[0] or not res[1]:
                return None
            return float(res[1]) / float(res[0]) * factor

        spacing = positive(as_float(meta.get("spacing")))
        series.pixel_size = PixelSize(
            x=size(xres),
            y=size(yres),
            z=spacing * factor if spacing and "z" in series.axes else None,
        )
    else:
        series.pixel_size = PixelSize()
    if isinstance(info, str) and "root.ImageList" in info:
        # ImageJ keeps the tag tree of the DigitalMicrograph image it opened.
        tree = dm_tags_from_imagej_info(info)
        series.vendor["imagej"]["dm_tags"] = tree
        tags = find_image_tags(tree)
        if tags is not None:
            dm, warnings = dm_acquisition(tags)
            _merge(series.acquisition, dm)
            series.warnings.extend(warnings)
    elif isinstance(info, str):
        series.vendor["imagej"]["Info"] = info[:100_000]


_GATAN_TAGS = {
    65003: "unit_x",
    65004: "unit_y",
    65006: "origin_x",
    65007: "origin_y",
    65009: "scale_x",
    65010: "scale_y",
    65012: "unit_name_x",
    65013: "unit_name_y",
}


def gatan_tiff(ctx: TiffContext) -> bool:
    """TIFF saved by DigitalMicrograph: calibration in private tags 65003-65010."""
    values = {
        name: ctx.tag(code) for code, name in _GATAN_TAGS.items() if ctx.tag(code) is not None
    }
    if "scale_x" not in values:
        return False
    series = ctx.series
    series.vendor["gatan_tiff"] = jsonable(values)
    series.acquisition.vendor = "Gatan"

    def size(axis: str) -> float | None:
        unit = text_or_none(values.get(f"unit_{axis}"))
        factor = length_factor(unit)
        scale = positive(as_float(values.get(f"scale_{axis}")))
        if factor is None and unit and scale is not None:
            series.axis_calibration[axis] = (scale, unit)
        return scale * factor if scale is not None and factor is not None else None

    series.pixel_size = PixelSize(x=size("x"), y=size("y"))
    return True


def _key_values(text: str) -> dict[str, str]:
    """The key=value lines of an INI-like vendor text block (section headers are skipped)."""
    keys: dict[str, str] = {}
    for line in text.splitlines()[:5000]:
        key, sep, value = line.partition("=")
        if sep:
            keys[key.strip()] = value.strip()
    return keys


def hitachi_sidecar(ctx: TiffContext, text: str) -> bool:
    """Hitachi SEM: a '[SemImageFile]' key=value text file beside the TIFF."""
    if "[SemImageFile]" not in text[:4096]:
        return False
    keys = _key_values(text)
    series, acq = ctx.series, ctx.series.acquisition
    series.vendor["hitachi"] = keys
    acq.vendor = "Hitachi High-Tech"
    acq.modality = "SEM"
    acq.instrument = keys.get("InstructName") or None
    acq.operator = keys.get("User") or None
    acq.accelerating_voltage = positive(
        parse_quantity(keys.get("AcceleratingVoltage"), VOLTAGE_UNITS | {"volt": 1.0})
    )
    acq.working_distance = positive(parse_quantity(keys.get("WorkingDistance"), LENGTH_UNITS))
    acq.magnification = positive(as_float(keys.get("Magnification")))
    acq.beam_current = positive(parse_quantity(keys.get("EmissionCurrent"), CURRENT_UNITS))
    acq.detector = keys.get("SignalName") or None
    date, time = keys.get("Date"), keys.get("Time")
    if date and time:
        acq.acquired_at = parse_datetime(
            f"{date} {time}", ("%Y/%m/%d %H:%M:%S", "%d/%m/%Y %H:%M:%S")
        )
    # PixelSize is in nm per pixel of the stored DataSize.
    px = positive(as_float(keys.get("PixelSize")))
    size = keys.get("DataSize", "")
    match = re.match(r"^\s*(\d+)\s*x\s*(\d+)", size)
    if px is not None:
        if match and int(match.group(1)) != ctx.width:
            px = px * int(match.group(1)) / ctx.width
            series.warnings.append("Hitachi pixel size refers to a different image width; rescaled")
        series.pixel_size = PixelSize(x=px * 1e-9, y=px * 1e-9)
    return True


def tescan(ctx: TiffContext, text: str) -> bool:
    """Tescan SEM: an INI text block ('[MAIN]' with PixelSizeX, HV, WD...) in tag 50431."""
    if "[MAIN]" not in text[:4096]:
        return False
    keys = _key_values(text)
    series, acq = ctx.series, ctx.series.acquisition
    series.vendor["tescan"] = keys
    acq.vendor = "Tescan"
    acq.modality = "SEM"
    acq.instrument = keys.get("Device") or None
    acq.operator = keys.get("UserName") or None
    acq.accelerating_voltage = positive(as_float(keys.get("HV")))
    acq.working_distance = positive(as_float(keys.get("WD")))
    acq.magnification = positive(as_float(keys.get("Magnification")))
    acq.beam_current = positive(as_float(keys.get("PredictedBeamCurrent")))
    acq.dwell_time = positive(as_float(keys.get("DwellTime")))
    acq.detector = keys.get("Detector") or keys.get("Detector0") or None
    tilt = as_float(keys.get("StageTilt"))
    acq.tilt_angle_deg = tilt
    date, time = keys.get("Date"), keys.get("Time")
    if date and time:
        acq.acquired_at = parse_datetime(f"{date} {time}", ("%Y-%m-%d %H:%M:%S",))
    px, py = positive(as_float(keys.get("PixelSizeX"))), positive(as_float(keys.get("PixelSizeY")))
    if px is not None:
        series.pixel_size = PixelSize(x=px, y=py or px)
    return True


def _merge(target: Acquisition, source: Acquisition) -> None:
    """Copy every value source knows into target (source is more specific)."""
    for name in target.__dataclass_fields__:
        value = getattr(source, name)
        if value not in (None, []):
            setattr(target, name, value)
