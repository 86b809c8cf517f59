"""The last step of every read: the vendor named as the vendor table names it, light modalities inferred.

Readers write what the file says; this step makes the facts search filters on comparable across
formats (one vendor name per company, a modality for light-microscope images) and keeps the
file's own spelling of the maker among the vendor keys.
"""

from __future__ import annotations

from allmicro_data.ingest.readers.base import Series
from allmicro_data.modalities import inferred_modality
from allmicro_data.vendors import VENDOR_AS_WRITTEN, canonical_vendor, vendor_of_instrument


def settle_facts(series: Series, fmt: str) -> None:
    """Normalise the series' vendor and infer its modality where the file shows a light microscope."""
    acq = series.acquisition
    written = acq.vendor
    acq.vendor = canonical_vendor(written) or vendor_of_instrument(acq.instrument)
    if written and acq.vendor != written:
        series.vendor.setdefault(VENDOR_AS_WRITTEN, written)
    acq.modality = inferred_modality(acq.modality, fmt, acq.instrument, acq.channels, series.rgb)
