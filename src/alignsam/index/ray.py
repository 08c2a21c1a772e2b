"""Embedding images on a Ray cluster (or a local Ray instance) with Ray Data: the `--engine ray` of `index`.

    >>> for paths, vectors, sizes, failed in embed_with_ray(files, "demo", workers=2):  # doctest: +SKIP
    ...     store.add(paths, vectors, sizes)        # vectors: len(paths) x D float32, L2-normalised

How it runs (docs/ray.md):
- The paths become a Ray dataset (`ray.data.from_items`; `read_paths` also reads a parquet file of paths).
- `map_batches` feeds batches to a pool of `workers` actors. Each actor loads the encoder once, in its
  `__init__`, then decodes its batch (`alignsam.io.images.load_image`, so the same pixel guard and
  conversions as everywhere else) and embeds it. Reading, decoding and the model all run on the workers:
  the driver only sends paths and receives vectors.
- Paths with a scheme (`s3://bucket/a.jpg`, `gs://...`) are read through pyarrow's file systems on the
  worker; others are local to the worker (a shared file system on a cluster).
- An image that cannot be read or decoded is returned as a failure `(path, message)`; it never stops the
  job. The vectors are those `Encoder.encode_images` gives in one process (within float32 rounding of a
  different batch composition), and batches come back in input order (Ray Data's `preserve_order`).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from alignsam.errors import InputError
from alignsam.io.optional import require
from alignsam.validation import check_count

Batch = tuple[list[str], np.ndarray, list[tuple[int, int]], list[tuple[str, str]]]
"""(paths, `N x D` float32 L2-normalised vectors, (width, height) per path, (path, error) per failure)."""


def _ray() -> Any:
    return require("ray", "ray", "Embedding with Ray (--engine ray)")


def read_paths(source: str | os.PathLike[str]) -> list[str]:
    """The image paths in `source`: a parquet file (its `path` column, local or `s3://...`), or a folder
    (its images, sorted, as the folder commands list them)."""
    name = os.fspath(source)
    if name.endswith(".parquet"):
        parquet = require("pyarrow.parquet", "data", "Reading a parquet file of paths")
        table = parquet.read_table(name, columns=["path"])
        return [str(p) for p in table.column("path").to_pylist()]
    from alignsam.tools.files import list_images

    return [str(p) for p in list_images([name]).files]


def _read(path: str) -> bytes | str:
    """What `load_image` reads: the path itself when local, the object's bytes for `scheme://...`."""
    if "://" not in path:
        return path
    fs = require("pyarrow.fs", "data", "Reading images from object storage")
    filesystem, inner = fs.FileSystem.from_uri(path)
    with filesystem.open_input_stream(inner) as stream:
        return bytes(stream.read())


class EncodeBatch:
    """A Ray Data actor: loads the encoder once, then turns batches of paths into vectors.

    In: `{"path": N}`. Out: `{"path": N, "vector": N x D float32 (zeros where failed), "width": N,
    "height": N, "error": N ("" where the image was embedded)}`.
    """

    def __init__(self, model: str, threads: int = 1, batch_size: int = 32) -> None:
        import torch

        from alignsam.tools.encoder import Encoder

        torch.set_num_threads(threads)  # the actor's CPU share, not the whole node's cores
        # images are decoded here, in this actor's own loop; no decoding threads of the encoder's own
        self.encoder = Encoder.from_pretrained(model, batch_size=batch_size, workers=1)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from alignsam.io.images import load_image

        paths = [str(p) for p in batch["path"]]
        errors = [""] * len(paths)
        sizes = np.zeros((len(paths), 2), np.int32)
        images, rows = [], []
        for i, path in enumerate(paths):
            try:
                image = load_image(_read(path))
            except Exception as err:  # any unreadable file is a failure of that image, never of the job
                errors[i] = str(err) or type(err).__name__
                continue
            images.append(image)
            rows.append(i)
            sizes[i] = image.size
        dim = self.encoder.model.config.projection_dim
        vectors = np.zeros((len(paths), dim), np.float32)
        if images:
            done = self.encoder.encode_images(images, on_error="skip")
            vectors[[rows[j] for j in done.indices]] = done.embeds.numpy()
            for j, message in done.errors:
                errors[rows[j]] = message
        return {"path": np.asarray(paths, dtype=object), "vector": vectors, "width": sizes[:, 0],
                "height": sizes[:, 1], "error": np.asarray(errors, dtype=object)}  # fmt: skip


def connect(address: str | None = None, **init_kwargs: Any) -> Any:
    """The `ray` module, initialised: joins `address` (`ray://head:10001`, `auto`), else `RAY_ADDRESS`, else
    starts a local instance. A running session (e.g. one the caller started) is used as it is."""
    ray = _ray()
    if not ray.is_initialized():
        ray.init(address=address, **init_kwargs)
    return ray


def embed_with_ray(
    paths: Sequence[str],
    model: str,
    *,
    address: str | None = None,
    workers: int = 2,
    batch_size: int = 32,
    threads_per_worker: int = 1,
) -> Iterator[Batch]:
    """Embed the images at `paths` with the ALIGN model `model` on `workers` Ray actors; yield batches of
    (paths, `N x D` float32 L2-normalised vectors, (width, height) per path, (path, error) per failure),
    in input order. Each path of a batch appears once, either with a vector or as a failure.

    `model` is what `Encoder.from_pretrained` takes (a bundled name, hub id, or a folder every worker can
    read). `threads_per_worker`: CPU cores each actor claims and gives torch.
    """
    check_count(workers, "workers")
    check_count(batch_size, "batch_size")
    check_count(threads_per_worker, "threads_per_worker")
    names = [os.fspath(p) for p in paths]
    if not names:
        return
    if len(set(names)) != len(names):
        raise InputError("The paths to embed contain duplicates; each image is embedded once.")
    ray = connect(address)
    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True  # batches come back in input order
    dataset = ray.data.from_items([{"path": p} for p in names])
    embedded = dataset.map_batches(
        EncodeBatch,
        fn_constructor_kwargs={"model": model, "threads": threads_per_worker, "batch_size": batch_size},
        batch_size=batch_size,
        compute=ray.data.ActorPoolStrategy(size=workers),
        num_cpus=threads_per_worker,
        batch_format="numpy",
    )
    for batch in embedded.iter_batches(batch_size=None, batch_format="numpy"):
        yield _split(batch)


def _split(batch: dict[str, np.ndarray]) -> Batch:
    """The actor's columns as (embedded paths, their vectors, their sizes, failures)."""
    errors = [str(e) for e in batch["error"]]
    ok = np.asarray([not e for e in errors], dtype=bool)
    paths = [str(p) for p in batch["path"]]
    vectors = np.asarray(batch["vector"], dtype=np.float32)[ok]
    sizes = [(int(w), int(h)) for w, h, good in zip(batch["width"], batch["height"], ok, strict=True) if good]
    failed = [(p, e) for p, e in zip(paths, errors, strict=True) if e]
    return [p for p, good in zip(paths, ok, strict=True) if good], vectors, sizes, failed
