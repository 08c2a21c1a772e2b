"""SIGTERM is Ctrl-C: the folder commands keep the images done and write their partial result, training
keeps its checkpoints; exit 143 (128 + SIGTERM), one line on stderr, no traceback. Real processes."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import numpy as np
import pytest

from alignsam.io.rle import decode_rle
from alignsam.train.core.checkpoint import list_checkpoints, load_checkpoint
from tests.reliability.conftest import AMG_ARGS, alignsam_process, image_array, scene_folder, wait_for


@pytest.fixture(scope="module")
def many(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """40 scenes of 160 px: a folder that takes the demo SAM several seconds."""
    return scene_folder(tmp_path_factory, "many", 40, 160, 4, 5, "s{:02d}.png")


@pytest.mark.parametrize(
    "command",
    [
        ["masks"],
        ["label-masks", "--model", "demo", "--labels", "a circle", "a star"],
        ["find", "--model", "demo", "--text", "a red circle"],
    ],
    ids=["masks", "label-masks", "find"],
)
def test_sigterm_keeps_the_images_done(command, many, tmp_path):
    out, ov = tmp_path / "out.json", tmp_path / "ov"
    process = alignsam_process(command[0], str(many), *command[1:], *AMG_ARGS, "--overlay-dir", str(ov), "-o", str(out))
    wait_for(lambda: (ov.is_dir() and any(ov.glob("*.png"))) or process.poll() is not None)
    assert process.poll() is None, process.communicate()[1]
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 143, err
    assert "Traceback" not in err and f"alignsam {command[0]}: interrupted" in err
    result = json.loads(out.read_text())
    assert result["interrupted"] is True and 1 <= result["num_images"] < 40
    for record in result["images"]:  # every image kept is whole: its masks decode, its overlay reads
        size = (record["image"]["height"], record["image"]["width"])
        for annotation in record["annotations"]:
            mask = decode_rle(annotation["segmentation"])
            assert mask.shape == size and mask.sum() == annotation["area"]
        assert image_array(Path(record["overlay"])).shape[:2] == size
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(".partial")]


def test_sigterm_stops_training_with_its_checkpoints(tmp_path):
    from tests.reliability.test_kills import finetune_argv

    out = tmp_path / "run"
    process = alignsam_process(*finetune_argv(tmp_path, out, steps=500))
    wait_for(lambda: len(list_checkpoints(out)) >= 2 or process.poll() is not None, timeout=120)
    assert process.poll() is None, process.communicate()[1]
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 143, err
    assert "Traceback" not in err and "alignsam finetune-sam: interrupted" in err
    for path in list_checkpoints(out):
        assert load_checkpoint(path)["step"] == int(path.stem.split("-")[1])
    assert np.isfinite([json.loads(line)["loss"] for line in (out / "metrics.jsonl").read_text().splitlines()]).all()
