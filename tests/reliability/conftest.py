"""Fixtures of the fault tests: a small real disk that fills (a tmpfs the test mounts, skipped with the
reason when it cannot), a full disk simulated at the write layer (everywhere), small image folders."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from alignsam.synthetic import SceneConfig, SceneGenerator

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Callable[[str], Path]]:
    """`small_disk("2m")`: a tmpfs of that size mounted for the test (`mount -t tmpfs -o size=2m`) and
    unmounted after it; the test is skipped, with the reason, when mounting is not allowed (not root, no
    CAP_SYS_ADMIN, not Linux)."""
    mounted: list[Path] = []

    def mount(size: str) -> Path:
        where = tmp_path / f"disk{len(mounted)}"
        where.mkdir()
        try:
            done = subprocess.run(
                ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                capture_output=True, text=True, timeout=20,
            )  # fmt: skip
        except (OSError, subprocess.TimeoutExpired) as err:
            pytest.skip(f"cannot mount a tmpfs: {err}")
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs: {done.stderr.strip() or done.returncode}")
        mounted.append(where)
        return where

    try:
        yield mount
    finally:
        for where in mounted:
            subprocess.run(["umount", "-l", str(where)], capture_output=True, timeout=20)


@pytest.fixture
def full_folder(monkeypatch: pytest.MonkeyPatch) -> Callable[[Path], None]:
    """Simulate a full disk under `folder` in this process, for writers that do not go through the atomic
    writes: every file opened for writing there fails with ENOSPC on its first write."""
    import builtins
    import io

    real = builtins.open

    def install(folder: Path) -> None:
        def fake_open(file: object, mode: str = "r", *args: object, **kwargs: object) -> object:
            handle = real(file, mode, *args, **kwargs)  # type: ignore[call-overload]
            writing = any(m in mode for m in "wax+") and isinstance(file, (str, os.PathLike))
            if writing and Path(os.fspath(file)).resolve().is_relative_to(folder.resolve()):  # type: ignore[arg-type]
                handle.close()
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), os.fspath(file))  # type: ignore[arg-type]
            return handle

        monkeypatch.setattr(builtins, "open", fake_open)
        monkeypatch.setattr(io, "open", fake_open)

    return install


def fill(disk: Path, leave: int = 0) -> Path:
    """Fill `disk` with one file until fewer than `leave` bytes (rounded to 4 KiB pages) are left."""
    filler = disk / "filler"
    with open(filler, "wb") as f:
        free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
        try:
            f.write(b"\0" * max(free - leave, 0))
            f.flush()
        except OSError as err:
            assert err.errno == errno.ENOSPC
    return filler


@pytest.fixture
def no_space(monkeypatch: pytest.MonkeyPatch) -> Callable[[str], None]:
    """Simulate a full disk in this process: `no_space(".png")` makes every atomic write (the rename of a
    `.partial` file into place) of a name ending in the suffix fail with ENOSPC, as a full disk fails it."""
    real = os.replace

    def install(suffix: str = "") -> None:
        def replace(src: os.PathLike[str] | str, dst: os.PathLike[str] | str, *args: object, **kwargs: object) -> None:
            if str(src).endswith(".partial") and str(dst).endswith(suffix):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(src))
            real(src, dst, *args, **kwargs)  # type: ignore[arg-type]

        monkeypatch.setattr(os, "replace", replace)

    return install


AMG_ARGS = ["--sam-model", "demo", "--points-per-side", "8", "--threads", "1", "-q"]
"""The automatic-mask options of the commands these tests start: the demo SAM, a coarse grid, one thread."""


def scene_folder(
    factory: pytest.TempPathFactory, name: str, count: int, size: int, max_objects: int, seed: int, pattern: str
) -> Path:
    """A new folder of `count` synthetic scenes of `size` px, saved as PNG under `pattern.format(i)`."""
    folder = factory.mktemp(name)
    generator = SceneGenerator(SceneConfig(image_size=size, max_objects=max_objects), seed=seed)
    for i in range(count):
        Image.fromarray(generator[i].image).save(folder / pattern.format(i))
    return folder


def wait_for(condition: Callable[[], bool], timeout: float = 60.0, poll: float = 0.05) -> None:
    """Return once `condition()` holds; fail the test after `timeout` seconds."""
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, "timed out waiting for the process"
        time.sleep(poll)


@pytest.fixture(scope="session")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of six 96 x 96 synthetic scenes (PNG)."""
    return scene_folder(tmp_path_factory, "photos", 6, 96, 3, 11, "p{}.png")


def alignsam_process(*argv: str, **kwargs: object) -> subprocess.Popen[str]:
    """`python -m alignsam ARGV` in a fresh process running this checkout's code."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}
    return subprocess.Popen(
        [sys.executable, "-m", "alignsam", *argv], cwd=ROOT, env=env, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kwargs,  # type: ignore[call-overload]
    )  # fmt: skip


def image_array(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im)
