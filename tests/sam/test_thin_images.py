"""Very thin images (1 x 20000, 20000 x 1, 2 x 65000): the resize to SAM's input never reaches zero pixels,
prompts and automatic masks work, and a folder run skips what still fails without losing finished images."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from alignsam import SamModel
from alignsam.sam import SamAutomaticMaskGenerator, SamPredictor
from alignsam.sam.transforms import ResizeLongestSide
from alignsam.tools.pipeline import for_each_image
from tests.tools.test_align_commands import run_subprocess

THIN = [(1, 20000), (20000, 1), (2, 65000), (3, 1)]


@pytest.fixture(scope="module")
def demo_sam():
    return SamModel.from_pretrained("demo")


@pytest.mark.parametrize("shape", THIN)
def test_resize_never_reaches_zero(shape):
    h, w = ResizeLongestSide.get_preprocess_shape(*shape, 1024)
    assert h >= 1 and w >= 1 and max(h, w) == 1024


@pytest.mark.parametrize("shape", THIN)
def test_predictor_on_thin_images(demo_sam, shape):
    image = np.random.default_rng(0).integers(0, 255, (*shape, 3), dtype=np.uint8)
    predictor = SamPredictor(demo_sam)
    predictor.set_image(image)
    masks, scores, _ = predictor.predict(point_coords=np.array([[shape[1] // 2, 0]]), point_labels=np.array([1]))
    assert masks.shape == (3, *shape) and np.isfinite(scores).all()
    masks, _, _ = predictor.predict(box=np.array([0, 0, shape[1] - 1, shape[0] - 1]), multimask_output=False)
    assert masks.shape == (1, *shape)


def test_automatic_masks_on_a_thin_image(demo_sam):
    image = np.random.default_rng(0).integers(0, 255, (2, 5000, 3), dtype=np.uint8)
    records = SamAutomaticMaskGenerator(demo_sam, points_per_side=4, pred_iou_thresh=0).generate(image)
    assert all(r["segmentation"].shape == (2, 5000) for r in records)


def test_folder_run_skips_a_failing_image_and_keeps_the_rest(tmp_path):
    paths = []
    for name in ("a", "b", "c"):
        Image.new("RGB", (8, 8), "red").save(tmp_path / f"{name}.png")
        paths.append(tmp_path / f"{name}.png")

    def work(path, image):
        if path.stem == "b":
            raise ValueError("height and width must be > 0")  # what PIL said of a zero-pixel resize
        return [], [], None

    run = for_each_image(paths, work)
    assert [r["image"]["file_name"] for r in run.records] == [str(paths[0]), str(paths[2])]
    assert run.errors == [{"image": str(paths[1]), "error": "ValueError: height and width must be > 0"}]


@pytest.fixture(scope="module")
def thin_folder(tmp_path_factory):
    out = tmp_path_factory.mktemp("thin")
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(out / "a.png")
    Image.fromarray(rng.integers(0, 255, (1, 20000, 3), dtype=np.uint8)).save(out / "b_thin.png")
    Image.fromarray(rng.integers(0, 255, (48, 80, 3), dtype=np.uint8)).save(out / "c.png")
    return out


@pytest.mark.parametrize("command", ["masks", "find"])
def test_cli_over_a_folder_with_a_thin_image(thin_folder, tmp_path, command):
    extra = ["--text", "a red thing", "--model", "demo"] if command == "find" else []
    code, out, err = run_subprocess(
        command, str(thin_folder), "--sam-model", "demo", "--points-per-side", "4", *extra,
        "--overlay-dir", str(tmp_path), "-q",
    )  # fmt: skip
    assert code == 0 and "Traceback" not in err, err[-2000:]
    assert out is not None and out["num_images"] == 3 and out["errors"] == [], out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "b_thin.png", "c.png"]


def test_internimage_processor_on_a_thin_image_resizes_only_the_crop():
    """1 x 20000 at 224 would be a 224 x 4.5 million intermediate image (3 GB); only the crop is made. Run
    under an address-space limit 500 MB above the subprocess's size after imports."""
    import subprocess
    import sys

    script = (
        "import resource\n"
        "import numpy as np\n"
        "from PIL import Image\n"
        "from alignsam.internimage.processing import InternImageProcessor\n"
        "vm = int(next(l for l in open('/proc/self/status') if l.startswith('VmSize')).split()[1]) * 1024\n"
        "resource.setrlimit(resource.RLIMIT_AS, (vm + 500 * 2**20, resource.RLIM_INFINITY))\n"
        "pixels = InternImageProcessor(224).preprocess(Image.new('RGB', (20000, 1), 'blue'))\n"
        "assert pixels.shape == (3, 224, 224) and np.isfinite(pixels).all()\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
