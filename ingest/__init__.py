"""Reading vendor files and their metadata, OME-XML, and writing OME-Zarr pyramids."""

import sys

# ome-types builds a pint unit registry when it is first imported, for `*_quantity` properties
# that nothing here uses: 0.4 s of CPU in each job process before its first ingest. Without
# ome_types.units it leaves those properties out and reads and writes the same OME-XML
# (tests/ingest/test_ome_xml.py).
sys.modules.setdefault("ome_types.units", None)  # type: ignore[arg-type]
