"""The normalised acquisition record and the one table of its fields that every layer reads.

`Acquisition` is what readers fill; each of its fields carries an `AcquisitionField` that says
its unit, its label, how pages show it, where OME-XML puts it and whether free-text search looks
in it. The ingest copy into the catalogue, the API schema, the metadata CSV/JSON export, the
image page's metadata panel, the OME-XML acquisition annotation and the search text all loop
over `ACQUISITION_FIELDS`. Adding a field is one line here plus its catalogue column
(`catalogue/models.py`) and a migration; `tests/test_acquisition_fields.py` checks every output.

This module imports only the standard library, so the readers, the catalogue and the API can
all use it without bending the api → ingest → storage direction.
"""

from __future__ import annotations

from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from datetime import UTC, datetime
from typing import Any

_DESCRIPTOR = "allmicro_acquisition_field"


def N_(message: str) -> str:  # noqa: N802 - the name pybabel extracts by default
    """Marks a label for `pybabel extract`; the web UI translates it when it renders."""
    return message


@dataclass(frozen=True, slots=True)
class DisplayUnit:
    """A unit pages show a value in: the stored (SI) value divided by `size`."""

    symbol: str
    size: float = 1.0


@dataclass(frozen=True, slots=True)
class AcquisitionField:
    """One normalised field: the same name in the reader record, catalogue, API, CSV and OME-XML."""

    name: str
    kind: type  # str, float or datetime
    label: str  # English, a gettext msgid: the web UI shows it translated
    unit: str | None = None  # the stored value's unit, spelled out for the API ("metres")
    # Units pages show the value in, largest first: the first one the value reaches 1 in wins
    # (one unit: always that one). Empty: shown as text (or as a date for datetimes).
    display: tuple[DisplayUnit, ...] = ()
    # The OME-XML element and attribute that also carry the value, beside the acquisition
    # MapAnnotation every field goes into; None when OME has no place for it.
    ome: str | None = None
    searchable: bool = False  # free-text search looks through it


def about(
    kind: type,
    label: str,
    *,
    unit: str | None = None,
    display: tuple[DisplayUnit, ...] = (),
    ome: str | None = None,
    searchable: bool = False,
) -> dict[str, AcquisitionField]:
    """The metadata of an `Acquisition` field that makes it an entry of the table."""
    return {_DESCRIPTOR: AcquisitionField("", kind, label, unit, display, ome, searchable)}


# Display units shared by several fields.
LENGTHS = (
    DisplayUnit("m", 1.0),
    DisplayUnit("mm", 1e-3),
    DisplayUnit("µm", 1e-6),
    DisplayUnit("nm", 1e-9),
    # TEM pixel sizes and lattice spacings are read in ångström.
    DisplayUnit("Å", 1e-10),
    DisplayUnit("pm", 1e-12),
)
MILLIMETRES = (DisplayUnit("mm", 1e-3),)
CURRENTS = (DisplayUnit("µA", 1e-6), DisplayUnit("nA", 1e-9), DisplayUnit("pA", 1e-12))
TIMES = (
    DisplayUnit("s"),
    DisplayUnit("ms", 1e-3),
    DisplayUnit("µs", 1e-6),
    DisplayUnit("ns", 1e-9),
)
# Microscopists read dose per square ångström: 1 e⁻/Å² = 1e20 e⁻/m².
DOSES = (DisplayUnit("e⁻/Å²", 1e20),)


@dataclass(slots=True)
class Channel:
    name: str | None = None
    excitation_wavelength: float | None = None  # metres
    emission_wavelength: float | None = None  # metres
    color: str | None = None  # RRGGBB, when the file says which colour to show it in


