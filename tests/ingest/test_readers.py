"""Reader behaviour beyond the corpus: sidecars, pyramids, lazy reads, OME-XML with TIFFs, sanity warnings."""

from __future__ import annotations

import gzip
import sys
from pathlib import Path
from typing import Any

import mrcfile
import numpy as np
import pytest
import tifffile
from mrcfile.dtypes import get_ext_header_dtype

from allmicro_data.ingest.readers import open_image_file, sniff
from allmicro_data.ingest.readers.mrc import MrcReader
from allmicro_data.ingest.readers.tiff import TiffReader
from tests.ingest.conftest import SAMPLES


def test_hitachi_sidecar_calibrates_the_tiff(tmp_path: Path) -> None:
    tif = tmp_path / "sem01.tif"
    tifffile.imwrite(tif, np.zeros((96, 128), dtype=np.uint8))
    txt = tmp_path / "sem01.txt"
    txt.write_text(
        "[SemImageFile]\nInstructName=SU8230\nDate=2023/05/14\nTime=15:22:11\n"
        "DataSize=128x96\nPixelSize=39.6875\nSignalName=SE(U)\n"
        "AcceleratingVoltage=5000 Volt\nMagnification=1000\nWorkingDistance=8000 um\n"
    )
    with open_image_file(tif, [txt]) as image_file:
        series = image_file.series[0]
        assert series.pixel_size.x is not None
        assert np.isclose(series.pixel_size.x, 39.6875e-9)
        acq = series.acquisition
        assert acq.instrument == "SU8230" and acq.accelerating_voltage == 5000.0
        assert acq.working_distance is not None and np.isclose(acq.working_distance, 8e-3)
        assert acq.detector == "SE(U)" and acq.magnification == 1000.0
    # Without its sidecar the same TIFF has no calibration and says so.
    with open_image_file(tif) as image_file:
        assert image_file.series[0].pixel_size.x is None
        assert any("pixel size missing" in w for w in image_file.series[0].warnings)


def test_nominal_dpi_is_not_a_pixel_size_but_centimetre_resolution_is(tmp_path: Path) -> None:
    dpi = tmp_path / "dpi.tif"
    tifffile.imwrite(dpi, np.zeros((8, 8), np.uint8), resolution=(72, 72), resolutionunit=2)
    cm = tmp_path / "cm.tif"
    tifffile.imwrite(cm, np.zeros((8, 8), np.uint8), resolution=(1e5, 1e5), resolutionunit=3)
    with open_image_file(dpi) as image_file:
        assert image_file.series[0].pixel_size.x is None
    with open_image_file(cm) as image_file:
        assert np.isclose(image_file.series[0].pixel_size.x or 0, 1e-7)


def test_pyramidal_ome_tiff_exposes_its_levels_and_reads_regions_lazily(tmp_path: Path) -> None:
    path = tmp_path / "pyramid.ome.tif"
    data = np.arange(1024 * 1024, dtype=np.uint16).reshape(1024, 1024)
    with tifffile.TiffWriter(path) as tif:
        options = {"tile": (256, 256), "metadata": {"PhysicalSizeX": 0.5, "PhysicalSizeY": 0.5}}
        tif.write(data, subifds=1, **options)  # type: ignore[arg-type]
        tif.write(data[::2, ::2], subfiletype=1, tile=(256, 256))
    with open_image_file(path) as image_file:
        assert image_file.format == "OME-TIFF"
        series = image_file.series[0]
        assert np.isclose(series.pixel_size.x or 0, 0.5e-6)
        levels = series.levels()
        assert [lv.shape for lv in levels] == [(512, 512)]
        block = series.read((slice(300, 310), slice(700, 705)))
        assert np.array_equal(block, data[300:310, 700:705])
        assert np.array_equal(levels[0].read((slice(0, 4), slice(0, 4))), data[:8:2, :8:2])
        assert series.ome_xml() is not None


