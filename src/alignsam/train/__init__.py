"""The training programs, apart from the library they train (`alignsam.align`, `alignsam.sam`):

- `alignsam.train.core`: what both loops share (checkpoints that resume exactly, the learning-rate schedule,
  metrics and progress);
- `alignsam.train.align`: ALIGN's contrastive training on noisy image-text pairs (`alignsam train`);
- `alignsam.train.sam`: fine-tuning Segment Anything on images with instance masks (`alignsam finetune-sam`).

The library never imports this package (an import-linter contract in CI).
"""
