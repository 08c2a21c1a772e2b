"""A full disk: every command ends with the same one line (`alignsam CMD: error: No space left on device
writing 'PATH'.`), exit 1, no traceback; no result is lost silently and nothing written before is damaged.

Each case runs twice: on a real small disk (a tmpfs the test mounts; skipped with the reason when it
cannot) and with the disk's failure simulated at the write layer in this process (runs everywhere)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest

from alignsam.cli import main
from alignsam.synthetic import SceneConfig, SceneGenerator, write_folder, write_segmentation
from alignsam.train.core.checkpoint import list_checkpoints, load_checkpoint
from tests.reliability.conftest import fill
from tests.train.align.conftest import tiny_config
from tests.train.sam.conftest import small_config

FULL = re.compile(r"^alignsam ([\w-]+): error: .*No space left on device writing '[^']+'")
COMMANDS = ["masks", "label-masks", "find", "segment", "train", "finetune-sam", "export", "synth"]
MASKS = ["--sam-model", "demo", "-q", "--points-per-side", "4"]


def _one_line_error(err: str, command: str) -> str:
    """The error line of `err` (stderr); asserts it is the full-disk line of `command` and that there is
    no traceback."""
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if ": error: " in line]
    assert len(lines) == 1, err
    match = FULL.match(lines[0])
    assert match and match.group(1) == command, err
    return lines[0]


@pytest.fixture(scope="module")
def table(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """40 image-caption pairs (images/ + captions.csv) and a tiny ALIGN architecture beside them."""
    out = tmp_path_factory.mktemp("table")
    write_folder(SceneGenerator(SceneConfig(image_size=32, noise=0.3), seed=1), out / "data", num=40, progress=False)
    (out / "arch.json").write_text(json.dumps(tiny_config().to_dict()))
    return out


@pytest.fixture(scope="module")
def scenes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """8 segmentation scenes of 64 px (COCO layout) and a small SAM architecture beside them."""
    out = tmp_path_factory.mktemp("scenes")
    generator = SceneGenerator(SceneConfig(image_size=64, max_objects=3), seed=3)
    write_segmentation(generator, out / "data", num=8, progress=False)
    (out / "arch.json").write_text(json.dumps(small_config().to_dict()))
    return out


def _train(table: Path, out: Path, steps: int, *extra: str) -> list[str]:
    return [
        "train", "--train-data", str(table / "data" / "captions.csv"), "--arch", str(table / "arch.json"),
        "--out", str(out), "--vocab-size", "300", "--steps", str(steps), "--batch-size", "8", "--workers", "0",
        "--no-progress", "--image-size", "32", "--threads", "1", *extra,
    ]  # fmt: skip


def _finetune(scenes: Path, out: Path, steps: int, *extra: str) -> list[str]:
    return [
        "finetune-sam", "--arch", str(scenes / "arch.json"), "--train-data", str(scenes / "data"), "--out", str(out),
        "--steps", str(steps), "--batch-size", "2", "--threads", "1", "--workers", "0", "-q", *extra,
    ]  # fmt: skip


# --- masks: a failed overlay loses no masks ----------------------------------------------------------------


def test_masks_keep_every_images_masks_when_overlays_cannot_be_written(photos, tmp_path, no_space, capsys):
    """Overlays that cannot be written used to drop their images' masks from the result, exit 0."""
    no_space(".png")
    out = tmp_path / "masks.json"
    code = main(["masks", str(photos), *MASKS, "--overlay-dir", str(tmp_path / "ov"), "-o", str(out)])
    err = capsys.readouterr().err
    assert code == 1
    line = _one_line_error(err, "masks")
    assert "6 output file(s) could not be written" in line
    result = json.loads(out.read_text())
    assert result["num_images"] == 6 and all(r["annotations"] for r in result["images"])
    assert not any("overlay" in r for r in result["images"]) and result["errors"] == []
    assert sorted(Path(f["image"]).name for f in result["failed_writes"]) == [f"p{i}.png" for i in range(6)]
    assert not list((tmp_path / "ov").iterdir())  # no half-written or temporary file left


