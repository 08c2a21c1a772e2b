"""The training program for ALIGN: contrastive training on noisy image-text pairs (`alignsam train`).

    from alignsam.train.align import DataConfig, ModelSpec, TrainConfig, train
    summary = train(TrainConfig(out="runs/demo", data=DataConfig("shards/{00000..00099}.tar"),
                                model=ModelSpec(arch="align-demo"), steps=3000, batch_size=128))

See docs/training.md for the recipe, the data layouts, the filters and the demonstration model.
"""

from alignsam.train.align.config import DataConfig, ModelSpec, OptimConfig, TrainConfig
from alignsam.train.align.data import FilterConfig
from alignsam.train.align.distributed import GlobalBatchNorm2d, World, convert_sync_batchnorm
from alignsam.train.align.lamb import Lamb
from alignsam.train.align.models import ARCHITECTURES, align_demo, align_small
from alignsam.train.align.trainer import DualEncoder, Trainer, contrastive_step, train
from alignsam.train.align.vocab import train_wordpiece
from alignsam.train.core.schedule import learning_rate

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
