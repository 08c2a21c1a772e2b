"""Shared fixtures: small local checkpoints and sample images (nothing is downloaded)."""

from __future__ import annotations

import os

import pytest
import torch

# Tests never reach the hub; a missing model must fail fast with our own message.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(autouse=True)
def _deterministic() -> None:
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def sample_photo():
    """A real photograph (scikit-image's astronaut, 512x512 RGB) as a uint8 array."""
    from skimage import data

    return data.astronaut()
