"""Hamamatsu HPD-TA streak TIFFs: the vendor sections kept, the non-linear time axis and the wavelength axis recorded per pixel."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tifffile

from allmicro_data.ingest.readers import open_image_file
from tests.ingest.conftest import SAMPLES

FOCUS = SAMPLES / "hamamatsu" / "test_hamamatsu_streak_FOCUS.tif"


def _streak_tiff(path: Path, times: np.ndarray, wavelengths: np.ndarray) -> None:
    """An HPD-TA-shaped streak-mode TIFF: its axis tables appended after the image, their
    offsets written into the description afterwards (fixed width, as HPD-TA writes them)."""
    rows, cols = len(times), len(wavelengths)
    placeholder = "#{x:07d},{n:04d}"
    description = (
        '[Application],Date="10/02/2022",Time="13:00:03.484",Software="HPD-TA"\r\n'
        '[Camera],CameraName="C13440-20CU"\r\n'
        "[Acquisition],ExposureTime=20 ms\r\n"
        '[Streak camera],DeviceName="C10910",Time Range="4",Mode="Operate"\r\n'
        '[Spectrograph],UseDevice=-1,DeviceName="Insight-H"\r\n'
        '[Scaling],ScalingXType=2,ScalingXUnit="nm",ScalingXScalingFile="XTABLE",'
        'ScalingYType=2,ScalingYUnit="ns",ScalingYScalingFile="YTABLE"'
    )
    width = len(placeholder.format(x=0, n=0))
    description = description.replace("XTABLE", "X" * width).replace("YTABLE", "Y" * width)
    data = np.arange(rows * cols, dtype=np.uint16).reshape(rows, cols)
    artist = (315, "s", 0, "Copyright Hamamatsu GmbH", True)
    tifffile.imwrite(path, data, description=description, extratags=[artist])
    raw = bytearray(path.read_bytes())
    x_at = len(raw)
    raw += wavelengths.astype("<f4").tobytes()
    y_at = len(raw)
    raw += times.astype("<f4").tobytes()
    for marker, offset, count in ((b"X", x_at, cols), (b"Y", y_at, rows)):
        start = raw.index(marker * width)
        raw[start : start + width] = placeholder.format(x=offset, n=count).encode()
    path.write_bytes(bytes(raw))


def test_streak_mode_keeps_its_non_linear_time_axis(tmp_path: Path) -> None:
    times = np.array([0.0, 0.1, 0.25, 0.45, 0.7, 1.0], dtype=np.float32)  # sweep is not linear
    wavelengths = np.linspace(500.0, 510.0, 8, dtype=np.float32)
    path = tmp_path / "streak.tif"
    _streak_tiff(path, times, wavelengths)
    with open_image_file(path) as image_file:
        series = image_file.series[0]
        axes = series.vendor["streak_axes"]
        assert axes["y"]["quantity"] == "time" and axes["y"]["unit"] == "ns"
        assert axes["y"]["uniform"] is False
        np.testing.assert_allclose(axes["y"]["values"], times)
        assert axes["x"]["quantity"] == "wavelength" and axes["x"]["uniform"] is True
        np.testing.assert_allclose(axes["x"]["values"], wavelengths)
        assert any("non-linear" in w and "time" in w for w in series.warnings)
        # Neither axis is a length on the specimen: no pixel size is made of them.
        assert series.pixel_size.x is None and series.pixel_size.y is None
        acq = series.acquisition
        assert acq.exposure_time == 0.02 and acq.instrument == "C10910"
        assert acq.operator is None  # the Artist tag is the software's copyright line
        assert series.vendor["hamamatsu"]["Streak camera"]["Time Range"] == "4"


def test_focus_mode_sample_says_its_time_axis_is_uncalibrated() -> None:
    with open_image_file(FOCUS) as image_file:
        series = image_file.series[0]
        axes = series.vendor["streak_axes"]
        assert axes["y"]["calibrated"] is False and axes["y"]["mode"] == "Focus"
        assert axes["x"]["first"] == np.float32(231.09093) and len(axes["x"]["values"]) == 672
        assert any("Focus mode" in w for w in series.warnings)
        assert series.acquisition.detector == "C13440-20CU"
