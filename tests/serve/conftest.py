"""Fixtures for the service's tests: the bundled demo models, synthetic scenes whose true masks are known,
an in-process client (FastAPI's TestClient) and a real uvicorn server on a free 127.0.0.1 port."""

from __future__ import annotations

import base64
import contextlib
import io
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi", reason="alignsam[serve] is not installed")

from alignsam.serve import Service
from alignsam.synthetic import SceneConfig, SceneGenerator

SCENES = SceneConfig(image_size=128)
HELD_OUT_SEED = 4  # the demo models never saw these scenes


def png_bytes(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def scene(index: int) -> Any:
    return SceneGenerator(SCENES, seed=HELD_OUT_SEED)[index]


def inside_point(mask: np.ndarray) -> tuple[float, float]:
    """A point well inside a mask: the mask pixel farthest from its border (a few erosions)."""
    from scipy import ndimage

    depth = ndimage.distance_transform_edt(mask)
    y, x = np.unravel_index(int(depth.argmax()), mask.shape)
    return float(x) + 0.5, float(y) + 0.5


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 0.0


@pytest.fixture(scope="session")
def demo_service() -> Iterator[Service]:
    service = Service("demo", "demo")
    yield service
    service.close()


@pytest.fixture(scope="session")
def client(demo_service: Service) -> Iterator[Any]:
    from fastapi.testclient import TestClient

    from alignsam.serve.app import create_app

    with TestClient(create_app(demo_service)) as c:
        yield c


@contextlib.contextmanager
def running_server(service: Service, **config: Any) -> Iterator[str]:
    """A real uvicorn server for `service` on a free 127.0.0.1 port, in a thread; yields its URL."""
    from alignsam.serve.app import bind, make_server

    sock = bind("127.0.0.1", 0)
    port = sock.getsockname()[1]
    server = make_server(service)
    for key, value in config.items():
        setattr(server.config, key, value)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        sock.close()


@pytest.fixture(scope="session")
def scene_files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Held-out scenes 200..211 as PNG files (the index of the search tests)."""
    out = tmp_path_factory.mktemp("scenes")
    for i in range(200, 212):
        Image.fromarray(scene(i).image).save(out / f"scene_{i}.png")
    return out
