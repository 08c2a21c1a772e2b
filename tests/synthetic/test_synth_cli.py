"""`alignsam synth`: in-process and as a subprocess, every layout, and clear errors for bad arguments."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from alignsam.cli import main


def _run(capsys, *argv: str) -> tuple[int, dict, str]:
    code = main(["synth", *argv])
    out, err = capsys.readouterr()
    return code, (json.loads(out) if code == 0 else {}), err


def test_webdataset_in_process(tmp_path, capsys):
    code, report, _ = _run(
        capsys, "webdataset", str(tmp_path), "-n", "12", "--shard-size", "5", "--noise", "0.5", "--size", "48",
        "--seed", "3", "--no-progress",
    )  # fmt: skip
    assert code == 0
    assert report["shards"] == 3 and report["samples"] == 12 and report["seed"] == 3
    assert report["config"]["image_size"] == 48 and report["config"]["noise"] == 0.5
    assert sum(report["noise"].values()) == 12
    assert json.loads((tmp_path / "synth.json").read_text())["layout"] == "webdataset"


@pytest.mark.parametrize(
    ("argv", "check"),
    [
        (["folder", "-n", "3", "--shapes", "circle,star", "--colours", "red,blue"], "captions.parquet"),
        (["classification", "--per-class", "1", "--shapes", "circle,star", "--colors", "red"], "red star/00000.jpg"),
        (["retrieval", "-n", "3", "--captions-per-image", "2"], "captions.json"),
        (["segmentation", "-n", "2", "--mask-pngs", "--supersample", "1"], "masks/00000000_00.png"),
    ],
)
def test_layouts_in_process(tmp_path, capsys, argv, check):
    code, report, _ = _run(capsys, argv[0], str(tmp_path), "--size", "40", "-q", *argv[1:])
    assert code == 0, report
    assert report["layout"] == argv[0] and (tmp_path / check).is_file()
    if argv[0] == "retrieval":
        assert report["config"]["min_objects"] == 2 and report["captions"] == 6
    if argv[0] == "classification":
        assert report["classes"] == 2


def test_config_file_regenerates_a_set(tmp_path, capsys):
    first = ["folder", str(tmp_path / "a"), "-n", "4", "--size", "36", "--noise", "0.5", "--no-progress"]
    assert main(["synth", *first]) == 0
    config = str(tmp_path / "a" / "synth.json")
    assert main(["synth", "folder", str(tmp_path / "b"), "-n", "4", "--config", config, "--no-progress"]) == 0
    capsys.readouterr()
    assert (tmp_path / "a" / "captions.csv").read_bytes() == (tmp_path / "b" / "captions.csv").read_bytes()


def test_speed(capsys):
    code, report, _ = _run(capsys, "speed", "--sizes", "32,64", "-n", "5")
    assert code == 0 and set(report["results"]) == {"32", "64"}
    assert report["results"]["64"]["scenes_per_second"] > 0


def test_subprocess(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2] / "src")}
    done = subprocess.run(
        [sys.executable, "-m", "alignsam", "synth", "retrieval", str(tmp_path), "-n", "2", "--size", "32"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["images"] == 2 and (tmp_path / "captions.json").is_file()
    assert "retrieval" in done.stderr  # the tqdm bar goes to stderr

    bad = subprocess.run(
        [sys.executable, "-m", "alignsam", "synth", "folder", str(tmp_path / "x"), "--shapes", "circle,blob"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert bad.returncode == 1 and "unknown shapes ['blob']" in bad.stderr and "Traceback" not in bad.stderr


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["webdataset", "OUT", "--noise", "1.5"], "expected a share between 0 and 1"),
        (["webdataset", "OUT", "-n", "0"], "expected an integer >= 1"),
        (["folder", "OUT", "--format", "gif"], "invalid choice"),
        (["classification", "OUT", "--noise", "0.3"], "unrecognized arguments"),
        (["retrieval", "OUT", "--shard-size", "3"], "unrecognized arguments"),
        (["pictures", "OUT"], "invalid choice"),
        (["webdataset"], "the following arguments are required: out"),
    ],
)
def test_usage_errors_exit_2(capsys, argv, message):
    with pytest.raises(SystemExit) as exit_info:
        main(["synth", *argv])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--size", "16"], "image_size=16 is out of range; use 32..1024"),
        (["--colours", "red,grey"], "unknown colours ['grey']"),
        (["--min-objects", "5", "--max-objects", "3"], "max_objects=3"),
        (["--config", "missing.json"], "cannot read --config"),
    ],
)
def test_bad_values_are_clear_errors(tmp_path, capsys, argv, message):
    assert main(["synth", "folder", str(tmp_path / "out"), "-n", "1", "--no-progress", *argv]) == 1
    err = capsys.readouterr().err
    assert err.startswith("alignsam synth: error:") and message in err


def test_non_empty_output_is_refused(tmp_path, capsys):
    (tmp_path / "file.txt").write_text("x")
    assert main(["synth", "folder", str(tmp_path), "-n", "1", "--no-progress"]) == 1
    assert "--overwrite" in capsys.readouterr().err
    assert main(["synth", "folder", str(tmp_path), "-n", "1", "--no-progress", "--overwrite"]) == 0
