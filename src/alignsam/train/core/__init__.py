"""The training core that ALIGN training and SAM fine-tuning share: checkpoints that resume exactly,
the learning-rate schedule as a pure function, and metrics with progress."""
