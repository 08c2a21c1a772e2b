"""The image index: an incremental, crash-safe store of image embeddings with their metadata, searched
exactly for small collections and through an HNSW graph (usearch) for large ones (docs/index.md).

    from alignsam.index import ImageIndex
    with ImageIndex.open("photos.idx", create=True) as index:
        index.add(["photos/"], model="demo")
        hits = index.query(encoder, ["a dog on a beach"], k=5, where="width >= 512")

Embedding engines: this process (`alignsam.index.embedding.embed_local`) or a Ray cluster
(`alignsam.index.ray`, optional extra `alignsam[ray]`; docs/ray.md), both feeding the same writer.
"""

from alignsam.index.core import DEFAULT_DEDUPE, EXACT_BELOW, ImageIndex, model_key
from alignsam.index.filters import COLUMNS, Where, parse_filter
from alignsam.index.store import DB_NAME

__all__ = ["COLUMNS", "DB_NAME", "DEFAULT_DEDUPE", "EXACT_BELOW", "ImageIndex", "Where", "model_key", "parse_filter"]


def is_index(folder: object) -> bool:
    """Whether `folder` holds an image index (its database file), as opposed to an `embed` folder."""
    import os
    from pathlib import Path

    return isinstance(folder, str | os.PathLike) and (Path(folder) / DB_NAME).is_file()
