"""Files as users expect them: written files get the mode the user's umask gives (not the temporary file's
0600), a replaced file keeps its mode, and `-o` into a missing folder is an error naming the folder."""

from __future__ import annotations

import os
import stat
import subprocess
import sys

import pytest
from PIL import Image

from alignsam.cli import main
from alignsam.errors import OutputError
from alignsam.io.files import check_output_file, umask, write_text_atomic
from alignsam.io.images import save_image


@pytest.fixture
def with_umask():
    held = os.umask(0o022)
    os.umask(held)

    def set_mask(mask: int) -> None:
        os.umask(mask)

    yield set_mask
    os.umask(held)


@pytest.mark.parametrize(("mask", "expected"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_new_files_get_the_umask_mode(tmp_path, with_umask, mask, expected):
    with_umask(mask)
    assert umask() == mask
    write_text_atomic(tmp_path / "a.json", "{}")
    save_image(Image.new("RGB", (4, 4)), tmp_path / "b.png")
    assert stat.S_IMODE((tmp_path / "a.json").stat().st_mode) == expected
    assert stat.S_IMODE((tmp_path / "b.png").stat().st_mode) == expected


def test_a_replaced_file_keeps_its_mode(tmp_path, with_umask):
    with_umask(0o022)
    target = tmp_path / "a.json"
    target.write_text("old")
    target.chmod(0o640)
    write_text_atomic(target, "new")
    assert target.read_text() == "new"
    assert stat.S_IMODE(target.stat().st_mode) == 0o640


def test_saved_models_get_the_umask_mode(tmp_path, with_umask):
    from alignsam import SamModel

    with_umask(0o022)
    SamModel.from_pretrained("demo").save_pretrained(tmp_path / "model")
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "model").iterdir() if p.is_file()}
    assert modes and set(modes.values()) == {0o644}, modes


def test_the_library_creates_missing_parents_the_command_line_refuses_them(tmp_path, capsys):
    assert check_output_file(tmp_path / "new" / "deeper" / "out.json").parent.is_dir()
    with pytest.raises(OutputError, match="does not exist"):
        check_output_file(tmp_path / "missing" / "out.json", create_parents=False)
    image = tmp_path / "x.png"
    Image.new("RGB", (8, 8)).save(image)
    code = main(["classify", str(image), "--labels", "a", "b", "-o", str(tmp_path / "typo" / "out.json")])
    assert code == 1
    err = capsys.readouterr().err
    assert "typo" in err and "does not exist" in err
    assert not (tmp_path / "typo").exists()


def test_command_output_under_umask_077(tmp_path):
    """A real `alignsam` process started under umask 077: its `-o` file is 0600, under 022 it is 0644."""
    image = tmp_path / "x.png"
    Image.new("RGB", (8, 8), "red").save(image)
    for mask, expected in ((0o077, 0o600), (0o022, 0o644)):
        out = tmp_path / f"out-{mask:o}.json"
        command = [sys.executable, "-m", "alignsam", "classify", str(image), "--model", "demo", "--labels", "red",
                   "blue", "-o", str(out), "--quiet"]  # fmt: skip
        subprocess.run(command, check=True, capture_output=True, preexec_fn=lambda m=mask: os.umask(m), timeout=300)
        assert stat.S_IMODE(out.stat().st_mode) == expected
