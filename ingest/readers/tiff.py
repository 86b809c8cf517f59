"""TIFF family reader (tifffile): series, sub-resolutions, vendor metadata, OME-TIFF, lazy region reads."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import tifffile

from allmicro_data.ingest.readers import tiff_vendors as vendors
from allmicro_data.ingest.readers.base import (
    AXIS_ORDER,
    ImageFile,
    Reader,
    ReadError,
    Series,
)
from allmicro_data.ingest.readers.normalise import jsonable, text_or_none
from allmicro_data.ingest.readers.ome import apply_ome_image, valid_ome_xml
from allmicro_data.ingest.readers.tiff_hamamatsu import hamamatsu_streak

TIFF_MAGICS = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")

# tifffile axis letters onto ours. S (samples, e.g. RGB) and C both become channels; I and Q
# (generic image/sequence index) become z, which downsamples in y/x only by default.
_AXIS_MAP = {"T": "t", "C": "c", "S": "c", "Z": "z", "I": "z", "Q": "z", "Y": "y", "X": "x"}

# Refuse rasters whose declared size is beyond any instrument before anything is allocated:
# 10^11 pixels is a 316 000 px square, larger than the largest SEM montages.
MAX_PIXELS_PER_SERIES = 10**11

# Tags that describe the layout, not the acquisition; left out of the vendor keys.
_STRUCTURAL_TAGS = {
    254,
    256,
    257,
    258,
    259,
    262,
    273,
    277,
    278,
    279,
    284,
    320,
    322,
    323,
    324,
    325,
    338,
    339,
    347,
    530,
    532,
}
# Private tags a vendor parser below turns into structured metadata.
_PARSED_TAGS = {34118, 34682, 34680, 33560, 37706, 37708, 50838, 50839, 65027}


class TiffSeries(Series):
    def __init__(self, tiff: tifffile.TiffFile, index: int, level: int = 0) -> None:
        super().__init__()
        tseries = tiff.series[index]
        if level:
            tseries = tseries.levels[level]
        self._tseries = tseries
        self._level = level
        self.name = tseries.name or f"series {index}"
        src_axes = tseries.axes.upper()
        ours: list[str] = []
        for letter in src_axes:
            mapped = _AXIS_MAP.get(letter)
            if mapped is None:
                raise ReadError(f"unsupported TIFF axis {letter!r} in series {index}")
            if mapped in ours:
                # Two source axes onto one of ours (e.g. C and S): not representable as-is.
                raise ReadError(
                    f"TIFF series {index} has axes {src_axes!r}, which map twice to {mapped!r}"
                )
            ours.append(mapped)
        self.axes = "".join(a for a in AXIS_ORDER if a in ours)
        # Permutation from the file's axis order to ours.
        self._perm = tuple(ours.index(a) for a in self.axes)
        self.shape = tuple(int(tseries.shape[i]) for i in self._perm)
        self.dtype = np.dtype(tseries.dtype)
        self.rgb = "S" in src_axes and self.shape[self.axes.index("c")] in (3, 4)
        if int(np.prod(self.shape, dtype=np.float64)) > MAX_PIXELS_PER_SERIES:
            raise ReadError(
                f"TIFF series {index} declares {'x'.join(map(str, self.shape))} pixels, "
                "beyond any real image"
            )
        self._array: Any = None
        self._tiff = tiff
        self._index = index
        self._ome_xml: str | None = None
        self._segment_page: Any = _segment_page(tseries)

    def ome_xml(self) -> str | None:
        return self._ome_xml

    @property
    def first_page(self) -> Any:
        pages = self._tseries.pages
        return pages[0] if pages else None

    def _zarr(self) -> Any:
        if self._array is None:
            import zarr  # only for the series the segment reads do not serve

            store = self._tiff.series[self._index].aszarr(level=self._level)
            self._array = zarr.open(store, mode="r")
        return self._array

    def read(self, region: Sequence[slice] | None = None) -> np.ndarray[Any, Any]:
        ours = self.normalise_region(region)
        if self._segment_page is not None:
            out = np.empty(tuple(s.stop - s.start for s in ours), self.dtype)
            self.read_into(ours, out)
            return out
        src_region = self._source_region(ours)
        try:
            array = self._zarr()
            data = np.asarray(array[tuple(src_region)])
        except ReadError:
            raise
        except Exception as exc:
            raise ReadError(f"{self._file_name}: cannot decode TIFF pixels: {exc}") from exc
        return np.transpose(data, self._perm) if self._perm != tuple(range(len(ours))) else data

    def read_into(self, region: Sequence[slice] | None, out: np.ndarray[Any, Any]) -> None:
        """Read region into out (of the region's shape and the series' dtype).

        A series of one page is read segment by segment: only the tiles or strips the region
        touches are read from the file and decoded (by tifffile, whatever their compression)
        straight into out. The pyramid writer reads its bands so, into buffers it reuses.
        """
        ours = self.normalise_region(region)
        shape = tuple(s.stop - s.start for s in ours)
        if out.shape != shape or out.dtype != self.dtype:
            raise ValueError(f"read_into needs a {self.dtype} array of {shape}")
        page = self._segment_page
        if page is None:
            out[...] = self.read(ours)
            return
        src = self._source_region(ours)
        # out in the file's axis order (y, x and samples): the segments are copied into it.
        target = np.transpose(out, np.argsort(self._perm))
        try:
            _read_segments(page, src, target)
        except ReadError:
            raise
        except Exception as exc:
            raise ReadError(f"{self._file_name}: cannot decode TIFF pixels: {exc}") from exc

    def _source_region(self, ours: Sequence[slice]) -> list[slice]:
        src: list[slice] = [slice(None)] * len(ours)
        for our_index, src_index in enumerate(self._perm):
            src[src_index] = ours[our_index]
        return src

    @property
    def _file_name(self) -> str:
        return Path(self._tiff.filename).name

    def levels(self) -> list[Series]:
        if self._level:
            return []
        out: list[Series] = []
        for level in range(1, len(self._tiff.series[self._index].levels)):
            sub = TiffSeries(self._tiff, self._index, level)
            sub.pixel_size = self.pixel_size
            out.append(sub)
        return out


def _segment_page(tseries: Any) -> Any:
    """The page of a series that is that one page, stored as 2D tiles or strips of contiguous
    samples (what SEM, TEM and most optical TIFFs are); None for the rest (stacks, planar
    samples, volumes, subsampled YCbCr), which are read through tifffile's zarr store."""
    try:
        pages = tseries.pages
        if len(pages) != 1 or tseries.axes.upper() not in ("YX", "YXS"):
            return None
        page = pages[0]
        key = page.keyframe
        if (
            not hasattr(page, "dataoffsets")
            or key.imagedepth != 1
            or key.bitspersample % 8
            or (key.samplesperpixel > 1 and key.planarconfig != 1)
            or key.is_subsampled
            or key.dtype != tseries.dtype
            or tuple(key.shape) != tuple(tseries.shape)
            or len(page.dataoffsets) != len(page.databytecounts)
        ):
            return None
    except Exception:
        return None
    return page