def test_ome_xml_companion_reads_pixels_from_supplied_tiffs(tmp_path: Path) -> None:
    planes = [np.full((4, 6), v, dtype=np.uint8) for v in (10, 20)]
    for index, plane in enumerate(planes):
        tifffile.imwrite(tmp_path / f"cell_C{index}.tif", plane)
    xml = tmp_path / "cell.ome.xml"
    tiffdata = "".join(
        f'<TiffData FirstC="{i}" IFD="0" PlaneCount="1"><UUID FileName="cell_C{i}.tif">'
        f"urn:uuid:00000000-0000-0000-0000-00000000000{i}</UUID></TiffData>"
        for i in range(2)
    )
    xml.write_text(
        '<?xml version="1.0" encoding="UTF-8"?>'
        '<OME xmlns="http://www.openmicroscopy.org/Schemas/OME/2016-06">'
        '<Image ID="Image:0" Name="cell"><Pixels ID="Pixels:0" DimensionOrder="XYCZT" '
        'Type="uint8" SizeX="6" SizeY="4" SizeZ="1" SizeC="2" SizeT="1" '
        'PhysicalSizeX="0.1" PhysicalSizeY="0.1">'
        '<Channel ID="Channel:0:0" Name="DAPI" EmissionWavelength="461"/>'
        '<Channel ID="Channel:0:1" Name="GFP"/>'
        f"{tiffdata}</Pixels></Image></OME>"
    )
    companions = [tmp_path / "cell_C0.tif", tmp_path / "cell_C1.tif"]
    with open_image_file(xml, companions) as image_file:
        series = image_file.series[0]
        assert series.axes == "cyx" and series.viewable
        assert [c.name for c in series.acquisition.channels] == ["DAPI", "GFP"]
        assert np.isclose(series.acquisition.channels[0].emission_wavelength or 0, 461e-9)
        assert series.read()[:, 0, 0].tolist() == [10, 20]
    with open_image_file(xml) as image_file:
        assert not image_file.series[0].viewable
        assert "not supplied" in " ".join(image_file.series[0].warnings)


def test_mrc_stack_with_serialem_mdoc_and_gzip(tmp_path: Path) -> None:
    stack = tmp_path / "tilt.st"
    with mrcfile.new(stack) as mrc:
        mrc.set_data(np.arange(3 * 8 * 8, dtype=np.int16).reshape(3, 8, 8))
        mrc.set_image_stack()
    mdoc = tmp_path / "tilt.st.mdoc"
    mdoc.write_text(
        "PixelSpacing = 2.5\nImageFile = tilt.st\n\n[ZValue = 0]\nTiltAngle = -60.0\n"
        "Magnification = 29000\nExposureTime = 0.5\nVoltage = 300\n"
        "DateTime = 21-Oct-24  14:36:50\nExposureDose = 2.5\nSpotSize = 7\n"
    )
    packed = tmp_path / "tilt.st.gz"
    packed.write_bytes(gzip.compress(stack.read_bytes()))
    for path in (stack, packed):
        assert isinstance(sniff(path), MrcReader)
        with open_image_file(path, [mdoc]) as image_file:
            series = image_file.series[0]
            assert series.axes == "tyx" and series.shape == (3, 8, 8)
            acq = series.acquisition
            assert acq.accelerating_voltage == 300e3 and acq.tilt_angle_deg == -60.0
            assert acq.magnification == 29000 and acq.exposure_time == 0.5
            assert acq.acquired_at is not None and acq.acquired_at.year == 2024
            # SerialEM's e⁻/Å², stored in SI (e⁻/m²).
            assert acq.electron_dose == pytest.approx(2.5e20) and acq.spot_size == 7
            assert series.read((slice(2, 3), slice(0, 2), slice(0, 2))).tolist() == [
                [[128, 129], [136, 137]]
            ]


def _resident_kib(path: Path) -> int:
    """KiB of path's pages mapped into this process and resident (Linux smaps)."""
    total, inside = 0, False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        if "-" in line.split(" ", 1)[0]:
            inside = line.endswith(str(path))
        elif inside and line.startswith("Rss:"):
            total += int(line.split()[1])
    return total


