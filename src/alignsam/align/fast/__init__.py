"""ALIGN's fast paths: twins of `alignsam.align.modeling` modules that give the same numbers with less work,
and `prepare_align`, which swaps them in."""

from alignsam.align.fast.prepare import prepare_align

__all__ = ["prepare_align"]
