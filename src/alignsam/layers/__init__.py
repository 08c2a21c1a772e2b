"""Small building blocks shared by the ALIGN and SAM towers."""

from alignsam.layers.activations import get_activation, known_activation
from alignsam.layers.attention import AttentionImpl, attention, merge_heads, set_attention_impl, split_heads
from alignsam.layers.drop import DropPath
from alignsam.layers.grad import needs_grad
from alignsam.layers.norm import LayerNorm2d
from alignsam.layers.share import shallow_copy

__all__ = [
    "AttentionImpl",
    "DropPath",
    "LayerNorm2d",
    "attention",
    "get_activation",
    "known_activation",
    "merge_heads",
    "needs_grad",
    "set_attention_impl",
    "shallow_copy",
    "split_heads",
]
