"""The library never imports the reference implementations or optional heavy packages."""

from __future__ import annotations

import subprocess
import sys

import alignsam
import alignsam.sam


def test_public_names() -> None:
    required = {
        "sam_model_registry",
        "SamModel",
        "SamPredictor",
        "SamAutomaticMaskGenerator",
        "mask_to_logits",
        "SamProcessor",
    }
    assert required <= set(alignsam.sam.__all__)
    for name in required:
        assert getattr(alignsam, name) is getattr(alignsam.sam, name)


def test_no_reference_or_optional_imports() -> None:
    code = (
        "import sys, numpy as np, torch\n"
        "from alignsam import SamModel, SamPredictor, SamAutomaticMaskGenerator, sam_model_registry, mask_to_logits\n"
        "from alignsam.sam import ImageEncoderConfig, SamConfig, SamProcessor\n"
        "from alignsam.sam.utils.amg import batched_mask_to_box\n"
        "from alignsam.sam.utils.transforms import ResizeLongestSide\n"
        "cfg = SamConfig(image_encoder=ImageEncoderConfig(image_size=64, embed_dim=32, depth=1, num_heads=2,"
        " mlp_dim=64, global_attn_indexes=(0,)))\n"
        "gen = SamAutomaticMaskGenerator(SamModel.from_config(cfg), points_per_side=2, pred_iou_thresh=0,"
        " stability_score_thresh=0, min_mask_region_area=5, output_mode='coco_rle')\n"
        "gen.generate(np.zeros((20, 30, 3), np.uint8))\n"
        "SamProcessor.from_pretrained('demo')(np.zeros((20, 30, 3), np.uint8), input_points=[[[1, 2]]])\n"
        "bad = [m for m in ('transformers', 'segment_anything', 'torchvision', 'timm', 'cv2', 'pycocotools',"
        " 'scipy', 'skimage') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
