"""The training program for ALIGN: contrastive training on noisy image-text pairs (`alignsam train`).

    from alignsam.train import DataConfig, ModelSpec, TrainConfig, train
    summary = train(TrainConfig(out="runs/demo", data=DataConfig("shards/{00000..00099}.tar"),
                                model=ModelSpec(arch="align-demo"), steps=3000, batch_size=128))

See docs/training.md for the recipe, the data layouts, the filters and the demonstration model.
"""

from alignsam.train.config import DataConfig, ModelSpec, OptimConfig, TrainConfig
from alignsam.train.data import FilterConfig
from alignsam.train.distributed import GlobalBatchNorm2d, World, convert_sync_batchnorm
from alignsam.train.lamb import Lamb
from alignsam.train.models import ARCHITECTURES, align_demo, align_small
from alignsam.train.schedule import learning_rate
from alignsam.train.trainer import DualEncoder, Trainer, contrastive_step, train
from alignsam.train.vocab import train_wordpiece

__all__ = [
    "ARCHITECTURES",
    "DataConfig",
    "DualEncoder",
    "FilterConfig",
    "GlobalBatchNorm2d",
    "Lamb",
    "ModelSpec",
    "OptimConfig",
    "TrainConfig",
    "Trainer",
    "World",
    "align_demo",
    "align_small",
    "contrastive_step",
    "convert_sync_batchnorm",
    "learning_rate",
    "train",
    "train_wordpiece",
]
