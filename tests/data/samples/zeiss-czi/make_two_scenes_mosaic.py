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
