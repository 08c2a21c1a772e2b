"""Speed paths of InternImage: the fused DCNv3 sampling core."""

from alignsam.internimage.fast.dcnv3 import dcnv3_fast, sampling_plan

__all__ = ["dcnv3_fast", "sampling_plan"]