def test_masks_on_a_real_full_disk_keep_the_earlier_result_whole(photos, small_disk, capsys):
    disk = small_disk("2m")
    out, ov = disk / "masks.json", disk / "ov"
    assert main(["masks", str(photos), *MASKS, "--overlay-dir", str(ov), "-o", str(out)]) == 0
    first = json.loads(out.read_text())
    before = {p.name: p.read_bytes() for p in [out, *ov.iterdir()]}
    capsys.readouterr()
    fill(disk)
    code = main(["masks", str(photos), *MASKS, "--overlay-dir", str(ov), "-o", str(out)])
    captured = capsys.readouterr()
    assert code == 1
    _one_line_error(captured.err, "masks")
    assert json.loads(captured.out)["num_images"] == 6  # the result went to stdout, whole
    assert json.loads(captured.out)["images"][0]["annotations"] == first["images"][0]["annotations"]
    assert {p.name: p.read_bytes() for p in [out, *ov.iterdir()]} == before  # nothing earlier damaged
    assert not [p for p in disk.rglob("*") if p.name.endswith(".partial")]


# --- every command: one line -------------------------------------------------------------------------------


def _commands(photos: Path, table: Path, scenes: Path, out: Path) -> dict[str, list[str]]:
    photo = str(photos / "p0.png")
    return {
        "masks": ["masks", str(photos), *MASKS, "-o", str(out / "m.json")],
        "label-masks": [
            "label-masks",
            photo,
            *MASKS,
            "--model",
            "demo",
            "--labels",
            "a",
            "b",
            "-o",
            str(out / "l.json"),
        ],
        "find": ["find", photo, *MASKS, "--model", "demo", "--text", "a red circle", "-o", str(out / "f.json")],
        "segment": ["segment", photo, "--sam-model", "demo", "--point", "40,40", "--overlay", str(out / "s.png")],
        "train": _train(table, out / "run", 2),
        "finetune-sam": _finetune(scenes, out / "ft", 2),
        "export": ["export", "onnx", "align-text", "--model", "demo", "-o", str(out / "t.onnx"), "--opset", "17", "-q"],
        "synth": ["synth", "folder", str(out / "synth"), "-n", "4", "--size", "32", "--no-progress"],
    }


@pytest.mark.parametrize(
    "command", ["masks", "label-masks", "find", "segment", "train", "finetune-sam", "export", "synth"]
)
def test_a_full_disk_is_one_line_simulated(command, photos, table, scenes, tmp_path, no_space, full_folder, capsys):
    argv = _commands(photos, table, scenes, tmp_path)[command]
    no_space()
    if command == "synth":  # its writers write in place, into a folder of its own
        full_folder(tmp_path / "synth")
    code = main(argv)
    assert code == 1
    _one_line_error(capsys.readouterr().err, command)


@pytest.mark.parametrize(
    "command", ["masks", "label-masks", "find", "segment", "train", "finetune-sam", "export", "synth"]
)
def test_a_full_disk_is_one_line_on_a_real_disk(command, photos, table, scenes, small_disk, capsys):
    disk = small_disk("2m")
    argv = _commands(photos, table, scenes, disk)[command]
    fill(disk, leave=64 << 10 if command in ("train", "finetune-sam") else 0)  # room for the settings: fail later
    code = main(argv)
    assert code == 1
    _one_line_error(capsys.readouterr().err, command)
    assert not [p for p in disk.rglob("*") if p.name.endswith(".partial")]


# --- training: a checkpoint written before the disk filled stays whole ---------------------------------------


@pytest.mark.parametrize("trainer", ["train", "finetune-sam"])
def test_training_onto_a_full_disk_keeps_its_checkpoints(trainer, table, scenes, small_disk, capsys):
    disk = small_disk("16m")
    out = disk / "run"
    argv: Callable[..., list[str]] = (
        (lambda s, *e: _train(table, out, s, *e))
        if trainer == "train"
        else (lambda s, *e: _finetune(scenes, out, s, *e))
    )
    assert main(argv(2, "--save-every", "1")) == 0
    saved = {p.name: p.read_bytes() for p in list_checkpoints(out)}
    capsys.readouterr()
    fill(disk)
    assert main(argv(4, "--save-every", "1", "--resume")) == 1
    _one_line_error(capsys.readouterr().err, trainer)
    for name, data in saved.items():
        assert (out / "checkpoints" / name).read_bytes() == data
    assert load_checkpoint(list_checkpoints(out)[-1])["step"] >= 2
    assert not [p for p in disk.rglob("*") if p.name.endswith(".partial")]
