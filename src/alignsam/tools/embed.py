"""Embeddings to disk, and search over them.

An embedding folder holds, for each kind present:

    images.npy       N x D float32, L2-normalised, row i = image i
    images.parquet   id (row), path
    texts.npy        M x D float32, L2-normalised
    texts.parquet    id (row), text
    embeddings.json  the model, the dimension, counts, and the files that could not be read

This is the clip-retrieval layout in small: numpy for vectors, parquet for metadata, one row each. The files
are committed as one unit (`write_embeddings`: a journal, then the renames), so a killed write never leaves
new vectors beside an old path table. `alignsam embed` keeps the batches it finished in a hidden index
(`.embed-progress/`, `alignsam.index`), so that a killed run, run again, embeds only what was left.
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
from alignsam.io.files import fsync_path
from alignsam.io.optional import require
from alignsam.tools.encoder import Encoder, OnError, input_names
from alignsam.validation import check_count

EMBEDDING_FILES = ("images.npy", "images.parquet", "texts.npy", "texts.parquet", "embeddings.json")
"""The files an embedding folder holds; `export_embeddings` writes and replaces only these."""


def check_output_folder(out_dir: str | os.PathLike[str], overwrite: bool = False) -> Path:
    """`out_dir` as a Path, if embeddings may be written there: not a file, and holding no embeddings unless
    `overwrite` (call it before long work, so that a bad --out fails at once)."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError(f"The output '{out}' exists and is not a folder; name a folder to write the embeddings into.")
    if out.is_dir():
        recover_embeddings(out)
    held = [name for name in EMBEDDING_FILES if (out / name).exists()]
    if held and not overwrite:
        raise InputError(
            f"'{out}' already holds embeddings ({', '.join(held)}); pass --overwrite (overwrite=True) to replace "
            "them, or name another folder."
        )
    return out


def export_embeddings(
    encoder: Encoder,
    out_dir: str | os.PathLike[str],
    *,
    images: Sequence[str | os.PathLike[str]] = (),
    texts: Sequence[str] = (),
    on_error: OnError = "skip",
    model_name: str = "",
    overwrite: bool = False,
) -> dict[str, Any]:
    """Embed `images` and `texts` and write them to `out_dir`; returns the summary also written as JSON.

    A folder that already holds embeddings is refused unless `overwrite`; then the new files replace the old
    ones, and those of a kind not embedded this time are removed, so that the folder and its
    `embeddings.json` agree. Nothing in the folder changes until every input is embedded, and the files are
    committed as one unit (`write_embeddings`), so an interrupted run leaves the old embeddings whole.
    Other files in the folder are left alone."""
    if not images and not texts:
        raise InputError("Nothing to embed: pass images, texts, or both.")
    out = check_output_folder(out_dir, overwrite)
    image_part = None
    if images:
        done = encoder.encode_images(images, on_error=on_error)
        names = input_names(images)
        image_part = (
            done.embeds.numpy().astype(np.float32),
            [names[i] for i in done.indices],
            [{"image": names[i], "error": msg} for i, msg in done.errors],
        )
    text_vectors = encoder.encode_texts(list(texts)).numpy().astype(np.float32) if texts else None
    dim = encoder.model.config.projection_dim
    return write_embeddings(out, dim, model_name, images=image_part, texts=(text_vectors, list(texts)))


COMMIT_JOURNAL = ".embed-commit.json"


