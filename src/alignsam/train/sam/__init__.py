"""Fine-tuning Segment Anything: the training program (the library's models live in `alignsam.sam`).

    from alignsam.train.sam import FinetuneConfig, finetune
    summary = finetune(FinetuneConfig(
        out="runs/sam-ft", train_data=("data/train/annotations.json",), val_data=("data/val",),
        init="vit_b", freeze=("image_encoder",), cache="disk", steps=2000, lr=1e-4,
    ))

Data: COCO JSON (RLE or polygons) or folders of PNG masks (`data.py`); prompts simulated as in the SAM
paper (`prompts.py`); focal + dice + IoU loss (`losses.py`); frozen-encoder embedding cache (`cache.py`);
the loop (`trainer.py`); evaluation by mean IoU from one point, one box and several points, and automatic
mask recall (`evaluate.py`). The command is `alignsam finetune-sam`; see docs/finetune.md.
"""

from alignsam.train.sam.cache import EmbeddingCache
from alignsam.train.sam.config import FinetuneConfig, LossConfig, PromptConfig
from alignsam.train.sam.data import (
    CocoDataset,
    MaskFolderDataset,
    Sample,
    SampleError,
    SceneDataset,
    open_dataset,
    polygons_to_mask,
)
from alignsam.train.sam.evaluate import automatic_recall, evaluate
from alignsam.train.sam.losses import dice_loss, sam_loss, sigmoid_focal_loss
from alignsam.train.sam.models import ARCHITECTURES, build_model, freeze, sam_demo
from alignsam.train.sam.prompts import error_points, interior_points, jitter_boxes, points_inside
from alignsam.train.sam.trainer import finetune, training_step

__all__ = [
    "ARCHITECTURES",
    "CocoDataset",
    "EmbeddingCache",
    "FinetuneConfig",
    "LossConfig",
    "MaskFolderDataset",
    "PromptConfig",
    "Sample",
    "SampleError",
    "SceneDataset",
    "automatic_recall",
    "build_model",
    "dice_loss",
    "error_points",
    "evaluate",
    "finetune",
    "freeze",
    "interior_points",
    "jitter_boxes",
    "open_dataset",
    "points_inside",
    "polygons_to_mask",
    "sam_demo",
    "sam_loss",
    "sigmoid_focal_loss",
    "training_step",
]
