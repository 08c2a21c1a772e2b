"""The command line over the malformed corpus, in real `python -m alignsam` subprocesses under an address-space
limit and a timeout: every run ends in a result or in one `alignsam CMD: error: ...` line, never a traceback,
and a folder run accounts for every file (done or reported)."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest

from . import corpus
from .profiles import MEMORY_BYTES, TIME_S, large_only

BROKEN = {"empty.png", "truncated.jpg", "header_only.png", "random.png", "random.jpg", "text.png",
          "huge_declared.png", "zero_width.png"}  # fmt: skip
AMG = ["--points-per-side", "2", "--pred-iou-thresh", "0", "--stability-score-thresh", "0"]


def _limit() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_BYTES, MEMORY_BYTES))


def run(*argv: str) -> tuple[int, str, str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "ALIGNSAM_CACHE": "off", "LC_ALL": "C.UTF-8",
           "PYTHONIOENCODING": "utf-8", "OMP_NUM_THREADS": "1"}  # fmt: skip
    proc = subprocess.run(
        [sys.executable, "-m", "alignsam", *argv, "-q"],
        capture_output=True, text=True, env=env, timeout=TIME_S, preexec_fn=_limit, check=False,
    )  # fmt: skip
    command = argv[0]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert proc.returncode in (0, 1, 2), (proc.returncode, proc.stderr[-2000:])
    if proc.returncode:
        last = [line for line in proc.stderr.splitlines() if line.strip()][-1]
        assert last.startswith(f"alignsam {command}: error: "), proc.stderr[-2000:]
    return proc.returncode, proc.stdout, proc.stderr


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    out = tmp_path_factory.mktemp("corpus")
    corpus.write_images(out)
    return out


def _names(paths) -> set[str]:
    return {Path(p).name for p in paths}


def test_masks_over_the_corpus(folder, tmp_path):
    code, _, _ = run("masks", str(folder), "--sam-model", "demo", *AMG, "-o", str(tmp_path / "m.json"),
                     "--overlay-dir", str(tmp_path / "overlays"))  # fmt: skip
    out = json.loads((tmp_path / "m.json").read_text())
    done = _names(r["image"]["file_name"] for r in out["images"])
    failed = _names(e["image"] for e in out["errors"])
    assert code == 0 and done | failed == _names(folder.iterdir()) and not done & failed
    assert failed >= BROKEN and "good.png" in done and "thin_row.png" in done


@pytest.mark.parametrize(
    "argv",
    [
        ["classify", "--model", "demo", "--labels", "cat", "dog"],
        ["tag", "--model", "demo"],
        ["find", "--model", "demo", "--sam-model", "demo", "--text", "a thing", *AMG],
    ],
    ids=["classify", "tag", "find"],
)
def test_folder_commands_over_the_corpus(folder, argv):
    code, stdout, _ = run(argv[0], str(folder), *argv[1:])
    out = json.loads(stdout)
    assert code == 0 and len(out["errors"]) >= len(BROKEN), out["errors"]
    assert all("\n" not in str(e) for e in out["errors"])


@pytest.mark.parametrize("name", ["thin_column.png", "sixteen_bit.png", "cmyk.jpg", "palette_alpha.png", "text.png"])
def test_segment_odd_images(folder, name):
    code, _, _ = run("segment", str(folder / name), "--sam-model", "demo", "--point", "0,0")
    assert (code == 1) == (name in BROKEN)


def test_similarity_over_odd_texts():
    # argv holds no NUL and no surrogate outside U+DC80..U+DCFF (os.fsencode): those reach the library tests
    texts = [t[:100_000] for name, t in corpus.texts() if "\x00" not in t and t.strip() and name != "lone_surrogate"]
    code, stdout, _ = run("similarity", "--model", "demo", "--rows", *texts, "--cols", "cat")
    assert code == 0 and len(json.loads(stdout)["cosine"]) == len(texts)


@pytest.mark.parametrize("case", [c for c, _ in corpus.options("IMG", "DIR")])
def test_bad_options(folder, case):
    argv = dict(corpus.options(str(folder / "good.png"), str(folder)))[case]
    code, _, _ = run(*argv)
    assert code in (1, 2)


@large_only
@pytest.mark.fuzz_large
def test_masks_over_damaged_images(tmp_path):
    """Large tier: 200 damaged copies of the readable corpus images in one folder run."""
    import numpy as np

    rng = np.random.default_rng(1)
    readable = [(n, d) for n, d in corpus.images() if n not in BROKEN]
    for i in range(200):
        name, data = readable[i % len(readable)]
        (tmp_path / f"{i:03d}_{name}").write_bytes(corpus.mutate(data, rng))
    code, _, _ = run("masks", str(tmp_path), "--sam-model", "demo", *AMG, "-o", str(tmp_path / "m.json"))
    out = json.loads((tmp_path / "m.json").read_text())
    assert code in (0, 1) and len(out["images"]) + len(out["errors"]) == 200
