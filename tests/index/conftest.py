"""Small generated images, the demo encoder, and running `alignsam` in a real subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[2]


def draw_image(path: Path, seed: int, size: tuple[int, int] | None = None) -> Path:
    """A distinct small image: a coloured background with a few shapes (sizes vary with the seed)."""
    rng = np.random.default_rng(seed)
    width, height = size or (int(rng.integers(48, 160)), int(rng.integers(48, 160)))
    image = Image.new("RGB", (width, height), tuple(int(v) for v in rng.integers(0, 256, 3)))
    draw = ImageDraw.Draw(image)
    for _ in range(3):
        x0, y0 = int(rng.integers(0, width - 8)), int(rng.integers(0, height - 8))
        x1, y1 = x0 + int(rng.integers(8, width)), y0 + int(rng.integers(8, height))
        box = (x0, y0, x1, y1)
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=colour)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path


def make_images(folder: Path, count: int, start: int = 0, sub: str = "") -> list[Path]:
    return [draw_image(folder / sub / f"img_{i:03d}.png", seed=i) for i in range(start, start + count)]


@pytest.fixture(scope="session")
def encoder():
    from alignsam.tools.encoder import Encoder

    return Encoder.from_pretrained("demo", batch_size=4, workers=2)


def cli_env() -> dict[str, str]:
    path = os.pathsep.join([str(ROOT / "src"), str(ROOT), os.environ.get("PYTHONPATH", "")])
    return {**os.environ, "PYTHONPATH": path, "HF_HUB_OFFLINE": "1", "ALIGNSAM_CACHE": "off", "OMP_NUM_THREADS": "1"}


def start_cli(*argv: str) -> subprocess.Popen[str]:
    """`python -m alignsam ARGV` in a real subprocess (stdout and stderr captured)."""
    return subprocess.Popen(
        [sys.executable, "-m", "alignsam", *argv],
        env=cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def run_cli(*argv: str, timeout: float = 120) -> tuple[int, str, str]:
    proc = start_cli(*argv)
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err
