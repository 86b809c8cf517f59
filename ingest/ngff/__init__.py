"""The on-store format of our OME-Zarr pyramids, shared by the writer (ingest) and the tile server (api).

- `codec`: the chunk codecs operators choose, encoding chunks and decoding stored ones;
- `layout`: NGFF versions, level chunking and sharding, chunk and shard keys, shard indexes;
- `metadata`: the zarr array documents and NGFF attributes, written and parsed back;
- `options`: the ALLMICRO_PYRAMID_* settings as the writer's arguments;
- `collection`: what readers open besides a pyramid: its consolidated metadata, and images as
  one bioformats2raw collection (a dataset capability's root).
"""

from allmicro_data.ingest.ngff.codec import DEFAULT_CODEC, ChunkCodec, ChunkEncoder
from allmicro_data.ingest.ngff.layout import (
    NGFF_VERSIONS,
    LevelLayout,
    NgffVersion,
    assemble_shard,
    chunk_key,
    parse_shard_index,
    shard_index_bytes,
)
from allmicro_data.ingest.ngff.metadata import (
    GROUP_DOCUMENTS,
    ChannelDisplay,
    StoredArray,
    StoredPyramid,
    metadata_documents,
    ngff_attributes,
    read_pyramid_metadata,
)
from allmicro_data.ingest.ngff.options import PyramidOptions, pyramid_options

__all__ = [
    "DEFAULT_CODEC",
    "GROUP_DOCUMENTS",
    "NGFF_VERSIONS",
    "ChannelDisplay",
    "ChunkCodec",
    "ChunkEncoder",
    "LevelLayout",
    "NgffVersion",
    "PyramidOptions",
    "StoredArray",
    "StoredPyramid",
    "assemble_shard",
    "chunk_key",
    "metadata_documents",
    "ngff_attributes",
    "parse_shard_index",
    "pyramid_options",
    "read_pyramid_metadata",
    "shard_index_bytes",
]
