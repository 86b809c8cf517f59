"""SerialEM tilt series: an MRC stack with its .mdoc keeps each image's tilt, defocus, magnification and dose."""

from __future__ import annotations

from pathlib import Path

import mrcfile
import numpy as np
import pytest

from allmicro_data.ingest.readers import open_image_file

# As SerialEM 4 writes it: global keys, title sections, then one [ZValue = n] per image.
MDOC = """PixelSpacing = 2.7
Voltage = 300
ImageFile = tilt.st
ImageSize = 8 8
DataMode = 1

[T = SerialEM: Digitized on EMBL Krios                     21-Oct-24  14:30:12    ]

[T =     Tilt axis angle = 85.3, binning = 1  spot = 7  camera = 0]

[ZValue = 0]
TiltAngle = 0.0
StagePosition = 12.5 -3.2
Magnification = 64000
Intensity = 0.123
ExposureDose = 3.1
PixelSpacing = 2.7
SpotSize = 7
Defocus = -2.51
TargetDefocus = -2.5
ExposureTime = 0.8
DateTime = 21-Oct-24  14:36:50

[ZValue = 1]
TiltAngle = 3.0
StagePosition = 12.5 -3.2
Magnification = 64000
ExposureDose = 3.0
PixelSpacing = 2.7
SpotSize = 7
Defocus = -2.62
TargetDefocus = -2.5
ExposureTime = 0.8
DateTime = 21-Oct-24  14:37:20

[ZValue = 2]
TiltAngle = -3.0
StagePosition = 12.5 -3.2
Magnification = 64000
ExposureDose = 2.9
PixelSpacing = 2.7
SpotSize = 7
Defocus = -2.44
TargetDefocus = -2.5
ExposureTime = 0.8
DateTime = 21-Oct-24  14:37:51
"""


def test_tilt_series_keeps_every_images_tilt_defocus_and_dose(tmp_path: Path) -> None:
    stack = tmp_path / "tilt.st"
    with mrcfile.new(stack) as mrc:
        mrc.set_data(np.zeros((3, 8, 8), dtype=np.int16))
        mrc.set_image_stack()
    mdoc = tmp_path / "tilt.st.mdoc"
    mdoc.write_text(MDOC)
    with open_image_file(stack, [mdoc]) as image_file:
        series = image_file.series[0]
        columns = series.vendor["serialem_mdoc"]["per_section"]
        assert columns["ZValue"] == [0, 1, 2]
        assert columns["TiltAngle"] == [0.0, 3.0, -3.0]
        assert columns["Defocus"] == [-2.51, -2.62, -2.44]
        assert columns["Magnification"] == [64000, 64000, 64000]
        assert columns["ExposureDose"] == [3.1, 3.0, 2.9]
        assert columns["DateTime"][2] == "21-Oct-24  14:37:51"
        defocus = series.vendor["serialem_mdoc"]["defocus_m"]
        assert defocus["min"] == pytest.approx(-2.62e-6) and defocus["max"] == pytest.approx(
            -2.44e-6
        )
        assert any("tilt series: 3 images from -3° to 3°" in w for w in series.warnings)
        acq = series.acquisition
        assert series.pixel_size.x == pytest.approx(2.7e-10)
        assert acq.magnification == 64000 and acq.accelerating_voltage == 300e3
        assert acq.electron_dose == pytest.approx(3.1e20) and acq.tilt_angle_deg == 0.0
        assert acq.defocus == pytest.approx(-2.51e-6)  # the first image's, in metres
