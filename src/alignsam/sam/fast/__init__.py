"""SAM's fast paths: twins of `alignsam.sam.modeling` modules that give the same numbers with less work,
and `prepare_sam`, which swaps them in."""

from alignsam.sam.fast.prepare import prepare_sam

__all__ = ["prepare_sam"]
