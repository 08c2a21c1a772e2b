"""Fixtures of the SAM tests: the official package (behind a torchvision stand-in) and a test photograph."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from tests.sam.sam_testing import import_official


@pytest.fixture(scope="session")
def official() -> Any:
    """The official `segment_anything` package (test-only oracle)."""
    return import_official()


@pytest.fixture(scope="session")
def photo() -> np.ndarray:
    """A real, non-square photograph: scikit-image's coffee cup, 400 x 600 RGB uint8."""
    from skimage import data

    return data.coffee()
