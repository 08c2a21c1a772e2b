"""Where image-text pairs come from: webdataset tar shards, or a table (folder, CSV, parquet) of image paths.

A source turns (epoch, seed, stream) into an iterator of `RawSample`s: undecoded images (bytes or a path), the
caption and the metadata. Every process (rank) runs `workers` streams, and `stream`/`streams` says which
share of the data this one reads:
- shards are shuffled per epoch with `(seed, epoch)` (the same order on every rank), then dealt to streams
  one shard at a time; with fewer shards than streams, every stream reads every shard and keeps every
  `streams`-th sample instead, so no stream is ever starved (the classic webdataset hang with few shards);
- table rows are permuted per epoch with `(seed, epoch)` and dealt one row at a time.
Problems found while reading (no image, no caption, bad JSON, unreadable shard) are counted in `counts` and
the sample is skipped; decoding the image happens later, after shuffling (`pipeline.py`).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import tarfile
from collections import Counter
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from alignsam.errors import InputError
from alignsam.io.optional import require
from alignsam.train.align.data.shards import iter_tar, shard_list

IMAGE_FIELDS: tuple[str, ...] = ("jpg", "jpeg", "png", "webp", "bmp")
IMAGE_SUFFIXES: frozenset[str] = frozenset("." + f for f in IMAGE_FIELDS)


@dataclasses.dataclass
class RawSample:
    """One pair before decoding: `image` is encoded bytes (shards) or a file path (tables)."""

    key: str
    image: bytes | Path
    caption: str
    meta: Mapping[str, Any] | None = None


class Source(Protocol):
    """A data set of pairs that can be streamed in a fixed, seeded order, split into disjoint streams."""

    needs_shuffle_buffer: bool

    def stream(self, epoch: int, seed: int, stream: int, streams: int, counts: Counter[str]) -> Iterator[RawSample]:
        """This stream's pairs for one epoch; reading problems are counted in `counts` and skipped."""
        ...

    def captions(self) -> Iterator[str]:
        """Every caption once, in storage order (for caption statistics and vocabulary training)."""
        ...

    def describe(self) -> dict[str, Any]: ...


def _epoch_rng(seed: int, epoch: int) -> np.random.Generator:
    return np.random.default_rng((seed, epoch, 0x5EED))


class WebDatasetSource:
    """Tar shards of `KEY.jpg` / `KEY.txt` / `KEY.json` (img2dataset's layout), from a brace pattern."""

    needs_shuffle_buffer = True

    def __init__(self, spec: str) -> None:
        self.spec = spec
        self.shards = shard_list(spec)

    def describe(self) -> dict[str, Any]:
        return {"kind": "webdataset", "spec": self.spec, "shards": len(self.shards)}

    def stream(self, epoch: int, seed: int, stream: int, streams: int, counts: Counter[str]) -> Iterator[RawSample]:
        order = [self.shards[i] for i in _epoch_rng(seed, epoch).permutation(len(self.shards))]
        by_shard = len(order) >= streams
        mine = order[stream::streams] if by_shard else order
        seen = 0
        for shard in mine:
            try:
                for key, fields in iter_tar(shard):
                    if not by_shard:
                        seen += 1
                        if (seen - 1) % streams != stream:
                            continue
                    sample = _sample_from_fields(key, fields, counts)
                    if sample is not None:
                        yield sample
            except (tarfile.TarError, OSError, EOFError):
                counts["skipped:unreadable_shard"] += 1

    def captions(self) -> Iterator[str]:
        for shard in self.shards:
            sidecar = Path(shard).with_suffix(".parquet")
            if sidecar.is_file():  # img2dataset writes one beside each tar: no need to read the images
                pq = require("pyarrow.parquet", "train", "Reading parquet captions")
                column = pq.read_table(sidecar, columns=["caption"]).column("caption").to_pylist()
                yield from (c for c in column if isinstance(c, str))
                continue
            try:
                for _, fields in iter_tar(shard):
                    text = _caption(fields.get("txt"))
                    if text:
                        yield text
            except (tarfile.TarError, OSError, EOFError):
                continue


def _caption(data: bytes | None) -> str | None:
    if data is None:
        return None
    try:
        return data.decode("utf-8").strip()
    except UnicodeDecodeError:
        return None


def _sample_from_fields(key: str, fields: dict[str, bytes], counts: Counter[str]) -> RawSample | None:
    image = next((fields[f] for f in IMAGE_FIELDS if f in fields), None)
    if image is None:
        counts["skipped:missing_image"] += 1
        return None
    if "txt" not in fields:
        counts["skipped:missing_caption"] += 1
        return None
    caption = _caption(fields["txt"])
    if caption is None:
        counts["skipped:bad_caption"] += 1
        return None
    if not caption:
        counts["skipped:empty_caption"] += 1
        return None
    meta = None
    if "json" in fields:
        try:
            meta = json.loads(fields["json"])
        except (UnicodeDecodeError, ValueError):
            counts["skipped:bad_json"] += 1
            return None
        if not isinstance(meta, dict):
            counts["skipped:bad_json"] += 1
            return None
    return RawSample(key, image, caption, meta)


