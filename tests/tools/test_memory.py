"""Huge images within bounded memory: automatic masks, mask labels and find keep masks as RLEs and bring at
most a few masks to full size at a time (docs/tools.md, "Memory"). The bound: the model, plus
`BYTES_PER_PIXEL` bytes per image pixel, plus the kept masks' run lengths."""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from alignsam.io.images import BYTES_PER_PIXEL, DEFAULT_MAX_PIXELS, IMAGE_MEMORY
from alignsam.sam import SamModel
from alignsam.sam.automatic import SamAutomaticMaskGenerator
from alignsam.synthetic import SceneConfig, SceneGenerator
from alignsam.tools.mask_labels import MAX_CROP_SIDE, CropStyle, prepare_crop
from alignsam.tools.masks import Mask, automatic_masks, overlay

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def big_scene(tmp_path_factory) -> Path:
    """A synthetic scene scaled to 6000 x 6000 and saved as JPEG (objects of a few thousand pixels a side)."""
    scene = SceneGenerator(SceneConfig(image_size=256), seed=4)[0]
    path = tmp_path_factory.mktemp("big") / "big.jpg"
    Image.fromarray(scene.image).resize((6000, 6000), Image.Resampling.BILINEAR).save(path, quality=90)
    return path


def _peak_of(command: list[str], limit_gb: float) -> tuple[int, int, str]:
    """Run `alignsam COMMAND` in a fresh interpreter whose data segment is capped at `limit_gb`; returns the
    exit code, the peak resident memory above the interpreter's after loading the model (bytes), stderr."""
    limit = int(limit_gb * 2**30)
    code = textwrap.dedent(
        f"""
        import resource, sys
        import numpy as np
        from alignsam.cli import main
        from alignsam.io.images import BYTES_PER_PIXEL, DEFAULT_MAX_PIXELS, IMAGE_MEMORY
        from alignsam.sam import SamModel
        SamModel.from_pretrained("demo")  # the libraries and the model, before the image
        main(["masks", "--sam-model", "demo", "-q", "-o", sys.argv[1] + ".small.json", sys.argv[2]])
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        resource.setrlimit(resource.RLIMIT_DATA, ({limit}, {limit}))
        code = main({command!r})
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        print(code, peak - base)
        """
    )
    small = Path(command[command.index("-o") + 1]).with_suffix(".png")
    Image.fromarray(np.full((64, 64, 3), 90, np.uint8)).save(small)
    done = subprocess.run(
        [sys.executable, "-c", code, str(small.with_suffix("")), str(small)], capture_output=True, text=True, cwd=ROOT
    )
    if done.returncode != 0 or not done.stdout.strip():
        return done.returncode or 1, 0, done.stderr[-2000:]
    rc, grown = (int(v) for v in done.stdout.split()[-2:])
    return rc, grown, done.stderr[-2000:]


def test_masks_on_a_6000_pixel_image_within_the_bound(big_scene, tmp_path):
    """`alignsam masks` with the demo SAM and an overlay on a 36 Mpx JPEG: within BYTES_PER_PIXEL of the
    image, under a 2.5 GB data limit (the full-size masks held together used to take 13 GB)."""
    out = tmp_path / "masks.json"
    command = ["masks", str(big_scene), "--sam-model", "demo", "-q", "-o", str(out), "--points-per-side", "4"]
    rc, grown, err = _peak_of([*command, "--overlay-dir", str(tmp_path / "ov")], limit_gb=2.5)
    assert rc == 0, err
    pixels = 6000 * 6000
    assert grown <= BYTES_PER_PIXEL * pixels, f"{grown / pixels:.1f} bytes a pixel"
    record = json.loads(out.read_text())["images"][0]
    assert record["image"]["width"] == 6000 and record["annotations"]
    assert (tmp_path / "ov" / "big.png").is_file()


@pytest.fixture(scope="module")
def largest_scene(tmp_path_factory) -> tuple[Path, int]:
    """The synthetic scene at the largest square size the pixel guard admits (13376 x 13376, 179 Mpx)."""
    side = int(DEFAULT_MAX_PIXELS**0.5)
    scene = SceneGenerator(SceneConfig(image_size=256), seed=4)[0]
    path = tmp_path_factory.mktemp("largest") / "largest.jpg"
    Image.fromarray(scene.image).resize((side, side), Image.Resampling.BILINEAR).save(path, quality=90)
    return path, side


