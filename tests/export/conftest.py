"""Models and exports shared by the ONNX tests. Each export is made once per session (the dynamo exporter
takes seconds even for tiny models); the backend's cache lives in a temporary folder."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from alignsam.sam import SamModel
from alignsam.synthetic import SceneConfig, SceneGenerator
from tests.sam.sam_testing import randomize_, tiny_config

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

HELD_OUT_SEED = 4  # the demo SAM was trained on seed 3 (tests/finetune/test_demo.py)


@pytest.fixture(scope="session", autouse=True)
def onnx_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The onnxruntime backend exports into a temporary cache, not the user's."""
    folder = tmp_path_factory.mktemp("alignsam-cache")
    previous = os.environ.get("ALIGNSAM_CACHE")
    os.environ["ALIGNSAM_CACHE"] = str(folder)
    yield folder
    if previous is None:
        os.environ.pop("ALIGNSAM_CACHE", None)
    else:
        os.environ["ALIGNSAM_CACHE"] = previous


@pytest.fixture(scope="session")
def tiny_sam() -> SamModel:
    """A small SAM (256 px, 64-wide decoder) with every weight random (`randomize_`)."""
    return randomize_(SamModel.from_config(tiny_config()), 0).eval()


@pytest.fixture(scope="session")
def demo_sam() -> SamModel:
    """The bundled demo SAM (128 px input, 128 x 16 x 16 embedding, 64 x 64 mask input)."""
    return SamModel.from_pretrained("demo")


@pytest.fixture(scope="session")
def sams(tiny_sam: SamModel, demo_sam: SamModel) -> dict[str, SamModel]:
    return {"tiny": tiny_sam, "demo": demo_sam}


@pytest.fixture(scope="session")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """`exported(part, model, **options)`: the file of that export, made on first request."""
    from alignsam.export import to_onnx

    made: dict[tuple[Any, ...], Path] = {}

    def export(part: str, model: Any, **options: Any) -> Path:
        key = (part, id(model), tuple(sorted(options.items(), key=lambda kv: kv[0])))
        if key not in made:
            folder = tmp_path_factory.mktemp(part)
            made[key] = to_onnx(part, model, folder, **options).model
        return made[key]

    return export


def ort_session(path: Path) -> Any:
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


@pytest.fixture(scope="session")
def held_out() -> SceneGenerator:
    return SceneGenerator(SceneConfig(image_size=128), seed=HELD_OUT_SEED)


def landscape(image: np.ndarray, size: tuple[int, int] = (180, 135)) -> np.ndarray:
    """`image` resized to `size` (w, h): a non-square original, so the decoder's crop and resize matter."""
    return np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BILINEAR))


def random_embedding(model: SamModel, seed: int = 0) -> torch.Tensor:
    cfg = model.config
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(1, cfg.prompt_encoder.embed_dim, cfg.embedding_size, cfg.embedding_size, generator=gen)
