"""Writers: the synthetic scenes in each layout the rest of the project reads.

- `write_webdataset`: img2dataset's webdataset output, `00000.tar` ... holding `KEY.jpg`, `KEY.txt`, `KEY.json`,
  with a per-shard `.parquet` and `_stats.json` (contrastive training);
- `write_folder`: `images/` + `captions.csv` + `captions.parquet` (training from a folder or a table);
- `write_classification`: one folder per "<colour> <shape>" class of single-object scenes (zero-shot top-1/5);
- `write_retrieval`: `images/` + a COCO captions json, several clean captions per image (image<->text R@K);
- `write_segmentation`: `images/` + COCO instances json: RLE masks, shape categories, colour attributes (SAM).

Every writer is deterministic (same generator and arguments -> the same bytes: tar members carry a fixed
mtime, no timings are written), shows a tqdm bar on stderr, writes `synth.json` (layout, seed, index range,
config: enough to regenerate) and returns a JSON-ready report of what it wrote.
"""

from __future__ import annotations

import csv
import io
import json
import sys
import tarfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image
from tqdm import tqdm

from alignsam import __version__
from alignsam.errors import InputError
from alignsam.io.optional import require
from alignsam.io.rle import encode_rle
from alignsam.synthetic.metadata import coyo_metadata
from alignsam.synthetic.scenes import METADATA, WRITER, Scene, SceneGenerator

__all__ = [
    "CORRUPTIONS",
    "ImageFormat",
    "write_classification",
    "write_folder",
    "write_retrieval",
    "write_segmentation",
    "write_webdataset",
]

ImageFormat = Literal["jpg", "png"]

CORRUPTIONS: tuple[str, ...] = ("truncated_image", "not_an_image", "missing_caption", "bad_json")
"""Ways `write_webdataset(corrupt=...)` damages a sample, as real crawls do: a JPEG cut short, an HTML error
page saved as `.jpg`, no `.txt` member, a `.json` cut short. Readers must skip and count them."""

MANIFEST = "synth.json"
_MTIME = 1_600_000_000  # fixed tar member time (2020-09-13), so shards are byte-identical across runs
_URL = "https://synthetic.alignsam.invalid/s{seed}/{index:012d}.jpg"  # .invalid: a reserved, unresolvable TLD


# --- shared pieces -------------------------------------------------------------------------------------------


def _prepare(out: str | Path, overwrite: bool, start: int, image: tuple[str, int], **counts: int) -> Path:
    """Check a writer's arguments (`start` >= 0, each of `counts` >= 1, `image` = (format, quality)), then
    create the output folder, which must be new or empty unless `overwrite`."""
    for name, value in counts.items():
        _check_count(name, value)
    _check_count("start", start, 0)
    _check_image_args(*image)
    root = Path(out)
    if root.exists() and not root.is_dir():
        raise InputError(f"output '{root}' exists and is not a folder; choose another path.")
    if root.is_dir() and any(root.iterdir()) and not overwrite:
        raise InputError(
            f"output folder '{root}' is not empty; choose a new folder, or pass overwrite=True (--overwrite) "
            "to write over files of the same names."
        )
    root.mkdir(parents=True, exist_ok=True)
    return root


def _check_count(name: str, value: int, low: int = 1) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise InputError(f"{name}={value!r}: give an integer >= {low}.")


def _encode(image: np.ndarray, image_format: ImageFormat, quality: int) -> bytes:
    buffer = io.BytesIO()
    pil = Image.fromarray(image)
    if image_format == "jpg":
        pil.save(buffer, format="JPEG", quality=quality)
    elif image_format == "png":
        pil.save(buffer, format="PNG", compress_level=6)
    else:
        raise InputError(f"image_format={image_format!r}; use 'jpg' or 'png'.")
    return buffer.getvalue()


def _check_image_args(image_format: str, quality: int) -> None:
    if image_format not in ("jpg", "png"):
        raise InputError(f"image_format={image_format!r}; use 'jpg' or 'png'.")
    if not isinstance(quality, int) or not 1 <= quality <= 100:
        raise InputError(f"quality={quality!r}; JPEG quality is an integer in 1..100.")


