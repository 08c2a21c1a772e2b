"""SAM speed: alignsam's vit_b beside transformers' `SamModel` on the same weights, in one process.

Measures, with interleaved repetitions (medians, and the ratio transformers / alignsam):
- `set_image`: preprocessing (resize to 1024, normalise, pad) plus the image encoder; also alignsam's bf16
  autocast option, with the IoU of its masks to the fp32 masks for a grid of point prompts;
- per-prompt `predict`: one foreground point, three masks, post-processed to the original image size;
- the automatic mask generator's seconds per image beside the official `SamAutomaticMaskGenerator`
  (medians and the ratio official / alignsam), on a separate pair of models with the same weights: the
  model's architecture, randomised so that masks are image regions (`make_masks_follow_the_image_`).
  Official defaults (32 x 32 points; 4 x 4 in quick mode) except the thresholds of `AMG_THRESHOLDS`,
  lowered because random weights pass no mask at the defaults. The official generator's NMS is alignsam's
  vectorised one (the same kept boxes) instead of the test stand-in's pure-Python loop.

    python -m benchmarks.sam_speed            # vit_b, some 8 minutes on 2 cores (half of it the official AMG)
    python -m benchmarks.sam_speed --quick    # a tiny model, seconds (what the test suite runs)

Importable: `run(quick=True)` returns the figures as a dict. transformers and segment-anything are needed
for the comparisons (test-only dependencies of alignsam); without them only alignsam is timed.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch

from alignsam.fast import FastPath
from alignsam.sam import SamAutomaticMaskGenerator, SamConfig, SamModel, SamPredictor
from alignsam.sam.amg import batched_nms
from tests.sam.sam_testing import AMG_THRESHOLDS, import_official, region_masks_pair

QUICK_VISION = {
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "image_size": 256,
    "global_attn_indexes": [1],
    "mlp_dim": 128,
}


def _image() -> np.ndarray:
    try:
        from skimage import data

        return data.coffee()  # 400 x 600 photograph
    except ImportError:  # pragma: no cover - scikit-image is a test dependency
        return np.random.default_rng(0).integers(0, 256, (400, 600, 3), dtype=np.uint8)


def _median_times(fns: dict[str, Callable[[], Any]], reps: int) -> dict[str, float]:
    """Run each function once to warm up, then `reps` interleaved rounds (order alternating); medians in s."""
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    names = list(fns)
    for r in range(reps):
        for name in names if r % 2 == 0 else names[::-1]:
            start = time.perf_counter()
            fns[name]()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def _hf_model(quick: bool, directory: str) -> Any:
    from transformers import SamConfig
    from transformers import SamModel as HFSamModel

    config = SamConfig(vision_config=QUICK_VISION, prompt_encoder_config={"image_size": 256}) if quick else SamConfig()
    torch.manual_seed(0)
    model = HFSamModel(config).eval()
    model.save_pretrained(directory)
    return model


def run(quick: bool = False, reps: int | None = None, amg: bool = True, threads: int | None = None) -> dict[str, Any]:
    """Time both implementations; returns {"machine", "set_image", "predict", "amg"} figures in seconds.

    `threads` sets `torch.set_num_threads` for the run (both implementations alike) and restores it after.
    """
    previous_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        return _run(quick, reps or (2 if quick else 5), amg)
    finally:
        torch.set_num_threads(previous_threads)


def _run(quick: bool, reps: int, amg: bool) -> dict[str, Any]:
    image = _image()
    h, w = image.shape[:2]
    point = np.array([[w * 0.5, h * 0.5]])
    results: dict[str, Any] = {
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "quick": quick,
            "image": f"{h}x{w}",
        }
    }
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            hf = _hf_model(quick, tmp)
        except ImportError:
            hf = None
        if hf is not None:
            ours = SamModel.from_pretrained(tmp)
        else:  # pragma: no cover
            from alignsam.sam import sam_vit_b

            ours = SamModel.from_config(sam_vit_b()).eval()
    predictor = SamPredictor(ours)
    bf16 = SamPredictor(ours, fast=FastPath(precision="bf16"))
    size = ours.config.image_size

    set_image: dict[str, Callable[[], Any]] = {
        "alignsam": lambda: predictor.set_image(image),
        "alignsam bf16": lambda: bf16.set_image(image),
    }
    predict: dict[str, Callable[[], Any]] = {
        "alignsam": lambda: predictor.predict(point_coords=point, point_labels=np.array([1]))
    }
    if hf is not None:
        from transformers import SamImageProcessorPil, SamProcessor

        processor = SamProcessor(
            image_processor=SamImageProcessorPil(size={"longest_edge": size}, pad_size={"height": size, "width": size})
        )
        state: dict[str, Any] = {}

        @torch.no_grad()
        def hf_set_image() -> None:
            inputs = processor(images=image, return_tensors="pt")
            state["embedding"] = hf.get_image_embeddings(inputs["pixel_values"])
            state["sizes"] = (inputs["original_sizes"], inputs["reshaped_input_sizes"])

        @torch.no_grad()
        def hf_predict() -> Any:
            original, reshaped = state["sizes"]
            scale = reshaped[0].double() / original[0].double()  # (h, w) scale of the resize
            coords = torch.as_tensor(point, dtype=torch.float64) * scale.flip(0)
            out = hf(
                image_embeddings=state["embedding"],
                input_points=coords[None, None],
                input_labels=torch.ones(1, 1, 1, dtype=torch.int),
                multimask_output=True,
            )
            masks = processor.post_process_masks(out.pred_masks, original, reshaped)
            return masks[0].numpy(), out.iou_scores.numpy()

        set_image["transformers"] = hf_set_image
        predict["transformers"] = hf_predict

    torch.set_grad_enabled(False)
    try:
        results["set_image"] = _median_times(set_image, reps)
        predictor.set_image(image)
        bf16.set_image(image)
        results["bf16_mask_iou"] = _mask_iou(predictor, bf16, h, w)
        if hf is not None:
            hf_set_image()
        results["predict"] = _median_times(predict, reps * 4)
        if amg:
            results["amg"] = _amg(ours, image, {"points_per_side": 4 if quick else 32, **AMG_THRESHOLDS}, reps)
    finally:
        torch.set_grad_enabled(True)
    for key in ("set_image", "predict"):
        if "transformers" in results[key]:
            results[key]["ratio_transformers_over_alignsam"] = results[key]["transformers"] / results[key]["alignsam"]
    if "transformers" in results["set_image"]:
        row = results["set_image"]
        row["ratio_transformers_over_alignsam_bf16"] = row["transformers"] / row["alignsam bf16"]
    return results


def _amg_models(config: SamConfig) -> tuple[Any, Any, SamModel] | None:
    """The official package, its `Sam` for `config` with randomised weights whose masks are image regions,
    and alignsam's model with the same weights; None without the official package."""
    try:
        official = import_official()
    except ImportError:
        return None
    reference, ours = region_masks_pair(config)
    return official, reference, ours