@pytest.mark.slow
@pytest.mark.parametrize(
    "extra",
    [
        pytest.param([], id="masks"),
        # the same streamed masks behind two more commands: the extended tier (scripts/test.sh --extended)
        pytest.param(["--model", "demo", "--text", "a red star"], id="find", marks=pytest.mark.extended),
        pytest.param(
            ["--model", "demo", "--labels", "a star", "a circle"], id="label-masks", marks=pytest.mark.extended
        ),
    ],
)
def test_the_largest_admitted_image_within_the_bound(largest_scene, extra, tmp_path):
    """masks, find and label-masks on the largest image the guard admits stay within BYTES_PER_PIXEL a
    pixel besides the model (measured: 13.4 to 13.5 bytes a pixel, 2.4 GB above the loaded model; docs/tools.md)."""
    path, side = largest_scene
    command = {0: "masks", 4: "find"}.get(len(extra), "label-masks")
    out = tmp_path / "out.json"
    argv = [command, str(path), *extra, "--sam-model", "demo", "-q", "-o", str(out), "--points-per-side", "4"]
    rc, grown, err = _peak_of([*argv, "--overlay-dir", str(tmp_path / "ov")], limit_gb=IMAGE_MEMORY / 2**30 + 2)
    assert rc == 0, err
    assert grown <= BYTES_PER_PIXEL * side * side, f"{grown / side**2:.1f} bytes a pixel"
    assert json.loads(out.read_text())["images"][0]["image"]["width"] == side


def test_streamed_generation_equals_holding_every_mask(sample_photo):
    """Bringing masks to full size a few at a time gives the records the whole-batch computation gives."""
    import alignsam.sam.automatic as automatic

    model = SamModel.from_pretrained("demo")
    image = sample_photo[:300, :260]
    options = {"points_per_side": 6, "pred_iou_thresh": 0.0, "stability_score_thresh": 0.5, "min_mask_region_area": 30}
    whole = SamAutomaticMaskGenerator(model, **options).generate(image)
    saved = automatic.FULL_SIZE_BYTES
    try:
        automatic.FULL_SIZE_BYTES = 1  # one mask at a time
        streamed = SamAutomaticMaskGenerator(model, **options).generate(image)
    finally:
        automatic.FULL_SIZE_BYTES = saved
    assert len(whole) == len(streamed) > 0
    for a, b in zip(whole, streamed, strict=True):
        assert np.array_equal(a["segmentation"], b["segmentation"]) and a["bbox"] == b["bbox"]
        assert a["stability_score"] == pytest.approx(b["stability_score"])


def test_masks_keep_run_lengths_and_decode_on_demand(sample_photo):
    model = SamModel.from_pretrained("demo")
    generator = SamAutomaticMaskGenerator(model, points_per_side=4, pred_iou_thresh=0, stability_score_thresh=0)
    masks = automatic_masks(generator, sample_photo[:200, :240])
    assert masks and all(isinstance(m.rle["counts"], list) for m in masks)
    for m in masks:
        pixels = m.mask
        again = Mask(pixels, m.predicted_iou)
        assert pixels.shape == (200, 240) and again.area == m.area == pixels.sum() and again.bbox == m.bbox
        assert again.annotation(0)["segmentation"] == m.annotation(0)["segmentation"]
    drawn = overlay(sample_photo[:200, :240], masks, [f"m{i}" for i in range(len(masks))])
    same = overlay(sample_photo[:200, :240], [m.mask for m in masks], [f"m{i}" for i in range(len(masks))])
    assert np.array_equal(np.asarray(drawn), np.asarray(same))


def test_large_crops_are_made_at_the_capped_size():
    """A mask covering most of a large image gives a crop of MAX_CROP_SIDE, not a copy several times larger,
    and the object still fills the same part of it."""
    image = np.zeros((5000, 4000, 3), np.uint8)
    image[1000:4000, 500:3500] = (200, 40, 40)
    mask = np.zeros((5000, 4000), bool)
    mask[1000:4000, 500:3500] = True
    crop = np.asarray(prepare_crop(image, mask, CropStyle(context=1.2)))
    assert crop.shape == (MAX_CROP_SIDE, MAX_CROP_SIDE, 3)
    red = (crop == (200, 40, 40)).all(-1)
    side = red.any(0).sum()
    assert abs(side / MAX_CROP_SIDE - 1 / 1.2) < 0.01  # the object spans 1/context of the square
    small = np.asarray(prepare_crop(image[::10, ::10], mask[::10, ::10], CropStyle(context=1.2)))
    assert small.shape == (360, 360, 3)  # below the cap: the exact square, as before
    assert resource.RLIMIT_DATA  # the limit the subprocess test uses exists on this platform


def test_the_guard_is_set_from_the_bound():
    assert DEFAULT_MAX_PIXELS * BYTES_PER_PIXEL <= IMAGE_MEMORY == 4 << 30
    assert DEFAULT_MAX_PIXELS == 178_956_970
