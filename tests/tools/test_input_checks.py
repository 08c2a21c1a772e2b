"""Templates and numbers are checked where they enter: the command line (a usage error naming the option),
the Python API (an InputError naming the argument) and the service (a 4xx naming the field)."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from alignsam.cli import main
from alignsam.errors import InputError
from alignsam.tools.templates import resolve_templates

BAD_TEMPLATES = ["a {} {1}", "{} {name}", "a {} {", "a } {}", "{!r}", "{:>99999999}", "{0}", "{}{}", "{ }", "no field"]


@pytest.mark.parametrize("template", BAD_TEMPLATES)
def test_bad_templates_are_named(template):
    with pytest.raises(InputError) as err:
        resolve_templates([template])
    assert repr(template) in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("template", ["{}", "a photo of a {}.", "a {{literal}} {}", "{{}} {} }}", "ünï {} 🐱"])
def test_good_templates_pass(template):
    assert resolve_templates(template) == (template,)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="{}ab 01:!r.name", max_size=12))
def test_any_template_formats_or_is_refused(template):
    """63 of 200 generated templates used to crash `str.format` after the model was loaded."""
    try:
        forms = resolve_templates([template])
    except InputError:
        return
    assert forms[0].format("\x00").count("\x00") == 1


def test_service_refuses_a_bad_template_in_the_request():
    from pydantic import ValidationError

    from alignsam.serve.schemas import ClassifyRequest

    with pytest.raises(ValidationError, match=r"Template 'a \{\} \{1\}'"):
        ClassifyRequest.model_validate({"images": ["x"], "labels": ["cat"], "templates": ["a {} {1}"]})
    ok = ClassifyRequest.model_validate({"images": ["x"], "labels": ["cat"], "templates": "simple"})
    assert ok.templates == "simple"


def _cli(capsys, *argv: str) -> tuple[int, str]:
    try:
        code = main(list(argv))
    except SystemExit as stop:  # argparse's usage errors
        code = int(stop.code or 0)
    return code, capsys.readouterr().err


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    from PIL import Image

    path = tmp_path_factory.mktemp("img") / "a.png"
    Image.new("RGB", (32, 24), "red").save(path)
    return str(path)


CASES = [
    (["segment", "{img}", "--sam-model", "demo", "--point", "5,5,nan"], "--point"),
    (["segment", "{img}", "--sam-model", "demo", "--box", "0,0,inf,4"], "--box"),
    (["segment", "{img}", "--sam-model", "demo", "--point", "1e300,5"], "--point"),
    (["find", "{img}", "--text", "x", "--context", "nan"], "--context"),
    (["find", "{img}", "--text", "x", "--context", "inf"], "--context"),
    (["find", "{img}", "--text", "x", "--context", "1e9"], "--context"),
    (["find", "{img}", "--ref-image", "{img}", "--ref-box", "nan,0,4,4"], "--ref-box"),
    (["masks", "{img}", "--pred-iou-thresh", "nan"], "--pred-iou-thresh"),
    (["masks", "{img}", "--threads", "100000"], "--threads"),
    (["masks", "{img}", "--workers", "100000"], "--workers"),
    (["tag", "{img}", "--threshold", "-inf"], "--threshold"),
    (["classify", "{img}", "--labels", "cat", "--templates", "a {} {1}"], "--templates"),
    (["label-masks", "{img}", "--templates", "{} {name}"], "--templates"),
    (["serve", "--port", "70000"], "--port"),
    (["serve", "--max-body-mb", "nan"], "--max-body-mb"),
    (["train", "--lr", "nan", "--data", "x", "--out", "y"], "--lr"),
]


@pytest.mark.parametrize(("argv", "flag"), CASES, ids=[f"{a[0]} {f}" for a, f in CASES])
def test_cli_refuses_bad_numbers_with_one_usage_line(capsys, image, argv, flag):
    code, err = _cli(capsys, *[a.replace("{img}", image) for a in argv])
    lines = [line for line in err.splitlines() if line.startswith("alignsam ")]
    assert code == 2 and len(lines) == 1 and flag in lines[0] and "Traceback" not in err, err


def test_threads_out_of_range_is_a_usage_error_not_a_crash(image):
    """`--threads 100000` used to kill the process with SIGSEGV (exit 139) inside PyTorch's thread pool."""
    proc = subprocess.run(
        [sys.executable, "-m", "alignsam", "masks", image, "--sam-model", "demo", "--threads", "100000", "-q"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 2 and "--threads" in proc.stderr and "Traceback" not in proc.stderr


def test_unknown_device_is_one_line(capsys, image):
    code, err = _cli(capsys, "masks", image, "--sam-model", "demo", "--device", "bogus", "-q")
    assert code == 1 and err.count("\n") == 1 and "--device bogus" in err and "Traceback" not in err


def test_long_text_item_is_a_text_not_a_file_name(capsys):
    """A 300-byte item cannot be a file name (`File name too long` from `Path.exists`); it is a text."""
    text = "a very long caption " * 15
    code = main(["similarity", "--model", "demo", "--rows", text, "--cols", "cat", "-q"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and out["rows"] == [text] and math.isfinite(out["cosine"][0][0])


@pytest.mark.parametrize("truth", [{"a.png": [["cat"]]}, {"a.png": "cat"}, {"a.png": [1]}, [["a.png", "cat"]]])
def test_tune_file_with_wrong_shapes_is_named(capsys, tmp_path, truth):
    path = tmp_path / "truth.json"
    path.write_text(json.dumps(truth))
    code, err = _cli(capsys, "tag", "--model", "demo", "--tune", str(path), "-q")
    assert code == 1 and err.count("\n") == 1 and "Traceback" not in err, err


def test_library_checks_numbers():
    import numpy as np

    from alignsam.sam.automatic import AmgConfig
    from alignsam.tools.mask_labels import CropStyle
    from alignsam.tools.similarity import parse_items
    from alignsam.tools.tag import TagPolicy, check_truth

    for context in (math.nan, math.inf, 1e9, 0.5):
        with pytest.raises(InputError, match="context"):
            CropStyle(context=context)
    with pytest.raises(InputError, match="threshold"):
        TagPolicy(threshold=math.nan)
    for name in ("points_per_batch", "points_per_side", "crop_n_layers"):
        with pytest.raises(InputError, match=name):
            AmgConfig(**{name: 10**6})
    with pytest.raises(InputError, match="pred_iou_thresh"):
        AmgConfig(pred_iou_thresh=np.float32("nan"))
    with pytest.raises(InputError, match="list of strings"):
        check_truth({"a": [["cat"]]})
    assert parse_items(["x" * 300, "bad\x00path"])[0].terms[0].kind == "text"


def test_encoder_checks_its_counts():
    from alignsam import AlignModel
    from alignsam.align import AlignProcessor
    from alignsam.fast import PLAIN
    from alignsam.tools import Encoder

    model, processor = AlignModel.from_pretrained("demo"), AlignProcessor.from_pretrained("demo")
    for kwargs, name in (({"workers": 100_000}, "workers"), ({"max_length": 10_000}, "max_length"),
                         ({"max_length": 1}, "max_length"), ({"batch_size": 0}, "batch_size")):  # fmt: skip
        with pytest.raises(InputError, match=name):
            Encoder(model, processor, fast=PLAIN, **kwargs)
    longest = model.config.text_config.max_position_embeddings
    assert Encoder(model, processor, fast=PLAIN, max_length=longest).max_length == longest
