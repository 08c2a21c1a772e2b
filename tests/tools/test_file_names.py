"""File names that are not UTF-8 (`b'\\xff\\xfe.png'`): listed, embedded, segmented, and written to JSON as
`\\udcXX` escapes that give the original bytes back (`os.fsencode(json.loads(...))`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from PIL import Image

from alignsam.io.jsontext import display_name, json_text
from alignsam.tools.files import list_images

RAW = b"\xff\xfe.png"


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    out = tmp_path_factory.mktemp("names")
    try:
        with open(os.path.join(os.fsencode(out), RAW), "wb") as f:
            Image.new("RGB", (40, 30), "red").save(f, format="PNG")
    except (OSError, UnicodeError):
        pytest.skip("this file system refuses file names that are not UTF-8")
    Image.new("RGB", (40, 30), "blue").save(out / "ok.png")
    return out


def test_json_text_round_trips_any_bytes():
    name = os.fsdecode(b"/x/\xff\xfe caf\xc3\xa9.png")
    text = json_text({"image": name})
    text.encode("utf-8")  # strict: no lone surrogates left
    assert "café" in text and "\\udcff" in text
    assert os.fsencode(json.loads(text)["image"]) == b"/x/\xff\xfe caf\xc3\xa9.png"
    assert display_name(name) == "/x/\\xff\\xfe café.png"


def test_listing_and_embedding(folder):
    from alignsam.tools import Encoder

    found = list_images([str(folder)])
    assert sorted(os.path.basename(os.fsencode(p)) for p in found.files) == [b"ok.png", RAW]
    done = Encoder.from_pretrained("demo", device="cpu", progress=False).encode_images(found.files)
    assert done.embeds.shape[0] == 2 and not done.errors


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "LC_ALL": "C.UTF-8", "PYTHONIOENCODING": "utf-8", "ALIGNSAM_CACHE": "off"}
    return subprocess.run(
        [sys.executable, "-m", "alignsam", *argv, "-q"], capture_output=True, text=True, env=env, timeout=300
    )


def test_masks_writes_the_name_to_json_and_overlays(folder, tmp_path):
    """`-o` used to fail (`surrogates not allowed`) after all the work was done."""
    out = tmp_path / "masks.json"
    proc = _run("masks", str(folder), "--sam-model", "demo", "--points-per-side", "2", "-o", str(out),
                "--overlay-dir", str(tmp_path / "overlays"))  # fmt: skip
    assert proc.returncode == 0 and not proc.stderr, proc.stderr
    names = [os.fsencode(r["image"]["file_name"]) for r in json.loads(out.read_text(encoding="utf-8"))["images"]]
    assert sorted(os.path.basename(n) for n in names) == [b"ok.png", RAW]
    assert sorted(os.listdir(os.fsencode(tmp_path / "overlays"))) == [b"ok.png", RAW]


def test_tag_prints_the_name_to_stdout(folder):
    proc = _run("tag", str(folder), "--model", "demo")
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    images = [os.fsencode(r["image"]) for r in json.loads(proc.stdout)["results"]]
    assert sorted(os.path.basename(n) for n in images) == [b"ok.png", RAW]