def write_embeddings(
    out: Path,
    dim: int,
    model_name: str,
    *,
    images: tuple[np.ndarray, list[str], list[dict[str, str]]] | None = None,
    texts: tuple[np.ndarray | None, list[str]] = (None, []),
) -> dict[str, Any]:
    """Write an embedding folder as one unit: every file under a temporary name (synced), then a journal
    naming the files to install and those to remove, then the renames, then the journal goes. A process
    killed before the journal leaves the old folder; after it, whoever opens the folder next
    (`recover_embeddings`) finishes the renames, so vectors never stand beside an older path table.

    images: (vectors `N x D`, path per row, errors); texts: (vectors `M x D` or None, the texts)."""
    pa = require("pyarrow", "data", "Writing embedding tables")
    pq = require("pyarrow.parquet", "data", "Writing embedding tables")

    summary: dict[str, Any] = {"model": model_name, "dim": dim, "normalized": True}
    tables: dict[str, Any] = {}  # file name -> pyarrow table
    vectors: dict[str, np.ndarray] = {}
    if images is not None:
        image_vectors, paths, errors = images
        vectors["images.npy"] = image_vectors
        # names that are not UTF-8 are kept as their bytes' escapes: parquet strings must be UTF-8
        shown = [p.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace") for p in paths]
        tables["images.parquet"] = pa.table({"id": list(range(len(paths))), "path": shown})
        summary["images"] = {"count": len(paths), "vectors": str(out / "images.npy")}
        summary["errors"] = errors
    text_vectors, text_list = texts
    if text_vectors is not None:
        vectors["texts.npy"] = text_vectors
        tables["texts.parquet"] = pa.table({"id": list(range(len(text_list))), "text": text_list})
        summary["texts"] = {"count": len(text_list), "vectors": str(out / "texts.npy")}
    out.mkdir(parents=True, exist_ok=True)
    recover_embeddings(out)
    partial = {name: out / f".{name}.partial" for name in EMBEDDING_FILES}
    written = [*vectors, *tables, "embeddings.json"]
    try:
        for name, array in vectors.items():
            with open(partial[name], "wb") as f:
                np.save(f, array)
        for name, table in tables.items():
            pq.write_table(table, partial[name])
        partial["embeddings.json"].write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
        for name in written:
            fsync_path(partial[name])
        journal = {"install": written, "remove": [name for name in EMBEDDING_FILES if name not in written]}
        tmp = out / f"{COMMIT_JOURNAL}.partial"
        tmp.write_text(json.dumps(journal))
        fsync_path(tmp)
        os.replace(tmp, out / COMMIT_JOURNAL)  # the commit point
        fsync_path(out)
        recover_embeddings(out)
    finally:
        if not (out / COMMIT_JOURNAL).exists():
            for path in partial.values():
                path.unlink(missing_ok=True)
    return summary


def recover_embeddings(out: Path) -> None:
    """Finish a commit that a killed `write_embeddings` started (its journal names what to install and
    remove); without a journal, drop the temporary files of a write that never reached its commit."""
    journal = out / COMMIT_JOURNAL
    if not journal.is_file():
        return
    try:
        plan = json.loads(journal.read_text())
        for name in plan["install"]:
            if name in EMBEDDING_FILES and (out / f".{name}.partial").exists():
                os.replace(out / f".{name}.partial", out / name)
        for name in plan["remove"]:
            if name in EMBEDDING_FILES:
                (out / name).unlink(missing_ok=True)
        fsync_path(out)
        journal.unlink()
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise InputError(
            f"'{out}' holds an embedding write that could not be finished ({err}); embed the folder again."
        ) from err


def load_image_index(index_dir: str | os.PathLike[str]) -> tuple[torch.Tensor, list[str]]:
    """The image vectors (`N x D` float32) and paths of an embedding folder written by `export_embeddings`;
    an `InputError` naming the file for a folder that is not one, a file that cannot be read, or vectors
    that are not a finite `N x D` matrix with one path per row."""
    pq = require("pyarrow.parquet", "data", "Reading embedding tables")

    root = Path(index_dir)
    if root.is_dir():
        recover_embeddings(root)
    if not (root / "images.npy").is_file() or not (root / "images.parquet").is_file():
        raise InputError(f"'{root}' is not an image embedding folder (run `alignsam embed --out {root}` first).")
    with open(root / "images.npy", "rb") as f:
        if f.read(6) != b"\x93NUMPY":
            raise InputError(f"'{root / 'images.npy'}' is not a .npy file; embed the folder again.")
    try:
        array = np.load(root / "images.npy", allow_pickle=False)
        paths = pq.read_table(root / "images.parquet").column("path").to_pylist()
    except (OSError, ValueError, KeyError) as err:  # pyarrow's errors are OSErrors or ValueErrors
        raise InputError(f"The embedding folder '{root}' could not be read ({err}); embed it again.") from err
    if array.ndim != 2 or not np.issubdtype(array.dtype, np.floating):
        raise InputError(
            f"'{root / 'images.npy'}' holds a {array.dtype} array of shape {array.shape}, not N x D vectors."
        )
    if array.shape[0] != len(paths):
        raise InputError(f"'{root}' is inconsistent: {array.shape[0]} vectors but {len(paths)} paths.")
    bad = int((~np.isfinite(array).all(axis=1)).sum())
    if bad:
        raise InputError(f"'{root / 'images.npy'}' has {bad} rows that are not finite numbers; embed it again.")
    return torch.from_numpy(array.astype(np.float32, copy=False)), paths


def search(
    vectors: torch.Tensor, paths: Sequence[str], queries: torch.Tensor, query_names: Sequence[str], k: int = 10
) -> list[dict[str, Any]]:
    """Exact cosine search: the `k` best images for each (normalised) query vector."""
    check_count(k, "k")
    if vectors.shape[1] != queries.shape[1]:
        raise InputError(
            f"The index holds {vectors.shape[1]}-dimensional vectors but the queries are {queries.shape[1]}-"
            "dimensional: the index was written by another model; search it with that model or embed it again."
        )
    if vectors.shape[0] == 0:
        return [{"query": q, "results": []} for q in query_names]
    scores = queries @ vectors.T  # Q x N
    top = scores.topk(min(k, vectors.shape[0]), dim=1)
    return [
        {"query": name, "results": [{"path": paths[j], "score": round(float(s), 6)} for s, j in zip(v, i, strict=True)]}
        for name, v, i in zip(query_names, top.values, top.indices.tolist(), strict=True)
    ]
