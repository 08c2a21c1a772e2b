"""COCO run-length encoding of binary masks, in numpy: the forms SAM and SA-1B use and pycocotools reads.

A COCO RLE lists run lengths of the mask flattened in column-major (Fortran) order, starting with a run
of zeros (possibly empty). The uncompressed form keeps the runs as a list; the compressed `counts` string
(pycocotools `maskApi.c`, `rleToString`) stores each run, minus the run two places before it from the
fourth on, as a variable-length signed integer in 5-bit groups, least significant first; each group becomes
the character `48 + group`, with 0x20 set when more groups follow. pycocotools is not needed at run time;
the tests check equality with it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

Rle = dict[str, Any]


def mask_runs(mask: np.ndarray) -> list[int]:
    """Run lengths of an `H x W` mask in column-major order, starting with the (maybe empty) run of zeros."""
    flat = np.asarray(mask, dtype=bool).ravel(order="F")
    if flat.size == 0:
        return []
    changes = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    runs = np.diff(np.concatenate([[0], changes, [flat.size]])).tolist()
    return [0, *runs] if flat[0] else runs


def runs_to_string(runs: list[int]) -> str:
    """The compressed COCO `counts` string of a list of run lengths."""
    out = []
    for i, run in enumerate(runs):
        x = run - runs[i - 2] if i > 2 else run
        more = True
        while more:
            c = x & 0x1F
            x >>= 5  # arithmetic shift, as in C on a signed long
            more = x != -1 if c & 0x10 else x != 0
            if more:
                c |= 0x20
            out.append(chr(c + 48))
    return "".join(out)


def string_to_runs(counts: str) -> list[int]:
    """The inverse of `runs_to_string`."""
    runs: list[int] = []
    p = 0
    while p < len(counts):
        x, k, more = 0, 0, True
        while more:
            c = ord(counts[p]) - 48
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and c & 0x10:
                x |= -1 << (5 * k)  # sign-extend
        if len(runs) > 2:
            x += runs[-2]
        runs.append(x)
    return runs


def encode_rle(mask: np.ndarray) -> Rle:
    """COCO compressed RLE of an `H x W` binary mask: `{"size": [H, W], "counts": str}` (JSON-ready)."""
    h, w = np.shape(mask)
    return {"size": [int(h), int(w)], "counts": runs_to_string(mask_runs(mask))}


def encode_uncompressed_rle(mask: np.ndarray) -> Rle:
    """Uncompressed RLE of an `H x W` binary mask: `{"size": [H, W], "counts": [runs]}`."""
    h, w = np.shape(mask)
    return {"size": [int(h), int(w)], "counts": mask_runs(mask)}


def compress_rle(rle: Rle) -> Rle:
    """Uncompressed RLE -> compressed (string counts)."""
    return {"size": list(rle["size"]), "counts": runs_to_string([int(c) for c in rle["counts"]])}


def decompress_rle(rle: Rle) -> Rle:
    """Compressed RLE (str or bytes counts) -> uncompressed (list of runs)."""
    counts = rle["counts"]
    text = counts.decode("ascii") if isinstance(counts, bytes) else counts
    return {"size": list(rle["size"]), "counts": string_to_runs(text)}


def decode_rle(rle: Rle) -> np.ndarray:
    """The `H x W` bool mask of a COCO RLE, compressed or uncompressed."""
    h, w = rle["size"]
    counts = rle["counts"]
    runs = [int(c) for c in counts] if isinstance(counts, list) else decompress_rle(rle)["counts"]
    if sum(runs) != h * w:
        raise ValueError(f"RLE runs cover {sum(runs)} pixels, but size {h}x{w} has {h * w}")
    values = np.arange(len(runs)) % 2 == 1  # runs alternate 0, 1, 0, ...
    return np.repeat(values, runs).reshape((h, w), order="F")


def rle_area(rle: Rle) -> int:
    """Foreground pixels of an uncompressed RLE."""
    return int(sum(rle["counts"][1::2]))


def rle_bbox(rle: Rle) -> list[int]:
    """XYWH of the foreground of an uncompressed RLE (pixels counted, COCO's convention; zeros when empty),
    from its runs, without decoding the mask."""
    h = int(rle["size"][0])
    counts = np.asarray(rle["counts"], dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])[1::2]  # column-major offsets of the foreground runs
    lengths = counts[1::2]
    nonempty = lengths > 0
    starts, ends = starts[nonempty], starts[nonempty] + lengths[nonempty] - 1
    if starts.size == 0:
        return [0, 0, 0, 0]
    first_col, last_col = starts // h, ends // h
    # a run within one column covers its own rows; a run across columns covers every row of some column
    spans = first_col != last_col
    top = 0 if spans.any() else int((starts % h).min())
    bottom = h - 1 if spans.any() else int((ends % h).max())
    x0, x1 = int(first_col.min()), int(last_col.max())
    return [x0, top, x1 - x0 + 1, bottom - top + 1]
