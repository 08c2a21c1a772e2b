"""The search backend behind `/search`, kept behind one function (`open_index`): an index folder built by
`alignsam index` (`alignsam.index.ImageIndex`, the same search as `alignsam search`: filters, near-duplicate
removal, exact or HNSW by size) or an older embedding folder written by `alignsam embed` (exact search), and
thumbnails of the indexed images."""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any, Protocol

import torch

from alignsam.errors import InputError, UsageError
from alignsam.io.images import load_image
from alignsam.serve.errors import NotFoundError


class SearchIndex(Protocol):
    """What the service needs of an index: its vector size, a k-nearest search, and its paths."""

    dim: int

    def search(
        self, queries: torch.Tensor, k: int, where: str | None = None, dedupe: float | None = None
    ) -> list[list[dict[str, Any]]]:
        """The `k` best entries for each L2-normalised query (`Q x D`): `{"path", "score", ...}`, best first,
        among those matching the filter `where`, without near-duplicates at cosine >= `dedupe`."""
        ...

    def path_of(self, name: str) -> Path:
        """The file behind a path the index returned; a `NotFoundError` for any other name."""
        ...

    def __len__(self) -> int: ...


class EmbeddingFolder:
    """An embedding folder written by `alignsam embed --out DIR` (`alignsam.tools.embed`), searched exactly."""

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        from alignsam.tools.embed import load_image_index

        self.folder = Path(folder)
        self.vectors, self.paths = load_image_index(self.folder)
        self.dim = int(self.vectors.shape[1])
        self._known = set(self.paths)

    def __len__(self) -> int:
        return len(self.paths)

    def search(
        self, queries: torch.Tensor, k: int, where: str | None = None, dedupe: float | None = None
    ) -> list[list[dict[str, Any]]]:
        from alignsam.tools.embed import search

        if where is not None or dedupe is not None:
            raise UsageError(
                "'where' and 'dedupe' need an index built by `alignsam index`; this is an embedding folder."
            )

        names = [str(i) for i in range(len(queries))]
        return [hit["results"] for hit in search(self.vectors, self.paths, queries, names, k)]

    def path_of(self, name: str) -> Path:
        if name not in self._known:  # only what the index holds, whatever the path names
            raise NotFoundError(f"'{name}' is not an image of the search index.")
        path = Path(name)
        return path if path.is_absolute() or path.exists() else self.folder.parent / path


class IndexFolder:
    """An index folder built by `alignsam index`, searched by `alignsam.index.ImageIndex` (each search reads
    the generation committed when it starts, so the index may grow while the service runs)."""

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        from alignsam.index import ImageIndex

        self.folder = Path(folder)
        self.index = ImageIndex.open(self.folder)
        self.dim = self.index.dim

    def __len__(self) -> int:
        return len(self.index)

    def search(
        self, queries: torch.Tensor, k: int, where: str | None = None, dedupe: float | None = None
    ) -> list[list[dict[str, Any]]]:
        return self.index.search(queries, k, where=where, dedupe=dedupe)

    def path_of(self, name: str) -> Path:
        if not self.index.holds(name):  # only what the index holds, whatever the path names
            raise NotFoundError(f"'{name}' is not an image of the search index.")
        return Path(name)

    def close(self) -> None:
        self.index.close()


def open_index(folder: str | os.PathLike[str]) -> SearchIndex:
    """The search index in `folder`: an index folder (`alignsam index`) or an embedding folder (`alignsam embed`)."""
    from alignsam.index import is_index

    return IndexFolder(folder) if is_index(folder) else EmbeddingFolder(folder)


def thumbnail(path: Path, size: int) -> bytes:
    """A JPEG of the image at `path` whose longest side is at most `size` pixels."""
    if not 16 <= size <= 1024:
        raise InputError(f"'size' must be 16..1024 pixels, got {size}.")
    image = load_image(path)
    image.thumbnail((size, size))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=85)
    return buffer.getvalue()
