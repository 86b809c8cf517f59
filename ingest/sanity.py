"""Sanity checks on a read series, reported as warnings on the image (the user's ingest report)."""

from __future__ import annotations

from allmicro_data.ingest.readers.base import Series

# Plausible pixel sizes in metres per modality: outside these a calibration is wrong (a unit
# slip, a print resolution taken for a specimen one) rather than unusual.
PLAUSIBLE_PIXEL_SIZE: dict[str, tuple[float, float]] = {
    "SEM": (1e-11, 1e-3),
    "FIB": (1e-11, 1e-3),
    "TEM": (1e-13, 1e-5),
    "STEM": (1e-13, 1e-5),
    "optical": (1e-8, 1e-2),
}
ANY_MODALITY = (1e-14, 1e-1)
XY_TOLERANCE = 0.01


def sanity_warnings(series: Series) -> list[str]:
    """Warnings the series does not carry yet: calibration missing, absurd or anisotropic;
    a time stamp without zone. Data bars and foreign scan resolutions are found by the readers,
    which know where the vendor hides them."""
    if series.preview:
        return []
    found: list[str] = []
    existing = " ".join(series.warnings).lower()
    spatial = "y" in series.axes and "x" in series.axes
    px, py = series.pixel_size.x, series.pixel_size.y
    reciprocal = any("1/" in u or "^-1" in u for _, u in series.axis_calibration.values())
    if spatial and series.viewable and not reciprocal:
        if px is None or py is None:
            found.append("pixel size missing: the file carries no spatial calibration")
        else:
            modality = series.acquisition.modality or ""
            low, high = PLAUSIBLE_PIXEL_SIZE.get(modality, ANY_MODALITY)
            for axis, value in (("x", px), ("y", py)):
                if value <= 0:
                    found.append(f"pixel size {axis} is {value:g} m: not a calibration")
                elif not low <= value <= high:
                    found.append(
                        f"pixel size {axis} = {value:.3g} m is implausible for "
                        f"{modality or 'any microscope'} (expected {low:g}-{high:g} m)"
                    )
            if px > 0 and py > 0 and abs(px - py) > XY_TOLERANCE * max(px, py):
                found.append(f"x and y pixel sizes disagree: {px:.4g} m vs {py:.4g} m")
    stamp = series.acquisition.acquired_at
    if stamp is not None and stamp.tzinfo is None and "time zone" not in existing:
        found.append("acquisition time has no time zone: it is the instrument PC's local time")
    return [w for w in found if w.lower() not in existing]