@dataclass(slots=True)
class Acquisition:
    """Normalised acquisition facts in SI units. A value the file does not carry stays None.

    The order of the fields is the order of the API object and the CSV columns: new fields go
    at the end, so existing clients keep their columns where they were.
    """

    # "SEM", "TEM", "STEM", "FIB", "optical", "cryo-EM map", …
    modality: str | None = field(default=None, metadata=about(str, N_("Modality"), searchable=True))
    vendor: str | None = field(
        default=None,
        metadata=about(
            str, N_("Vendor"), ome="Instrument/Microscope@Manufacturer", searchable=True
        ),
    )
    instrument: str | None = field(
        default=None,
        metadata=about(str, N_("Instrument"), ome="Instrument/Microscope@Model", searchable=True),
    )
    # Timezone-aware when the file says the zone; naive when the instrument wrote its local
    # wall-clock time without one (the catalogue stores that with acquired_at_local=True).
    acquired_at: datetime | None = field(
        default=None, metadata=about(datetime, N_("Acquired"), ome="Image/AcquisitionDate")
    )
    operator: str | None = field(default=None, metadata=about(str, N_("Operator"), searchable=True))
    accelerating_voltage: float | None = field(
        default=None,
        metadata=about(
            float, N_("Accelerating voltage"), unit="volts", display=(DisplayUnit("kV", 1e3),)
        ),
    )
    magnification: float | None = field(
        default=None,
        metadata=about(
            float,
            N_("Magnification"),
            display=(DisplayUnit("\N{MULTIPLICATION SIGN}"),),
            ome="Instrument/Objective@NominalMagnification (optical images)",
        ),
    )
    working_distance: float | None = field(
        default=None,
        metadata=about(float, N_("Working distance"), unit="metres", display=MILLIMETRES),
    )
    horizontal_field_width: float | None = field(
        default=None,
        metadata=about(float, N_("Horizontal field width"), unit="metres", display=LENGTHS),
    )
    detector: str | None = field(
        default=None,
        metadata=about(str, N_("Detector"), ome="Instrument/Detector@Model", searchable=True),
    )
    beam_current: float | None = field(
        default=None, metadata=about(float, N_("Beam current"), unit="amperes", display=CURRENTS)
    )
    dwell_time: float | None = field(
        default=None, metadata=about(float, N_("Dwell time"), unit="seconds", display=TIMES)
    )
    exposure_time: float | None = field(
        default=None, metadata=about(float, N_("Exposure time"), unit="seconds", display=TIMES)
    )
    tilt_angle_deg: float | None = field(
        default=None, metadata=about(float, N_("Tilt"), unit="degrees", display=(DisplayUnit("°"),))
    )
    camera_length: float | None = field(
        default=None, metadata=about(float, N_("Camera length"), unit="metres", display=MILLIMETRES)
    )
    objective: str | None = field(
        default=None,
        metadata=about(str, N_("Objective"), ome="Instrument/Objective@Model", searchable=True),
    )
    # Electrons per square metre that reached the specimen for this image (SI; pages show e⁻/Å²).
    electron_dose: float | None = field(
        default=None,
        metadata=about(
            float, N_("Electron dose"), unit="electrons per square metre", display=DOSES
        ),
    )
    # The instrument's spot size setting, a dimensionless index as the microscope shows it
    # (FEI/Thermo "Spot", Velox SpotIndex, JEOL spot size), not a length.
    spot_size: float | None = field(
        default=None, metadata=about(float, N_("Spot size"), display=(DisplayUnit(""),))
    )
    # The objective lens defocus the instrument reports for this image, signed as the vendor
    # writes it (SerialEM: negative is underfocus), in metres; pages show µm.
    defocus: float | None = field(
        default=None,
        metadata=about(float, N_("Defocus"), unit="metres", display=(DisplayUnit("µm", 1e-6),)),
    )
    channels: list[Channel] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """The `acquisition` object of `allmicro info --json`."""
        data = asdict(self)
        data["acquired_at"] = self.acquired_at.isoformat() if self.acquired_at else None
        data["channels"] = [
            {
                "name": c.name,
                "excitation_wavelength": c.excitation_wavelength,
                "emission_wavelength": c.emission_wavelength,
                "color": c.color,
            }
            for c in self.channels
        ]
        return data


def _table() -> tuple[AcquisitionField, ...]:
    entries = []
    for f in fields(Acquisition):
        descriptor = f.metadata.get(_DESCRIPTOR)
        if descriptor is not None:
            assert (
                f.default is None and f.default_factory is MISSING
            )  # never guess: missing is None
            entries.append(replace(descriptor, name=f.name))
    return tuple(entries)


# Every normalised scalar field, in record order (channels are a list and travel on their own).
ACQUISITION_FIELDS: tuple[AcquisitionField, ...] = _table()


def catalogue_time(value: datetime | None) -> tuple[datetime | None, bool | None]:
    """A reader's acquisition time as the catalogue stores it: (instant, acquired_at_local).

    A zone-aware time is stored in UTC with the flag False; a wall-clock time whose zone the
    file does not say is stored as if it were UTC, with the flag True, so that date searches
    can compare its calendar date and pages can show it as the local time it is.
    """
    if value is None:
        return None, None
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC), True
    return value.astimezone(UTC), False


def wall_clock(stored: datetime | None, local: bool | None) -> datetime | None:
    """The acquisition time to show: the instant, or the naive local wall-clock time when local."""
    if stored is None or not local:
        return stored
    return stored.replace(tzinfo=None)
