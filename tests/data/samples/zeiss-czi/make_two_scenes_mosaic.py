"""Writes tests/data/samples/zeiss-czi/two_scenes_mosaic.czi with Zeiss's pylibCZIrw 6.1.0."""

import numpy as np
from pylibCZIrw import czi

path = "tests/data/samples/zeiss-czi/two_scenes_mosaic.czi"
rng = np.random.default_rng(2016)
with czi.create_czi(path, exist_ok=True) as writer:
    for scene, origin in ((0, (0, 0)), (1, (1000, 0))):
        for ty in range(2):
            for tx in range(2):
                for c in range(2):
                    tile = (
                        rng.integers(0, 4000, (48, 64)) + 1000 * c + 300 * (tx + 2 * ty)
                    ).astype(np.uint16)
                    writer.write(
                        tile[..., np.newaxis],
                        location=(origin[0] + 64 * tx, origin[1] + 48 * ty),
                        plane={"C": c, "Z": 0, "T": 0},
                        scene=scene,
                    )
    writer.write_metadata(
        document_name="two scenes, 2x2 mosaic each",
        channel_names={0: "DAPI", 1: "EGFP"},
        scale_x=0.2e-6,
        scale_y=0.2e-6,
        display_settings={
            0: czi.ChannelDisplaySettingsDataClass(
                True,
                czi.TintingMode.Color,
                czi.Rgb8Color(np.uint8(0), np.uint8(0), np.uint8(255)),
                0.0,
                1.0,
            ),
            1: czi.ChannelDisplaySettingsDataClass(
                True,
                czi.TintingMode.Color,
                czi.Rgb8Color(np.uint8(0), np.uint8(255), np.uint8(0)),
                0.0,
                1.0,
            ),
        },
    )

# What ZEN writes beside the pixels and pylibCZIrw's writer has no argument for: the instrument
# (microscope, objective), channel wavelengths and the acquisition time, set through Zeiss's
# own metadata editor into the same document.
INSTRUMENT = """<Instrument><Microscopes><Microscope Id="Microscope:1" Name="Axio Observer.Z1">
<System>Axio Observer.Z1</System></Microscope></Microscopes><Objectives>
<Objective Id="Objective:1" Name="Plan-Apochromat 63x/1.40 Oil DIC M27">
<NominalMagnification>63</NominalMagnification><LensNA>1.4</LensNA>
<Manufacturer><Model>Plan-Apochromat 63x/1.40 Oil DIC M27</Model></Manufacturer>
</Objective></Objectives></Instrument>"""
WAVELENGTHS = {"DAPI": (353, 465), "EGFP": (488, 509)}
with czi.edit_czi(path) as editor, editor.edit_session() as builder:
    xml = builder.get_xml()
    xml = xml.replace(
        "<Image>",
        "<Image><AcquisitionDateAndTime>2026-03-14T09:26:53.5897931+01:00</AcquisitionDateAndTime>",
        1,
    )
    xml = xml.replace("</Image>", "</Image>" + INSTRUMENT, 1)
    for name, (excitation, emission) in WAVELENGTHS.items():
        xml = xml.replace(
            f'<Channel Id="Channel:{0 if name == "DAPI" else 1}" Name="{name}">',
            f'<Channel Id="Channel:{0 if name == "DAPI" else 1}" Name="{name}">'
            f"<ExcitationWavelength>{excitation}</ExcitationWavelength>"
            f"<EmissionWavelength>{emission}</EmissionWavelength>",
            1,
        )
    builder.set_xml(xml)
