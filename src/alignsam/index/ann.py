"""The approximate nearest-neighbour index: usearch's HNSW graph over the vectors, inner product (the
vectors are L2-normalised, so it is the cosine), keyed by row id.

It is published whole: written to a new file `ann-<generation>.usearch` beside the database (under a
temporary name, fsynced, renamed), and only then named in the database's `info` in the same transaction as
the generation it covers, so a reader finds either the old file or the new one, both complete. Files no
longer named are deleted by the next writer.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from alignsam.errors import InputError
from alignsam.io.files import fsync_path
from alignsam.io.optional import require

# Chosen by measurement (benchmarks/index_engines.md): at 1M embedding-like vectors of 640 dimensions, float16
# storage with 16 links and search width 256 gives recall@10 0.968 at a one-query p50 of 4.4 ms on 2 cores, in
# half the memory and disk of float32 (whose parallel add was also slower here).
CONNECTIVITY = 16
EXPANSION_ADD = 64
EXPANSION_SEARCH = 256
DTYPE = "f16"


def new_index(dim: int) -> Any:
    usearch = require("usearch.index", "index", "The approximate search index")
    return usearch.Index(
        ndim=dim, metric="ip", dtype=DTYPE, connectivity=CONNECTIVITY, expansion_add=EXPANSION_ADD,
        expansion_search=EXPANSION_SEARCH,
    )  # fmt: skip


def load(path: Path, dim: int, count: int, *, view: bool = True) -> Any:
    """The ANN index in `path` (memory-mapped when `view`); an `InputError` if it is missing, corrupt, or
    does not hold `count` vectors of `dim` dimensions (the counts the database recorded when it published
    the file)."""
    usearch = require("usearch.index", "index", "The approximate search index")
    if not path.is_file():
        raise InputError(f"The index file '{path}' is missing; rebuild it with `alignsam index DIR --reindex`.")
    try:
        index = usearch.Index.restore(str(path), view=view)
    except Exception as err:  # usearch raises plain RuntimeError/ValueError for a damaged file
        raise InputError(
            f"The index file '{path}' could not be read ({err}); rebuild it with `alignsam index DIR --reindex`."
        ) from err
    if index is None or index.ndim != dim or len(index) != count:
        raise InputError(
            f"The index file '{path}' does not match the database (corrupt); rebuild it with "
            "`alignsam index DIR --reindex`."
        )
    index.expansion_search = EXPANSION_SEARCH
    return index


def publish(index: Any, folder: Path, generation: int) -> str:
    """Write `index` to `ann-<generation>.usearch` in `folder` durably; returns the file name. The file is
    complete under its final name or absent."""
    name = f"ann-{generation}.usearch"
    tmp = folder / f".{name}.partial"
    index.save(str(tmp))
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, folder / name)
    fsync_path(folder)
    return name


def search(index: Any, queries: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
    """Ids `Q x count` (-1 where fewer were found) and cosines of the `count` nearest rows to each query."""
    found = index.search(np.ascontiguousarray(queries, dtype=np.float32), count)
    counts = getattr(found, "counts", None)  # a batch of queries: padded rows and their counts
    if counts is None:  # one query: only what was found
        counts = [len(found.keys)]
    keys = np.full((len(queries), count), -1, dtype=np.int64)
    scores = np.full((len(queries), count), -np.inf, dtype=np.float32)
    got_keys = np.asarray(found.keys, dtype=np.int64).reshape(len(queries), -1)
    got_scores = 1.0 - np.asarray(found.distances, dtype=np.float32).reshape(len(queries), -1)
    for q, n in enumerate(np.asarray(counts).reshape(-1).tolist()):
        keys[q, :n] = got_keys[q, :n]
        scores[q, :n] = got_scores[q, :n]
    return keys, scores
