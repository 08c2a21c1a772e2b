"""Activation functions by the names checkpoints' configs use."""

from __future__ import annotations

from torch import nn

_ACTIVATIONS: dict[str, type[nn.Module]] = {
    "gelu": nn.GELU,  # exact (erf) GELU, as BERT and SAM use
    "relu": nn.ReLU,
    "silu": nn.SiLU,
    "swish": nn.SiLU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
}


def get_activation(name: str) -> nn.Module:
    """A fresh activation module for `name` (case-insensitive)."""
    try:
        return _ACTIVATIONS[name.lower()]()
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; known: {sorted(_ACTIVATIONS)}") from None


def known_activation(name: object) -> bool:
    """Whether `name` is an activation's name (False for anything that is not a string, as a config may hold)."""
    return isinstance(name, str) and name.lower() in _ACTIVATIONS