class TableSource:
    """Rows of (image path, caption, metadata columns) from a CSV/TSV/parquet file or a folder.

    A folder may hold one table (parquet preferred over CSV), or images with same-named `.txt` captions
    (and optional `.json` metadata) beside them. Relative image paths are relative to the table's folder.
    """

    needs_shuffle_buffer = False

    def __init__(self, path: str | Path, image_key: str = "image", caption_key: str = "caption") -> None:
        self.path = Path(path)
        self.image_key, self.caption_key = image_key, caption_key
        self.rows, self.root = _read_rows(self.path, image_key, caption_key)

    def describe(self) -> dict[str, Any]:
        return {"kind": "table", "path": str(self.path), "rows": len(self.rows)}

    def stream(self, epoch: int, seed: int, stream: int, streams: int, counts: Counter[str]) -> Iterator[RawSample]:
        for i in _epoch_rng(seed, epoch).permutation(len(self.rows))[stream::streams]:
            row = self.rows[int(i)]
            image, caption = row.get(self.image_key), row.get(self.caption_key)
            if not isinstance(image, str) or not image:
                counts["skipped:missing_image"] += 1
                continue
            if not isinstance(caption, str) or not caption.strip():
                counts["skipped:missing_caption"] += 1
                continue
            yield RawSample(f"{i}", self.root / image, caption.strip(), row)

    def captions(self) -> Iterator[str]:
        for row in self.rows:
            caption = row.get(self.caption_key)
            if isinstance(caption, str) and caption.strip():
                yield caption.strip()


def _read_rows(path: Path, image_key: str, caption_key: str) -> tuple[list[dict[str, Any]], Path]:
    if path.is_dir():
        tables = sorted(path.glob("*.parquet")) or sorted([*path.glob("*.csv"), *path.glob("*.tsv")])
        if len(tables) > 1:
            raise InputError(f"Folder '{path}' holds several tables {[t.name for t in tables]}; pass one of them.")
        if tables:
            return _read_table(tables[0], image_key, caption_key), path
        return _pair_files(path, image_key, caption_key), path
    if not path.is_file():
        raise InputError(f"Training data '{path}' does not exist.")
    return _read_table(path, image_key, caption_key), path.parent


def _read_table(path: Path, image_key: str, caption_key: str) -> list[dict[str, Any]]:
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        pq = require("pyarrow.parquet", "train", "Reading parquet tables")
        try:
            rows: list[dict[str, Any]] = pq.read_table(path).to_pylist()
        except Exception as err:  # pyarrow raises its own error types for damaged files
            raise InputError(f"'{path}' is not a readable parquet file: {err}") from err
    elif suffix in (".csv", ".tsv"):
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f, delimiter="\t" if suffix == ".tsv" else ","))
    else:
        raise InputError(f"'{path}' is not a table: use .parquet, .csv or .tsv, a folder, or tar shards.")
    if rows and (image_key not in rows[0] or caption_key not in rows[0]):
        raise InputError(
            f"'{path}' has no column {image_key!r} or {caption_key!r} (columns: {sorted(rows[0])[:20]}); "
            "name them with --image-key / --caption-key."
        )
    if not rows:
        raise InputError(f"'{path}' holds no rows.")
    return rows


def _pair_files(folder: Path, image_key: str, caption_key: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for image in sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES):
        text = image.with_suffix(".txt")
        caption = text.read_text(encoding="utf-8", errors="replace").strip() if text.is_file() else None
        row: dict[str, Any] = {}
        meta = image.with_suffix(".json")
        if meta.is_file():
            try:
                loaded = json.loads(meta.read_text(encoding="utf-8"))
                row.update(loaded if isinstance(loaded, dict) else {})
            except (OSError, ValueError):
                pass
        row.update({image_key: str(image.relative_to(folder)), caption_key: caption})
        rows.append(row)
    if not rows:
        raise InputError(f"Folder '{folder}' holds no table and no images with .txt captions.")
    return rows


def open_source(spec: str, kind: str = "auto", image_key: str = "image", caption_key: str = "caption") -> Source:
    """The source a training-data specification names.

    kind "auto": a spec ending in `.tar`/`.tar.gz`/`.tgz` (after brace expansion) is webdataset shards,
    anything else (a folder, .csv, .tsv, .parquet) a table.
    """
    if kind == "auto":
        first = spec.split("::")[0].strip().rstrip("}")
        kind = "webdataset" if first.endswith((".tar", ".tar.gz", ".tgz")) or ".tar" in spec else "table"
    if kind == "webdataset":
        return WebDatasetSource(spec)
    if kind == "table":
        return TableSource(spec, image_key, caption_key)
    raise InputError(f"Unknown data kind {kind!r}; use auto, webdataset or table.")