def _scenes(generator: SceneGenerator, start: int, num: int, desc: str, progress: bool) -> Iterator[Scene]:
    for index in tqdm(range(start, start + num), desc=desc, unit="scene", file=sys.stderr, disable=not progress):
        yield generator.scene(index)


def _manifest(root: Path, layout: str, generator: SceneGenerator, start: int, report: dict[str, Any]) -> dict[str, Any]:
    manifest = {
        "layout": layout,
        "alignsam_version": __version__,
        "seed": generator.seed,
        "start": start,
        "config": generator.config.to_dict(),
        **report,
    }
    (root / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return {"out": str(root), **manifest}


def _object_rows(scene: Scene, masks: bool) -> list[dict[str, Any]]:
    rows = []
    for obj in scene.objects:
        row = obj.to_dict()
        if masks:
            row["segmentation"] = encode_rle(obj.mask)
        rows.append(row)
    return rows


def _pair_record(scene: Scene, generator: SceneGenerator, key: str) -> dict[str, Any]:
    """img2dataset's per-sample fields, COYO's metadata columns and the ground truth, in one flat record."""
    h, w = scene.image.shape[:2]
    return {
        "key": key,
        "url": _URL.format(seed=scene.seed, index=scene.index),
        "caption": scene.caption,
        "status": "success",
        "error_message": None,
        "width": w,
        "height": h,
        "original_width": w,
        "original_height": h,
        **coyo_metadata(scene, generator.rng(scene.index, METADATA)),
        "clean_caption": scene.clean_caption,
        "noise": scene.noise,
        "background": scene.background,
        "seed": scene.seed,
        "index": scene.index,
        "num_objects": len(scene.objects),
        "labels": "; ".join(scene.labels),
    }


_TABLE_SCHEMA: list[tuple[str, str]] = [  # (column, pyarrow type)
    ("key", "string"),
    ("url", "string"),
    ("caption", "string"),
    ("status", "string"),
    ("error_message", "string"),
    ("width", "int32"),
    ("height", "int32"),
    ("original_width", "int32"),
    ("original_height", "int32"),
    ("clip_similarity_vitb32", "float64"),
    ("clip_similarity_vitl14", "float64"),
    ("watermark_score", "float64"),
    ("aesthetic_score_laion_v2", "float64"),
    ("nsfw_score_opennsfw2", "float64"),
    ("nsfw_score_gantman", "float64"),
    ("num_faces", "int32"),
    ("text_length", "int32"),
    ("word_count", "int32"),
    ("image_phash", "string"),
    ("clean_caption", "string"),
    ("noise", "string"),
    ("background", "string"),
    ("seed", "int64"),
    ("index", "int64"),
    ("num_objects", "int32"),
    ("labels", "string"),
    ("objects", "string"),
]


def _write_table(
    rows: list[dict[str, Any]], path: Path, *, before: tuple[str, ...] = (), after: tuple[str, ...] = ()
) -> None:
    """A parquet file of `rows` with a fixed schema (img2dataset + COYO + ground truth, and extra string columns)."""
    pa = require("pyarrow", "data", "Writing parquet tables")
    pq = require("pyarrow.parquet", "data", "Writing parquet tables")
    columns = [(name, "string") for name in before] + _TABLE_SCHEMA + [(name, "string") for name in after]
    schema = pa.schema([(name, getattr(pa, kind)()) for name, kind in columns])
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)


def _tar_add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), _MTIME, 0o644
    tar.addfile(info, io.BytesIO(data))


# --- webdataset ----------------------------------------------------------------------------------------------


def _corruption(generator: SceneGenerator, index: int, share: float) -> str | None:
    rng = generator.rng(index, WRITER)
    if rng.random() >= share:
        return None
    return CORRUPTIONS[int(rng.integers(len(CORRUPTIONS)))]


