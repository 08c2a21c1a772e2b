"""Alias of `segment_anything.utils.transforms`: re-exports `alignsam.sam.transforms.ResizeLongestSide`."""

from alignsam.sam.transforms import ResizeLongestSide

__all__ = ["ResizeLongestSide"]
