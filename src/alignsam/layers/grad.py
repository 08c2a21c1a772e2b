"""Whether autograd needs a tensor: the test every inference-only shortcut of the project makes."""

from __future__ import annotations

import torch


def needs_grad(*tensors: torch.Tensor) -> bool:
    """Whether autograd will need these tensors as they are (so they must not be overwritten, and only
    operations with a backward formula may use them)."""
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)
