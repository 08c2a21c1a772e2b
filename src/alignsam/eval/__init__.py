"""Evaluation of image-text models: zero-shot classification and image<->text retrieval (`alignsam eval`).

All embeddings come from `alignsam.tools.Encoder`, so evaluation uses the same preprocessing, batching and
prompt ensembling as the zero-shot tools.
"""

from alignsam.eval.metrics import recall_at_k, topk_accuracy
from alignsam.eval.retrieval import read_captions, retrieval, retrieval_file
from alignsam.eval.synthetic import HELD_OUT_SEED, synthetic_benchmark
from alignsam.eval.zeroshot import read_class_folders, zero_shot_classification, zero_shot_folder

__all__ = [
    "HELD_OUT_SEED",
    "read_captions",
    "read_class_folders",
    "recall_at_k",
    "retrieval",
    "retrieval_file",
    "synthetic_benchmark",
    "topk_accuracy",
    "zero_shot_classification",
    "zero_shot_folder",
]
