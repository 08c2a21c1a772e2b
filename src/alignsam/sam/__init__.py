"""Segment Anything (SAM) in plain PyTorch, exact to the official and Hugging Face checkpoints.

from alignsam import SamPredictor, sam_model_registry

sam = sam_model_registry["vit_b"](checkpoint="sam_vit_b_01ec64.pth")   # or SamModel.from_pretrained(...)
predictor = SamPredictor(sam)
predictor.set_image(image)                                            # H x W x 3 uint8 RGB
masks, scores, logits = predictor.predict(point_coords=[[500, 375]], point_labels=[1])
"""

from alignsam.sam.automatic import AmgConfig, SamAutomaticMaskGenerator
from alignsam.sam.build import build_sam, build_sam_vit_b, build_sam_vit_h, build_sam_vit_l, sam_model_registry
from alignsam.sam.modeling.config import (
    SAM_PRESETS,
    ImageEncoderConfig,
    MaskDecoderConfig,
    PromptEncoderConfig,
    SamConfig,
    sam_vit_b,
    sam_vit_h,
    sam_vit_l,
)
from alignsam.sam.modeling.image_encoder import ImageEncoderViT
from alignsam.sam.modeling.mask_decoder import MaskDecoder
from alignsam.sam.modeling.prompt_encoder import PromptEncoder
from alignsam.sam.modeling.sam import SamModel, SamOutput, SamSegmentationOutput
from alignsam.sam.modeling.transformer import TwoWayTransformer
from alignsam.sam.predictor import Prediction, SamPredictor
from alignsam.sam.processing import SamImageProcessor, SamProcessor
from alignsam.sam.prompts import mask_to_logits
from alignsam.sam.transforms import ResizeLongestSide

__all__ = [
    "SAM_PRESETS",
    "AmgConfig",
    "ImageEncoderConfig",
    "ImageEncoderViT",
    "MaskDecoder",
    "MaskDecoderConfig",
    "Prediction",
    "PromptEncoder",
    "PromptEncoderConfig",
    "ResizeLongestSide",
    "SamAutomaticMaskGenerator",
    "SamConfig",
    "SamImageProcessor",
    "SamModel",
    "SamOutput",
    "SamPredictor",
    "SamProcessor",
    "SamSegmentationOutput",
    "TwoWayTransformer",
    "build_sam",
    "build_sam_vit_b",
    "build_sam_vit_h",
    "build_sam_vit_l",
    "mask_to_logits",
    "sam_model_registry",
    "sam_vit_b",
    "sam_vit_h",
    "sam_vit_l",
]