def _read_segments(page: Any, src: list[slice], target: np.ndarray[Any, Any]) -> None:
    """Decode the tiles or strips of page that region src (y, x[, samples]) touches into target."""
    key = page.keyframe
    rows, cols = src[0], src[1]
    height, width = key.imagelength, key.imagewidth
    if key.is_tiled:
        seg_h, seg_w = key.tilelength, key.tilewidth
    else:
        seg_h, seg_w = min(key.rowsperstrip or height, height), width
    across = -(-width // seg_w)
    indices = [
        ty * across + tx
        for ty in range(rows.start // seg_h, -(-rows.stop // seg_h))
        for tx in range(cols.start // seg_w, -(-cols.stop // seg_w))
    ]
    offsets, counts = page.dataoffsets, page.databytecounts
    if indices and indices[-1] >= len(offsets):
        raise ReadError(f"TIFF page has {len(offsets)} segments, the region needs more")
    kwargs: dict[str, Any] = {"_fullsize": key.is_tiled}
    if key.compression in (6, 7, 34892, 33007):  # JPEG: tables kept apart from the segments
        kwargs.update(jpegtables=page.jpegtables, jpegheader=key.jpegheader)
    handle = page.parent.filehandle
    samples = src[2] if len(src) > 2 else slice(None)
    found = handle.read_segments(
        [offsets[i] for i in indices],
        [counts[i] for i in indices],
        indices=indices,
        sort=True,
        lock=handle.lock,
    )
    for data, index in found:
        decoded, position, _shape = key.decode(data, index, **kwargs)
        y0, x0 = position[2], position[3]
        # Where the segment and the region overlap, in image coordinates.
        top, bottom = max(rows.start, y0), min(rows.stop, y0 + seg_h, height)
        left, right = max(cols.start, x0), min(cols.stop, x0 + seg_w, width)
        if top >= bottom or left >= right:
            continue
        into = target[
            top - rows.start : bottom - rows.start, left - cols.start : right - cols.start
        ]
        if decoded is None:  # a segment the file does not store: tifffile's fill value
            into[...] = 0
            continue
        piece = decoded[0, top - y0 : bottom - y0, left - x0 : right - x0]
        into[...] = piece[..., samples] if len(src) > 2 else piece[..., 0]


def check_structure(tiff: tifffile.TiffFile, path: Path) -> None:
    """Refuse files whose pixel data point outside the file or are shorter than declared.

    tifffile opens such files lazily and fails only when pixels are read; a worker should
    learn at open time, with a reason, instead of mid-pyramid.
    """
    size = path.stat().st_size
    for tseries in tiff.series:
        pages = list(tseries.pages[:8]) + ([tseries.pages[-1]] if len(tseries.pages) > 8 else [])
        for page in pages:
            if page is None or not hasattr(page, "dataoffsets"):
                continue
            offsets = page.dataoffsets
            counts = page.databytecounts
            if not offsets or not counts:
                raise ReadError(f"{path.name}: TIFF page holds no pixel data pointers")
            end = max(int(o) + int(c) for o, c in zip(offsets, counts, strict=False))
            if end > size:
                raise ReadError(
                    f"{path.name}: truncated TIFF: pixel data end at byte {end}, file has {size}"
                )
            key: Any = getattr(page, "keyframe", None) or page
            if key.compression == 1 and not key.is_tiled and key.bitspersample >= 8:
                declared = int(np.prod(key.shaped, dtype=np.float64)) * key.bitspersample // 8
                stored = sum(int(c) for c in counts)
                if stored < declared * 0.99:
                    raise ReadError(
                        f"{path.name}: TIFF declares {key.imagewidth} x {key.imagelength} "
                        f"pixels ({declared} bytes) but its strips hold {stored} bytes"
                    )


class TiffImageFile(ImageFile):
    format = "TIFF"

    def __init__(self, path: Path, companions: Sequence[Path] = ()) -> None:
        super().__init__(path)
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                self._tiff = tifffile.TiffFile(path)
                n_series = len(self._tiff.series)
        except Exception as exc:
            raise ReadError(f"{path.name}: not a readable TIFF ({exc})") from exc
        try:
            if n_series == 0:
                raise ReadError(f"{path.name}: TIFF holds no images")
            check_structure(self._tiff, path)
            self.series = [TiffSeries(self._tiff, i) for i in range(n_series)]
            self.warnings.extend(
                f"tifffile: {str(w.message).splitlines()[0][:200]}" for w in caught
            )
            self._describe(companions)
        except Exception:
            self._tiff.close()
            raise
        if self._tiff.is_ome:
            self.format = "OME-TIFF"

    def _describe(self, companions: Sequence[Path]) -> None:
        tiff = self._tiff
        ome = None
        if tiff.is_ome and tiff.ome_metadata:
            try:
                import ome_types  # imported on use: it takes most of a second to load

                ome = ome_types.from_xml(tiff.ome_metadata)
            except Exception as exc:
                self.warnings.append(f"OME-XML in the TIFF does not parse: {str(exc)[:200]}")
        sidecars = _read_sidecars(companions)
        valid = False
        for index, series in enumerate(self.series):
            assert isinstance(series, TiffSeries)
            page = series.first_page
            ctx = vendors.TiffContext(tiff, page, series, companions)
            series.vendor["tiff_tags"] = _tag_dict(page)
            series.vendor["tiff_layout"] = _layout(tiff, page)
            vendors.baseline(ctx)
            if ome is not None and index < len(ome.images):
                apply_ome_image(series, ome, index)
                series.vendor["tiff_tags"] = _tag_dict(page)
                series.vendor["tiff_layout"] = _layout(tiff, page)
                if index == 0:
                    valid = valid_ome_xml(tiff.ome_metadata or "")
                series._ome_xml = tiff.ome_metadata if valid else None
                continue
            _apply_vendor(ctx, tiff, sidecars)
        _mark_previews(self.series)

    def close(self) -> None:
        self._tiff.close()


def _apply_vendor(ctx: vendors.TiffContext, tiff: tifffile.TiffFile, sidecars: list[str]) -> None:
    page = ctx.page
    if page is None:
        return
    fei = ctx.tag(34682) or ctx.tag(34680)
    if isinstance(fei, dict):
        vendors.fei(ctx, fei)
        return
    sem = ctx.tag(34118)
    if isinstance(sem, dict):
        vendors.zeiss_sem(ctx, sem)
        return
    sis = ctx.tag(33560)
    if isinstance(sis, dict):
        vendors.olympus_sis(ctx, sis)
        return
    tv = ctx.tag(37706)
    if isinstance(tv, dict):
        vendors.tvips(ctx, tv)
        return
    description = text_or_none(page.description) or ""
    if hamamatsu_streak(ctx, description):
        return
    is_jeol = description.lstrip().startswith("<?xml") and "TemReporter" in description[:2000]
    if is_jeol and vendors.jeol_sightx(ctx, description):
        return
    tescan_text = ctx.tag(50431)
    if isinstance(tescan_text, bytes):
        tescan_text = tescan_text.decode("utf-8", "replace")
    if isinstance(tescan_text, str) and vendors.tescan(ctx, tescan_text):
        return
    if page.is_imagej or tiff.is_imagej:
        meta = tiff.imagej_metadata or {}
        vendors.imagej(ctx, meta)
        return
    if vendors.gatan_tiff(ctx):
        return
    for text in sidecars:
        if vendors.hitachi_sidecar(ctx, text):
            return


def _read_sidecars(companions: Sequence[Path]) -> list[str]:
    texts = []
    for path in companions:
        try:
            if path.stat().st_size > 1_000_000:
                continue
            head = path.read_bytes()
        except OSError:
            continue
        if b"\x00" in head[:4096]:
            continue
        texts.append(
            head.decode("utf-8", "replace") if head[:3] != b"\xff\xfe" else head.decode("utf-16")
        )
    return texts


def _tag_dict(page: Any) -> dict[str, Any]:
    if page is None:
        return {}
    out: dict[str, Any] = {}
    for tag in page.tags.values():
        if tag.code in _STRUCTURAL_TAGS or tag.code in _PARSED_TAGS:
            continue
        value = tag.value
        if isinstance(value, bytes) and len(value) > 4096:
            value = f"<{len(value)} bytes>"
        elif isinstance(value, str) and len(value) > 20000:
            value = value[:20000] + "…"
        out[tag.name] = jsonable(value)
    return out


def _layout(tiff: tifffile.TiffFile, page: Any) -> dict[str, Any]:
    if page is None:
        return {}
    key = getattr(page, "keyframe", None) or page
    return {
        "byteorder": tiff.byteorder,
        "photometric": getattr(key.photometric, "name", str(key.photometric)),
        "compression": getattr(key.compression, "name", str(key.compression)),
        "bitspersample": key.bitspersample,
        "samplesperpixel": key.samplesperpixel,
        "pages": len(tiff.pages),
    }


def _mark_previews(series_list: list[Series]) -> None:
    """An 8-bit RGB image beside a calibrated image of the same size is the vendor's preview
    (Olympus SIS writes a JPEG preview as the first IFD)."""
    if len(series_list) < 2:
        return
    for candidate in series_list:
        if not candidate.rgb or candidate.dtype != np.uint8:
            continue
        yx = (
            candidate.shape[candidate.axes.index("y")],
            candidate.shape[candidate.axes.index("x")],
        )
        for other in series_list:
            if other is candidate or other.rgb:
                continue
            other_yx = (other.shape[other.axes.index("y")], other.shape[other.axes.index("x")])
            if other_yx == yx and (
                other.pixel_size.x is not None or other.vendor.keys() - {"tiff_tags"}
            ):
                candidate.preview = True
                break


class TiffReader(Reader):
    name = "tiff"

    def sniff(self, head: bytes, path: Path) -> bool:
        return head[:4] in TIFF_MAGICS

    def open(self, path: Path, companions: Sequence[Path] = ()) -> ImageFile:
        return TiffImageFile(path, companions)