def _members(
    scene: Scene, record: dict[str, Any], image_format: ImageFormat, quality: int, damage: str | None
) -> list[tuple[str, bytes]]:
    """The tar members of one sample (`KEY.jpg`, `KEY.txt`, `KEY.json`), damaged as `damage` says."""
    key = record["key"]
    image = _encode(scene.image, image_format, quality)
    meta = json.dumps(record).encode()
    if damage == "truncated_image":
        image = image[: len(image) // 3]
    elif damage == "not_an_image":
        image = b"<html><head><title>404 Not Found</title></head><body>Not Found</body></html>\n"
    elif damage == "bad_json":
        meta = meta[: len(meta) // 2]
    members = [(f"{key}.{image_format}", image), (f"{key}.txt", scene.caption.encode()), (f"{key}.json", meta)]
    return [m for m in members if not (damage == "missing_caption" and m[0].endswith(".txt"))]


def write_webdataset(
    generator: SceneGenerator,
    out: str | Path,
    *,
    num: int,
    start: int = 0,
    shard_size: int = 1000,
    image_format: ImageFormat = "jpg",
    quality: int = 90,
    corrupt: float = 0.0,
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Scenes `start..start+num-1` as webdataset shards, the way img2dataset writes them.

    Writes `00000.tar`, `00001.tar`, ... each holding `shard_size` samples as `KEY.jpg` (or `.png`),
    `KEY.txt` (the emitted caption, maybe noisy) and `KEY.json`; KEY is the 5-digit shard number and the
    4-digit index within the shard ("000120042"). The json holds img2dataset's fields (`url`, `caption`,
    `key`, `status`, `error_message`, `width`, `height`, `original_width`, `original_height`), COYO's metadata
    columns (`metadata.COYO_COLUMNS`) and the ground truth (`clean_caption`, `noise`, `background`,
    `objects` with COCO RLE `segmentation`). Beside each tar: `00000.parquet` (one row per sample, objects
    as a JSON string, plus a `corruption` column) and `00000_stats.json` (img2dataset's counters; no timings).

    Args:
        corrupt: share of samples damaged on purpose (kinds in `CORRUPTIONS`), for testing readers that
            must skip them; the report and `synth.json` list the damaged keys.
    """
    _check_count("num", num)
    _check_count("shard_size", shard_size)
    if shard_size > 10_000:
        raise InputError(f"shard_size={shard_size}: keys hold a 4-digit index within a shard, so use at most 10000.")
    if not 0.0 <= corrupt <= 1.0:
        raise InputError(f"corrupt={corrupt}: give a share in 0..1.")
    shards = (num + shard_size - 1) // shard_size
    if shards > 100_000:
        raise InputError(f"{shards} shards do not fit 5-digit shard numbers; raise shard_size.")
    root = _prepare(out, overwrite, start, (image_format, quality))

    noise: Counter[str] = Counter()
    corrupted: dict[str, str] = {}
    scenes = _scenes(generator, start, num, "webdataset", progress)
    for shard in range(shards):
        count = min(shard_size, num - shard * shard_size)
        rows = []
        with tarfile.open(root / f"{shard:05d}.tar", "w", format=tarfile.USTAR_FORMAT) as tar:
            for i in range(count):
                scene = next(scenes)
                key = f"{shard:05d}{i:04d}"
                record = _pair_record(scene, generator, key)
                record["objects"] = _object_rows(scene, masks=True)
                damage = _corruption(generator, scene.index, corrupt) if corrupt > 0 else None
                for name, data in _members(scene, record, image_format, quality, damage):
                    _tar_add(tar, name, data)
                if damage is not None:
                    corrupted[key] = damage
                noise[scene.noise] += 1
                rows.append({**record, "objects": json.dumps(record["objects"]), "corruption": damage})
        _write_table(rows, root / f"{shard:05d}.parquet", after=("corruption",))
        stats = {
            "count": count,
            "successes": count,
            "failed_to_download": 0,
            "failed_to_resize": 0,
            "status_dict": {"success": count},
            "corrupt": sum(1 for r in rows if r["corruption"] is not None),
        }
        (root / f"{shard:05d}_stats.json").write_text(json.dumps(stats, indent=4) + "\n")
    report = {
        "samples": num,
        "shards": shards,
        "shard_size": shard_size,
        "pattern": f"{{00000..{shards - 1:05d}}}.tar",
        "noise": {k: noise[k] for k in ("none", "wrong", "truncated", "unrelated")},
        "corrupt": {"count": len(corrupted), "keys": corrupted},
    }
    return _manifest(root, "webdataset", generator, start, report)


# --- folder + csv/parquet ------------------------------------------------------------------------------------


def write_folder(
    generator: SceneGenerator,
    out: str | Path,
    *,
    num: int,
    start: int = 0,
    image_format: ImageFormat = "jpg",
    quality: int = 90,
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Scenes `start..start+num-1` as `images/00000000.jpg`, ... and a table of them in two formats.

    `captions.csv` and `captions.parquet` hold one row per image: `image` (path relative to `out`),
    `caption` (emitted, maybe noisy), img2dataset's fields, COYO's metadata columns, and the ground truth
    (`clean_caption`, `noise`, `labels` as "red circle; blue star", `objects` as a JSON string).
    """
    root = _prepare(out, overwrite, start, (image_format, quality), num=num)
    (root / "images").mkdir(exist_ok=True)
    rows = []
    noise: Counter[str] = Counter()
    for k, scene in enumerate(_scenes(generator, start, num, "folder", progress)):
        name = f"images/{k:08d}.{image_format}"
        (root / name).write_bytes(_encode(scene.image, image_format, quality))
        record = _pair_record(scene, generator, f"{k:08d}")
        rows.append({"image": name, **record, "objects": json.dumps(_object_rows(scene, masks=False))})
        noise[scene.noise] += 1
    _write_table(rows, root / "captions.parquet", before=("image",))
    columns = ["image", "caption", *[c for c in rows[0] if c not in ("image", "caption")]]
    with open(root / "captions.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    report = {
        "samples": num,
        "images": "images/",
        "table": ["captions.csv", "captions.parquet"],
        "noise": {k: noise[k] for k in ("none", "wrong", "truncated", "unrelated")},
    }
    return _manifest(root, "folder", generator, start, report)


# --- zero-shot classification --------------------------------------------------------------------------------


def write_classification(
    generator: SceneGenerator,
    out: str | Path,
    *,
    per_class: int,
    start: int = 0,
    image_format: ImageFormat = "jpg",
    quality: int = 90,
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """A folder-per-class set of single-object scenes: `out/<colour> <shape>/00000.jpg`, ...

    Classes are `generator.config.classes` ("red circle", ...), listed in that order in `classes.txt`.
    Image j of class c is scene `start + j * n_classes + c` with that one object forced, so the set is
    balanced and uses the index range `start .. start + per_class * n_classes - 1`.
    """
    root = _prepare(out, overwrite, start, (image_format, quality), per_class=per_class)
    cfg = generator.config
    pairs = [(shape, colour) for colour in cfg.colours for shape in cfg.shapes]  # the order of cfg.classes
    total = per_class * len(pairs)
    bar = tqdm(total=total, desc="classification", unit="scene", file=sys.stderr, disable=not progress)
    for c, (shape, colour) in enumerate(pairs):
        folder = root / f"{colour} {shape}"
        folder.mkdir(exist_ok=True)
        for j in range(per_class):
            scene = generator.scene(start + j * len(pairs) + c, objects=[(shape, colour)])
            (folder / f"{j:05d}.{image_format}").write_bytes(_encode(scene.image, image_format, quality))
            bar.update()
    bar.close()
    (root / "classes.txt").write_text("".join(f"{name}\n" for name in cfg.classes))
    report = {"classes": len(pairs), "per_class": per_class, "images": total, "class_names": "classes.txt"}
    return _manifest(root, "classification", generator, start, report)


# --- retrieval (COCO captions) -------------------------------------------------------------------------------


def write_retrieval(
    generator: SceneGenerator,
    out: str | Path,
    *,
    num: int,
    start: int = 0,
    captions_per_image: int = 5,
    image_format: ImageFormat = "jpg",
    quality: int = 90,
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Scenes as an image<->text retrieval set in the COCO captions layout.

    Writes `images/00000000.jpg`, ... and `captions.json`:
    `{"info": ..., "images": [{"id", "file_name", "width", "height", "seed", "index", "labels"}],
    "annotations": [{"id", "image_id", "caption"}]}` with `captions_per_image` different clean captions per
    image (`file_name` is relative to `images/`). Use a generator with `min_objects >= 2` for the standard
    multi-object protocol; captions are never noisy here.
    """
    root = _prepare(out, overwrite, start, (image_format, quality), num=num, captions_per_image=captions_per_image)
    (root / "images").mkdir(exist_ok=True)
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    for k, scene in enumerate(_scenes(generator, start, num, "retrieval", progress)):
        name = f"{k:08d}.{image_format}"
        (root / "images" / name).write_bytes(_encode(scene.image, image_format, quality))
        h, w = scene.image.shape[:2]
        images.append(
            {"id": k, "file_name": name, "width": w, "height": h, "seed": scene.seed, "index": scene.index}
            | {"labels": scene.labels}
        )
        for caption in generator.clean_captions(scene, captions_per_image):
            annotations.append({"id": len(annotations), "image_id": k, "caption": caption})
    info = {"description": "alignsam synthetic retrieval set", "version": __version__, "seed": generator.seed}
    document = {"info": info, "images": images, "annotations": annotations}
    (root / "captions.json").write_text(json.dumps(document) + "\n")
    report = {
        "images": num,
        "captions": len(annotations),
        "captions_per_image": captions_per_image,
        "captions_file": "captions.json",
        "image_root": "images/",
    }
    return _manifest(root, "retrieval", generator, start, report)


# --- segmentation (COCO instances) ---------------------------------------------------------------------------


def write_segmentation(
    generator: SceneGenerator,
    out: str | Path,
    *,
    num: int,
    start: int = 0,
    image_format: ImageFormat = "png",
    quality: int = 95,
    mask_pngs: bool = False,
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Scenes with instance masks in the COCO instances layout.

    Writes `images/00000000.png`, ... and `annotations.json` with `images` (plus each scene's clean caption),
    `categories` (one per shape, ids from 1 in config order, supercategory "shape") and `annotations`:
    `{"id", "image_id", "category_id", "segmentation": {"size": [H, W], "counts": str} (compressed RLE),
    "area", "bbox": [x, y, w, h], "iscrowd": 0, "attributes": {"colour", "size", "position", "rgb", "label"}}`.
    PNG is the default so that object edges are exactly as rendered. With `mask_pngs`, also
    `masks/00000000_00.png` ... (0/255, one per object in annotation order).
    """
    root = _prepare(out, overwrite, start, (image_format, quality), num=num)
    (root / "images").mkdir(exist_ok=True)
    if mask_pngs:
        (root / "masks").mkdir(exist_ok=True)
    cfg = generator.config
    category = {shape: i + 1 for i, shape in enumerate(cfg.shapes)}
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    for k, scene in enumerate(_scenes(generator, start, num, "segmentation", progress)):
        name = f"{k:08d}.{image_format}"
        (root / "images" / name).write_bytes(_encode(scene.image, image_format, quality))
        h, w = scene.image.shape[:2]
        images.append(
            {"id": k, "file_name": name, "width": w, "height": h, "seed": scene.seed, "index": scene.index}
            | {"background": scene.background, "caption": scene.clean_caption}
        )
        for j, obj in enumerate(scene.objects):
            x0, y0, x1, y1 = obj.bbox
            attributes = {"colour": obj.colour, "size": obj.size, "position": obj.position, "rgb": list(obj.rgb)}
            annotations.append(
                {
                    "id": len(annotations) + 1,  # COCO ids start at 1 (0 reads as "none" in some tools)
                    "image_id": k,
                    "category_id": category[obj.shape],
                    "segmentation": encode_rle(obj.mask),
                    "area": obj.area,
                    "bbox": [x0, y0, x1 - x0, y1 - y0],
                    "iscrowd": 0,
                    "attributes": attributes | {"label": obj.label},
                }
            )
            if mask_pngs:
                Image.fromarray(obj.mask.astype(np.uint8) * 255).save(root / "masks" / f"{k:08d}_{j:02d}.png")
    document = {
        "info": {"description": "alignsam synthetic segmentation set", "version": __version__, "seed": generator.seed},
        "images": images,
        "annotations": annotations,
        "categories": [{"id": i, "name": s, "supercategory": "shape"} for s, i in category.items()],
        "colours": list(cfg.colours),
    }
    (root / "annotations.json").write_text(json.dumps(document) + "\n")
    report = {
        "images": num,
        "objects": len(annotations),
        "annotations_file": "annotations.json",
        "image_root": "images/",
        "mask_pngs": "masks/" if mask_pngs else None,
    }
    return _manifest(root, "segmentation", generator, start, report)