@contextmanager
def _official_fast_nms() -> Iterator[None]:
    """Within: the official generator calls alignsam's vectorised `batched_nms` (the same kept indices as
    torchvision's; tests/sam/test_amg_utils.py), not the torchvision stand-in's pure-Python loop."""
    module: Any = sys.modules.get("segment_anything.automatic_mask_generator")
    if module is None:
        yield
        return
    saved = module.batched_nms
    module.batched_nms = batched_nms
    try:
        yield
    finally:
        module.batched_nms = saved


def _amg(fallback: SamModel, image: np.ndarray, params: dict[str, Any], reps: int) -> dict[str, Any]:
    """Seconds per image of both generators (a warm-up each, then `reps // 4` interleaved rounds: one in the
    full run, where a call takes from half a minute to two), their mask
    counts and whether they kept the same boxes; alignsam's alone on `fallback` without the official package."""
    models = _amg_models(fallback.config)
    generators: dict[str, Any] = {"alignsam": SamAutomaticMaskGenerator(models[2] if models else fallback, **params)}
    if models is not None:
        official, reference, _ = models
        generators["official"] = official.SamAutomaticMaskGenerator(reference, **params)
    outputs: dict[str, list[dict[str, Any]]] = {}

    def generate(name: str) -> Callable[[], None]:
        return lambda: outputs.__setitem__(name, generators[name].generate(image))

    with _official_fast_nms():
        row: dict[str, Any] = _median_times({name: generate(name) for name in generators}, max(1, reps // 4))
    if "official" in row:
        row["ratio_official_over_alignsam"] = row["official"] / row["alignsam"]
    row["points"] = generators["alignsam"].point_grids[0].shape[0]
    row["masks"] = {name: len(masks) for name, masks in outputs.items()}
    row["params"] = params
    if "official" in outputs:
        ours, theirs = outputs["alignsam"], outputs["official"]
        row["same_masks"] = len(ours) == len(theirs) and all(
            a["bbox"] == b["bbox"] for a, b in zip(ours, theirs, strict=True)
        )
    return row


def _mask_iou(fp32: SamPredictor, bf16: SamPredictor, h: int, w: int, side: int = 4) -> dict[str, float]:
    """IoU of the bf16 predictor's masks to the fp32 ones: a side x side grid of one-point prompts, three masks
    each (both predictors have their image set). With random weights (the suite's) masks are arbitrary
    shapes with many pixels near the threshold, so this is a lower bound of what trained weights give."""
    ious = []
    for y in (np.arange(side) + 0.5) * h / side:
        for x in (np.arange(side) + 0.5) * w / side:
            kwargs = {"point_coords": np.array([[x, y]]), "point_labels": np.array([1])}
            a, _, _ = fp32.predict(**kwargs)
            b, _, _ = bf16.predict(**kwargs)
            for ma, mb in zip(a, b, strict=True):
                union = np.logical_or(ma, mb).sum()
                ious.append(1.0 if union == 0 else float(np.logical_and(ma, mb).sum() / union))
    return {"min": min(ious), "median": float(np.median(ious)), "masks": len(ious)}


def _report(results: dict[str, Any]) -> str:
    lines = [f"machine: {results['machine']}"]
    for key in ("set_image", "predict"):
        row = results[key]
        text = "  ".join(f"{k} {v * 1000:.1f} ms" for k, v in row.items() if not k.startswith("ratio"))
        ratio = row.get("ratio_transformers_over_alignsam")
        lines.append(f"{key:10s} {text}" + (f"  (transformers / alignsam = {ratio:.2f})" if ratio else ""))
    if "amg" in results:
        a = results["amg"]
        text = "  ".join(f"{k} {a[k]:.2f} s" for k in ("alignsam", "official") if k in a) + " per image"
        if "official" in a:
            text += f"  (official / alignsam = {a['ratio_official_over_alignsam']:.2f})"
        masks = ", ".join(f"{k} {n}" for k, n in a["masks"].items())
        same = f", same boxes: {'yes' if a['same_masks'] else 'no'}" if "same_masks" in a else ""
        lines.append(f"amg        {text}  {a['points']} points, masks: {masks}{same}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a tiny model and few repetitions")
    parser.add_argument("--reps", type=int, default=None, help="timed repetitions per implementation")
    parser.add_argument("--no-amg", action="store_true", help="skip the automatic mask generator")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args(argv)
    results = run(quick=args.quick, reps=args.reps, amg=not args.no_amg, threads=args.threads)
    print(_report(results))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
