"""kill -9 at random points: nothing lost, nothing duplicated, nothing half-written.

`train` and `finetune-sam` are killed while they run (at a checkpoint chosen at random, after a random
delay: often in the middle of writing the next one) and resumed with `--resume`: the result is bit for bit
the uninterrupted run's, every step is in metrics.jsonl once, and no temporary file is left. `masks` is
killed midway through a folder and run again: every file the killed run left is whole, and the second run's
result equals an uninterrupted run's. Real processes; each case twice, with different delays."""

from __future__ import annotations

import json
import random
import signal
import time
from pathlib import Path

import pytest
import torch

from alignsam.synthetic import SceneConfig, SceneGenerator, write_folder, write_segmentation
from alignsam.train.core.checkpoint import list_checkpoints
from tests.reliability.conftest import AMG_ARGS, alignsam_process, image_array, scene_folder, wait_for
from tests.train.align.conftest import tiny_config
from tests.train.sam.conftest import small_config

STEPS = 20


def finetune_argv(data_root: Path, out: Path, steps: int = STEPS) -> list[str]:
    """A small SAM fine-tuned on 8 scenes (written under `data_root` once), a checkpoint every step."""
    data, arch = data_root / "seg", data_root / "sam.json"
    if not data.is_dir():
        generator = SceneGenerator(SceneConfig(image_size=64, max_objects=3), seed=3)
        write_segmentation(generator, data, num=8, progress=False)
        arch.write_text(json.dumps(small_config().to_dict()))
    return [
        "finetune-sam", "--arch", str(arch), "--train-data", str(data), "--out", str(out), "--steps", str(steps),
        "--batch-size", "2", "--threads", "1", "--workers", "0", "--save-every", "1", "--log-every", "1", "-q",
    ]  # fmt: skip


def train_argv(data_root: Path, out: Path, steps: int = STEPS) -> list[str]:
    """A tiny ALIGN trained on 40 pairs (written under `data_root` once), its vocabulary learnt, a
    checkpoint every step."""
    data, arch = data_root / "pairs", data_root / "align.json"
    if not data.is_dir():
        write_folder(SceneGenerator(SceneConfig(image_size=32, noise=0.3), seed=1), data, num=40, progress=False)
        arch.write_text(json.dumps(tiny_config().to_dict()))
    return [
        "train", "--train-data", str(data / "captions.csv"), "--arch", str(arch), "--out", str(out),
        "--vocab-size", "300", "--steps", str(steps), "--batch-size", "8", "--workers", "0", "--no-progress",
        "--image-size", "32", "--threads", "1", "--save-every", "1", "--log-every", "1",
    ]  # fmt: skip


ARGV = {"train": train_argv, "finetune-sam": finetune_argv}


def _run(argv: list[str], timeout: float = 120) -> None:
    process = alignsam_process(*argv)
    _, err = process.communicate(timeout=timeout)
    assert process.returncode == 0, err


def _newest_step(out: Path) -> int:
    found = list_checkpoints(out)
    return int(found[-1].stem.split("-")[1]) if found else 0


def _kill_midway(argv: list[str], out: Path, rng: random.Random) -> int:
    """Start the run, wait for the checkpoint of a step chosen at random (1 to STEPS - 10) and a random
    delay, kill -9. Returns the newest checkpoint's step when it was killed."""
    target = rng.randint(1, STEPS - 10)
    process = alignsam_process(*argv)
    wait_for(lambda: _newest_step(out) >= target or process.poll() is not None, timeout=120, poll=0.01)
    time.sleep(rng.uniform(0.0, 0.05))
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=30)
    assert process.returncode == -signal.SIGKILL, "finished before the kill: raise STEPS"
    return _newest_step(out)


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(folder / "model" / "model.safetensors"))


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Each trainer's run, start to end without a stop."""
    root = tmp_path_factory.mktemp("straight")
    runs = {}
    for name, argv in ARGV.items():
        runs[name] = root / name
        _run(argv(root, runs[name]))
    return runs


SEEDS = [1, pytest.param(2, marks=pytest.mark.slow)]  # the repeat with other delays: the slow tier


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("trainer", ["train", "finetune-sam"])
def test_a_killed_training_resumes_to_the_same_result(trainer, seed, uninterrupted, tmp_path):
    out = tmp_path / "run"
    argv = ARGV[trainer](tmp_path, out)
    _kill_midway(argv, out, random.Random(seed * 7919 + len(trainer)))
    _run([*argv, "--resume"])
    straight, resumed = _weights(uninterrupted[trainer]), _weights(out)
    assert straight.keys() == resumed.keys()
    for name, value in straight.items():
        assert torch.equal(value, resumed[name]), name  # bit for bit
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, STEPS + 1))  # each step once, none lost
    assert not [p for p in out.rglob("*") if p.name.endswith(".partial")]


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return scene_folder(tmp_path_factory, "folder", 16, 128, 4, 9, "s{:02d}.png")


@pytest.fixture(scope="module")
def masks_reference(folder: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("masks") / "out.json"
    _run(["masks", str(folder), *AMG_ARGS, "-o", str(out)])
    return json.loads(out.read_text())


@pytest.mark.parametrize("seed", SEEDS)
def test_a_killed_masks_run_leaves_whole_files_and_reruns_complete(seed, folder, masks_reference, tmp_path):
    rng = random.Random(seed)
    out, ov = tmp_path / "out.json", tmp_path / "ov"
    argv = ["masks", str(folder), *AMG_ARGS, "--overlay-dir", str(ov), "-o", str(out)]
    process = alignsam_process(*argv)
    target = rng.randint(1, 8)
    wait_for(
        lambda: (ov.is_dir() and len(list(ov.glob("*.png"))) >= target) or process.poll() is not None,
        timeout=120,
        poll=0.01,
    )
    time.sleep(rng.uniform(0.0, 0.2))
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=30)
    assert process.returncode == -signal.SIGKILL, "finished before the kill: use more images"
    for png in ov.glob("*.png"):  # every overlay there is whole
        assert image_array(png).shape[:2] == (128, 128)
    _run(argv)
    result = json.loads(out.read_text())
    assert result["num_images"] == 16 and "interrupted" not in result
    assert [r["annotations"] for r in result["images"]] == [r["annotations"] for r in masks_reference["images"]]
    assert sorted(p.name for p in ov.iterdir()) == [f"s{i:02d}.png" for i in range(16)]  # no leftover, no x-2.png
