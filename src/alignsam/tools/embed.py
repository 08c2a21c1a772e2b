"""Embeddings to disk, and search over them.

An embedding folder holds, for each kind present:

    images.npy       N x D float32, L2-normalised, row i = image i
    images.parquet   id (row), path
    texts.npy        M x D float32, L2-normalised
    texts.parquet    id (row), text
    embeddings.json  the model, the dimension, counts, and the files that could not be read

This is the clip-retrieval layout in small: numpy for vectors, parquet for metadata, one row each.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from alignsam.errors import InputError
from alignsam.tools.encoder import Encoder, OnError, input_names


def export_embeddings(
    encoder: Encoder,
    out_dir: str | os.PathLike[str],
    *,
    images: Sequence[str | os.PathLike[str]] = (),
    texts: Sequence[str] = (),
    on_error: OnError = "skip",
    model_name: str = "",
) -> dict[str, Any]:
    """Embed `images` and `texts` and write them to `out_dir`; returns the summary also written as JSON."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not images and not texts:
        raise InputError("Nothing to embed: pass images, texts, or both.")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError(f"The output '{out}' exists and is not a folder; name a folder to write the embeddings into.")
    out.mkdir(parents=True, exist_ok=True)
    summary: dict[str, Any] = {"model": model_name, "dim": encoder.model.config.projection_dim, "normalized": True}
    if images:
        done = encoder.encode_images(images, on_error=on_error)
        names = input_names(images)
        np.save(out / "images.npy", done.embeds.numpy().astype(np.float32))
        table = pa.table({"id": list(range(len(done.indices))), "path": [names[i] for i in done.indices]})
        pq.write_table(table, out / "images.parquet")
        summary["images"] = {"count": len(done.indices), "vectors": str(out / "images.npy")}
        summary["errors"] = [{"image": names[i], "error": msg} for i, msg in done.errors]
    if texts:
        embeds = encoder.encode_texts(list(texts))
        np.save(out / "texts.npy", embeds.numpy().astype(np.float32))
        pq.write_table(pa.table({"id": list(range(len(texts))), "text": list(texts)}), out / "texts.parquet")
        summary["texts"] = {"count": len(texts), "vectors": str(out / "texts.npy")}
    (out / "embeddings.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def load_image_index(index_dir: str | os.PathLike[str]) -> tuple[torch.Tensor, list[str]]:
    """The image vectors (`N x D`) and paths of an embedding folder written by `export_embeddings`."""
    import pyarrow.parquet as pq

    root = Path(index_dir)
    if not (root / "images.npy").is_file() or not (root / "images.parquet").is_file():
        raise InputError(f"'{root}' is not an image embedding folder (run `alignsam embed --out {root}` first).")
    vectors = torch.from_numpy(np.load(root / "images.npy"))
    paths = pq.read_table(root / "images.parquet").column("path").to_pylist()
    if vectors.shape[0] != len(paths):
        raise InputError(f"'{root}' is inconsistent: {vectors.shape[0]} vectors but {len(paths)} paths.")
    return vectors, paths


def search(
    vectors: torch.Tensor, paths: Sequence[str], queries: torch.Tensor, query_names: Sequence[str], k: int = 10
) -> list[dict[str, Any]]:
    """Exact cosine search: the `k` best images for each (normalised) query vector."""
    if vectors.shape[0] == 0:
        return [{"query": q, "results": []} for q in query_names]
    scores = queries @ vectors.T  # Q x N
    top = scores.topk(min(k, vectors.shape[0]), dim=1)
    return [
        {"query": name, "results": [{"path": paths[j], "score": round(float(s), 6)} for s, j in zip(v, i, strict=True)]}
        for name, v, i in zip(query_names, top.values, top.indices.tolist(), strict=True)
    ]