def test_mrc_volumes_read_with_positioned_reads_equal_mrcfile(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    volume = rng.standard_normal((16, 256, 256)).astype(np.float32)  # 4 MiB
    native = tmp_path / "tomo.rec"
    with mrcfile.new(native) as mrc:
        mrc.set_data(volume)
        mrc.set_extended_header(np.zeros(100, dtype=[("x", "u1")]))  # data starts later
    swapped = tmp_path / "swapped.mrc"
    with mrcfile.new(swapped) as mrc:
        mrc.set_data(volume.astype(">f4"))  # other byte order: read through the memmap
    region = (slice(1, 5), slice(3, 17), slice(0, 256))
    resident = {}
    for path in (native, swapped):
        with open_image_file(path) as image_file:
            series = image_file.series[0]
            assert series.is_volume and series.shape == volume.shape
            assert np.array_equal(series.read(), volume)
            out = np.empty((4, 14, 256), np.float32)
            series.read_into(region, out)  # type: ignore[attr-defined]
            assert np.array_equal(out, volume[region])
            if sys.platform.startswith("linux"):
                resident[path] = _resident_kib(path)
    if resident:
        # Read through the memmap, the pixels stay resident in the process; read with pread
        # into the caller's buffers (what the pyramid writer does), they do not.
        assert resident[swapped] >= 4096
        assert resident[native] < 1024  # the header, and at most fault-around neighbours


def test_sniffing_ignores_the_extension(tmp_path: Path) -> None:
    disguised = tmp_path / "image.mrc"
    tifffile.imwrite(disguised, np.zeros((4, 4), np.uint8))
    assert isinstance(sniff(disguised), TiffReader)


def test_anisotropic_and_absurd_pixel_sizes_are_reported(tmp_path: Path) -> None:
    path = tmp_path / "odd.tif"
    tifffile.imwrite(path, np.zeros((8, 8), np.uint8), resolution=(1e5, 2e5), resolutionunit=3)
    with open_image_file(path) as image_file:
        warnings = " ".join(image_file.series[0].warnings)
        assert "disagree" in warnings


def test_fei_mrc_extended_header_gives_dose_and_spot_size(tmp_path: Path) -> None:
    path = tmp_path / "epu.mrc"
    header = np.zeros(1, dtype=get_ext_header_dtype(b"FEI1"))
    header["Metadata size"] = header.dtype.itemsize
    header["Dose"] = 2.5e20  # the EPU manual's unit: e⁻/m²
    header["Spot index"] = 5
    with mrcfile.new(path) as mrc:
        mrc.set_data(np.zeros((8, 8), np.int16))
        mrc.header.exttyp = b"FEI1"
        mrc.set_extended_header(header)
    with open_image_file(path) as image_file:
        acq = image_file.series[0].acquisition
        assert acq.electron_dose == 2.5e20 and acq.spot_size == 5


@pytest.mark.parametrize(
    ("sample", "spot"),
    [
        ("fei/FEI-Helios-Ebeam-16bits.tif", 1.0),  # [Beam] Spot
        ("velox/fei_example_tem_stack.emd", 3.0),  # Optics/SpotIndex
        ("jeol/JEOL-SightX-TEM-mag-dummy.tif", 1.0),  # IlluminationSystem/SpotSizeString
    ],
)
def test_spot_size_is_read_from_vendor_metadata(sample: str, spot: float) -> None:
    with open_image_file(SAMPLES / sample) as image_file:
        acq = image_file.series[image_file.primary_series].acquisition
        # None of these samples states a dose: it stays unknown, never 0.
        assert acq.spot_size == spot and acq.electron_dose is None


def _zeiss_sem_text() -> str:
    """The CZ_SEM block (tag 34118) of the SmartSEM sample, as SmartSEM wrote it."""
    with tifffile.TiffFile(SAMPLES / "zeiss-sem" / "test_tiff_Zeiss_SEM_512pix.tif") as tiff:
        tag = tiff.pages[0].tags[34118]
        tiff.filehandle.seek(tag.valueoffset)
        return tiff.filehandle.read(tag.count).decode("latin-1").rstrip("\x00")


@pytest.mark.parametrize(
    ("mag_line", "magnification"),
    [("Mag =  50.00 K X", 50_000.0), ("Mag =  500 X", 500.0), ("Mag = 1.50 KX", 1_500.0)],
)
def test_zeiss_sem_magnification_and_dwell_time_are_read_in_every_spelling(
    tmp_path: Path, mag_line: str, magnification: float
) -> None:
    text = _zeiss_sem_text()
    assert "Mag =  50.00 K X" in text
    text = text.replace("Mag =  50.00 K X", mag_line) + "DP_DWELL_TIME\r\nDwell Time = 100 ns\r\n"
    tif = tmp_path / "smartsem.tif"
    tifffile.imwrite(
        tif, np.zeros((64, 64), np.uint8), extratags=[(34118, "s", 0, text.encode("latin-1"), True)]
    )
    with open_image_file(tif) as image_file:
        acq = image_file.series[0].acquisition
        assert acq.vendor == "Zeiss"
        assert acq.magnification == pytest.approx(magnification)
        assert acq.dwell_time == pytest.approx(100e-9)


@pytest.mark.parametrize(
    "calibration",
    [
        "[NavCam]\r\nPixelWidth=0.00025\r\nPixelHeight=0.00025\r\n",
        "[Scan]\r\nPixelWidth=0\r\nHorFieldsize=0.1\r\nVerFieldsize=0.075\r\n",
    ],
)
def test_thermo_navigation_camera_keeps_its_large_pixel_size(
    tmp_path: Path, calibration: str
) -> None:
    header = (
        "[User]\r\nDate=03/14/2025\r\nTime=10:11:12 AM\r\n[System]\r\nSystemType=Helios 5\r\n"
        "[Beam]\r\nBeam=NavCam\r\n[Image]\r\nResolutionX=400\r\nResolutionY=300\r\n" + calibration
    )
    tif = tmp_path / "navcam.tif"
    tifffile.imwrite(tif, np.zeros((300, 400), np.uint8), extratags=[(34682, "s", 0, header, True)])
    with open_image_file(tif) as image_file:
        series = image_file.series[0]
        assert series.pixel_size.x == pytest.approx(250e-6)
        assert series.pixel_size.y == pytest.approx(250e-6)
        assert not any("no spatial calibration" in w for w in series.warnings)


def test_czi_colour_camera_image_reads_as_rgb_in_red_green_blue_order(tmp_path: Path) -> None:
    from pylibCZIrw import czi

    path = tmp_path / "brightfield.czi"
    rgb = np.zeros((32, 48, 3), np.uint8)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 200, 100, 30  # a brownish stain
    with czi.create_czi(str(path), exist_ok=True) as writer:
        writer.write(np.ascontiguousarray(rgb[..., ::-1]), plane={"C": 0})  # libCZI is BGR
        writer.write_metadata(scale_x=0.5e-6, scale_y=0.5e-6)
    with open_image_file(path) as image_file:
        (series,) = image_file.series
        assert series.rgb and series.axes == "cyx" and series.shape == (3, 32, 48)
        assert series.pixel_size.x == pytest.approx(0.5e-6)
        np.testing.assert_array_equal(series.read(), np.moveaxis(rgb, -1, 0))
        np.testing.assert_array_equal(
            series.read((slice(1, 3), slice(0, 2), slice(5, 9))),
            np.moveaxis(rgb, -1, 0)[1:3, 0:2, 5:9],
        )


@pytest.mark.parametrize(
    ("layout", "pixels_of"),
    [
        ("tiled", lambda rng: rng.integers(0, 65535, (700, 900), dtype=np.uint16)),
        ("tiled zlib", lambda rng: rng.integers(0, 4000, (700, 900), dtype=np.uint16)),
        ("tiled lzw", lambda rng: rng.integers(0, 255, (300, 500), dtype=np.uint8)),
        ("strips", lambda rng: rng.integers(0, 65535, (701, 333), dtype=np.uint16)),
        ("strips zlib", lambda rng: rng.standard_normal((257, 190)).astype(np.float32)),
        ("big-endian tiled", lambda rng: rng.integers(0, 65535, (600, 520), dtype=np.uint16)),
        ("rgb tiled", lambda rng: rng.integers(0, 255, (300, 420, 3), dtype=np.uint8)),
        ("rgb strips", lambda rng: rng.integers(0, 255, (299, 201, 3), dtype=np.uint8)),
    ],
)
def test_single_page_tiffs_read_tile_by_tile_equal_tifffile(
    tmp_path: Path, layout: str, pixels_of: Any
) -> None:
    """A one-page TIFF is read by decoding only the tiles or strips a region touches, into the
    caller's array (the pyramid writer's bands): the same pixels as tifffile reads whole."""
    pixels = pixels_of(np.random.default_rng(len(layout)))
    path = tmp_path / "image.tif"
    options: dict[str, Any] = {}
    if "tiled" in layout:
        options["tile"] = (256, 256) if pixels.shape[0] > 300 else (128, 256)
    else:
        options["rowsperstrip"] = 37
    if "zlib" in layout:
        options.update(compression="zlib", predictor=True)
    if "lzw" in layout:
        options["compression"] = "lzw"
    if "big-endian" in layout:
        options["byteorder"] = ">"
    if "rgb" in layout:
        options["photometric"] = "rgb"
    tifffile.imwrite(path, pixels, **options)
    with open_image_file(path) as image_file:
        series = image_file.series[0]
        ours = np.moveaxis(pixels, -1, 0) if "rgb" in layout else pixels
        assert series._segment_page is not None  # type: ignore[attr-defined]
        assert series.shape == ours.shape
        assert np.array_equal(series.read(), ours)
        height, width = ours.shape[-2:]
        regions = [
            (slice(0, 1), slice(0, width)),  # one row
            (slice(100, 299), slice(17, width)),  # across segment edges
            (slice(height - 5, height), slice(width - 3, width)),  # the far corner
        ]
        for rows, cols in regions:
            region = ((slice(1, 3),) if "rgb" in layout else ()) + (rows, cols)
            expected = ours[region]
            out = np.full(expected.shape, 7, dtype=series.dtype)
            series.read_into(region, out)  # type: ignore[attr-defined]
            assert np.array_equal(out, expected), region
            assert np.array_equal(series.read(region), expected)


def test_tiffs_of_several_pages_are_still_read_as_regions(tmp_path: Path) -> None:
    stack = np.arange(3 * 40 * 50, dtype=np.uint16).reshape(3, 40, 50)
    path = tmp_path / "stack.tif"
    tifffile.imwrite(path, stack, tile=(16, 16), photometric="minisblack")
    with open_image_file(path) as image_file:
        series = image_file.series[0]
        assert series._segment_page is None  # type: ignore[attr-defined]
        region = (slice(1, 3), slice(5, 33), slice(7, 50))
        out = np.zeros((2, 28, 43), np.uint16)
        series.read_into(region, out)  # type: ignore[attr-defined]
        assert np.array_equal(out, stack[region])
