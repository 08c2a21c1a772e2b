"""`alignsam synth LAYOUT OUT`: write the synthetic noisy image-text data set in one of its layouts.

Layouts: `webdataset` (img2dataset-style tar shards), `folder` (images + captions.csv/.parquet),
`classification` (folder per "<colour> <shape>"), `retrieval` (COCO captions, 5 per image), `segmentation`
(COCO instances with RLE masks); and `speed`, which measures rendering speed instead of writing anything.
Everything depends only on the options and `--seed`, so a set can be regenerated exactly: `synth.json` in
the output folder records them, and `--config OUT/synth.json` reuses its scene configuration.
"""

from __future__ import annotations

import argparse
from typing import Any

from alignsam.cli import _common as c
from alignsam.cli._common import count


def _names(text: str) -> tuple[str, ...]:
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    if not names:
        raise argparse.ArgumentTypeError(f"expected a comma-separated list of names, got {text!r}")
    return names


def _share(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a share between 0 and 1, got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a share between 0 and 1, got {text}")
    return value


def _scene_options() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("scene")
    g.add_argument("--config", metavar="JSON", help="start from this SceneConfig (a synth.json or a config dict)")
    g.add_argument(
        "--size", dest="image_size", metavar="PX", type=count(1), help="image side in pixels, 32..1024 (default 128)"
    )
    g.add_argument(
        "--shapes", metavar="NAMES", type=_names, help="comma-separated shape names (default: the 8 default shapes)"
    )
    g.add_argument(
        "--colours", "--colors", metavar="NAMES", type=_names, help="comma-separated colour names (default: 8 colours)"
    )
    g.add_argument(
        "--backgrounds", metavar="NAMES", type=_names, help="comma-separated background kinds (default: all five)"
    )
    g.add_argument("--max-rotation", metavar="DEG", type=c.real(), help="degrees (default 30)")
    g.add_argument(
        "--max-occlusion", metavar="SHARE", type=c.real(), help="largest hidden share of an object (default 0.25)"
    )
    g.add_argument("--colour-jitter", metavar="LEVELS", type=int, help="RGB jitter of object colours (default 12)")
    g.add_argument("--supersample", metavar="S", type=int, help="anti-aliasing factor 1..4; 1 = hard edges (default 2)")
    return p


def _object_options() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("objects")
    g.add_argument(
        "--min-objects", metavar="N", type=count(1), help="fewest objects per scene (default 1; retrieval 2)"
    )
    g.add_argument("--max-objects", metavar="N", type=count(1), help="most objects per scene (default 4)")
    g.add_argument(
        "--repeat", metavar="P", type=_share, help="chance an object repeats an earlier one's kind (default 0.25)"
    )
    return p


def _noise_options() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("caption noise")
    g.add_argument("--noise", metavar="SHARE", type=_share, help="share of noisy captions, 0..1 (default 0)")
    g.add_argument(
        "--noise-kinds", metavar="KINDS", type=_names, help="from wrong,truncated,unrelated (default: all three)"
    )
    return p


def _output_options(num: int | None, image_format: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("out", help="output folder (created; must be empty unless --overwrite)")
    if num is not None:
        p.add_argument("-n", "--num", type=count(1), default=num, help=f"number of scenes (default {num})")
    p.add_argument("--seed", type=count(0), default=0, help="data set seed (default 0; use another for held-out)")
    p.add_argument("--start", type=count(0), default=0, help="first scene index (default 0)")
    p.add_argument(
        "--format", dest="image_format", choices=("jpg", "png"), default=image_format,
        help=f"image file format (default {image_format})",
    )  # fmt: skip
    p.add_argument("--quality", type=int, default=90, help="JPEG quality 1..100 (default 90)")
    p.add_argument("--overwrite", action="store_true", help="write into a non-empty folder")
    p.add_argument(
        "-q", "--quiet", "--no-progress", dest="no_progress", action="store_true", help="no progress bar on stderr"
    )
    return p


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "synth",
        help="write the synthetic noisy image-text data set (webdataset, folder, classification, ...)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    layouts = parser.add_subparsers(
        dest="layout", metavar="LAYOUT", required=True, help="the data set's layout (each has its own --help)"
    )
    scene, objects, noise = _scene_options(), _object_options(), _noise_options()

    p = layouts.add_parser(
        "webdataset",
        parents=[_output_options(10_000, "jpg"), scene, objects, noise],
        help="tar shards of KEY.jpg/.txt/.json with per-shard parquet and _stats.json (img2dataset layout)",
    )
    p.add_argument(
        "--shard-size", metavar="N", type=count(1), default=1000, help="samples per shard, <= 10000 (default 1000)"
    )
    p.add_argument(
        "--corrupt", metavar="SHARE", type=_share, default=0.0, help="share of samples damaged on purpose (default 0)"
    )
    layouts.add_parser(
        "folder",
        parents=[_output_options(1_000, "jpg"), scene, objects, noise],
        help="images/ + captions.csv + captions.parquet",
    )
    p = layouts.add_parser(
        "classification",
        parents=[_output_options(None, "jpg"), scene],
        help='one folder per "<colour> <shape>" class of single-object scenes',
    )
    p.add_argument("--per-class", metavar="N", type=count(1), default=20, help="images per class (default 20)")
    p = layouts.add_parser(
        "retrieval",
        parents=[_output_options(1_000, "jpg"), scene, objects],
        help="images/ + COCO captions.json with several clean captions per image",
    )
    p.add_argument(
        "--captions-per-image", metavar="N", type=count(1), default=5, help="clean captions per image (default 5)"
    )
    p = layouts.add_parser(
        "segmentation",
        parents=[_output_options(1_000, "png"), scene, objects],
        help="images/ + COCO instances annotations.json (RLE masks, shape categories, colour attributes)",
    )
    p.add_argument("--mask-pngs", action="store_true", help="also write masks/IMAGE_OBJECT.png per object")
    p = layouts.add_parser("speed", parents=[scene, objects, noise], help="measure scenes per second; writes nothing")
    p.add_argument("--sizes", type=_names, default=("64", "128", "256"), help="image sizes (default 64,128,256)")
    p.add_argument("-n", "--num", type=count(1), default=300, help="scenes per size (default 300)")
    parser.set_defaults(run=run)


def _config(args: argparse.Namespace) -> Any:
    import json
    from pathlib import Path

    from alignsam.errors import InputError
    from alignsam.synthetic import SceneConfig

    if args.config:
        path = Path(args.config)
        try:
            values = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            raise InputError(f"cannot read --config '{path}': {err}.") from None
        config = SceneConfig.from_dict(values.get("config", values) if isinstance(values, dict) else values)
    else:
        config = SceneConfig(min_objects=2) if args.layout == "retrieval" else SceneConfig()
    fields = (
        "image_size",
        "shapes",
        "colours",
        "backgrounds",
        "max_rotation",
        "max_occlusion",
        "colour_jitter",
        "supersample",
        "min_objects",
        "max_objects",
        "repeat",
        "noise",
        "noise_kinds",
    )
    changes = {f: getattr(args, f) for f in fields if getattr(args, f, None) is not None}
    if "min_objects" in changes and "max_objects" not in changes:
        changes["max_objects"] = max(config.max_objects, changes["min_objects"])
    if "max_objects" in changes and "min_objects" not in changes:
        changes["min_objects"] = min(config.min_objects, changes["max_objects"])
    if args.layout in ("classification", "retrieval", "segmentation"):
        changes["noise"] = 0.0  # these sets carry clean captions only
    return config.replace(**changes)


def _speed(args: argparse.Namespace, config: Any) -> dict[str, Any]:
    import io
    import time

    from PIL import Image

    from alignsam.errors import InputError
    from alignsam.synthetic import SceneGenerator

    results: dict[str, Any] = {}
    for text in args.sizes:
        if not text.isdigit():
            raise InputError(f"--sizes takes integers, got {text!r}.")
        generator = SceneGenerator(config.replace(image_size=int(text)), seed=0)
        generator.scene(0)  # warm-up (imports, caches)
        t0, c0 = time.perf_counter(), time.process_time()
        scenes = [generator.scene(i) for i in range(1, args.num + 1)]
        t1, c1 = time.perf_counter(), time.process_time()
        for scene in scenes:
            Image.fromarray(scene.image).save(io.BytesIO(), format="JPEG", quality=90)
        t2 = time.perf_counter()
        # CPU time too: on a shared machine it is the steadier measure of what one core can do.
        results[text] = {
            "scenes_per_second": round(args.num / (t1 - t0), 1),
            "scenes_per_cpu_second": round(args.num / (c1 - c0), 1),
            "with_jpeg_per_second": round(args.num / (t2 - t0), 1),
        }
    return {"layout": "speed", "num": args.num, "config": config.to_dict(), "results": results}


def run(args: argparse.Namespace) -> int:
    import json
    import time

    from alignsam.synthetic import (
        SceneGenerator,
        write_classification,
        write_folder,
        write_retrieval,
        write_segmentation,
        write_webdataset,
    )

    config = _config(args)
    if args.layout == "speed":
        print(json.dumps(_speed(args, config), indent=2))
        return 0
    generator = SceneGenerator(config, seed=args.seed)
    common = {
        "start": args.start,
        "image_format": args.image_format,
        "quality": args.quality,
        "overwrite": args.overwrite,
        "progress": not args.no_progress,
    }
    num = getattr(args, "num", 0)
    t0 = time.perf_counter()
    if args.layout == "webdataset":
        report = write_webdataset(
            generator, args.out, num=num, shard_size=args.shard_size, corrupt=args.corrupt, **common
        )
    elif args.layout == "folder":
        report = write_folder(generator, args.out, num=num, **common)
    elif args.layout == "classification":
        report = write_classification(generator, args.out, per_class=args.per_class, **common)
    elif args.layout == "retrieval":
        report = write_retrieval(generator, args.out, num=num, captions_per_image=args.captions_per_image, **common)
    else:
        report = write_segmentation(generator, args.out, num=num, mask_pngs=args.mask_pngs, **common)
    report["seconds"] = round(time.perf_counter() - t0, 2)
    print(json.dumps(report, indent=2))
    return 0
