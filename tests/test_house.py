"""The package's layout keeps its promises: the library apart from the programs, one resolver for every model
reference, bundled models loadable by every class, and the architecture's contracts."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from alignsam import AlignModel, AlignProcessor, SamModel, presets, sam_model_registry
from alignsam.align import AlignImageProcessor, AlignTextModel, AlignTokenizer, AlignVisionModel
from alignsam.errors import ModelNotFoundError
from alignsam.io.resolve import ModelSource, resolve_model
from alignsam.sam import AmgConfig, SamAutomaticMaskGenerator

ROOT = Path(__file__).resolve().parents[1]
PROGRAMS = (
    "alignsam.train",
    "alignsam.eval",
    "alignsam.synthetic",
    "alignsam.cli",
    "alignsam.service",
    "alignsam.serve",
)


def test_the_library_imports_no_program_and_no_optional_package():
    """`import alignsam` and the seed API import no training, synthetic, serving, evaluation or command-line
    module, and no pyarrow (checked in a fresh interpreter)."""
    code = (
        "import sys\n"
        "import alignsam\n"
        "from alignsam import SamPredictor, AlignModel, AlignProcessor, SamAutomaticMaskGenerator\n"
        "from alignsam.tools import Encoder\n"
        "import alignsam.tools.classify, alignsam.tools.mask_labels, alignsam.tools.tag, alignsam.tools.embed\n"
        "m = AlignModel.from_pretrained('demo')\n"
        f"programs = {PROGRAMS!r}\n"
        "bad = sorted(n for n in sys.modules if n.startswith(programs) or n.split('.')[0] in "
        "('pyarrow', 'transformers', 'segment_anything', 'torchvision', 'fastapi', 'tensorboard'))\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_import_contracts_hold():
    """The layers and forbidden imports written in pyproject.toml (import-linter), as CI checks them."""
    linter = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    if linter is None:
        pytest.skip("import-linter is not installed (pip install -e '.[dev]')")
    done = subprocess.run([linter], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-3000:]
    assert "0 broken" in done.stdout


@pytest.mark.parametrize(
    "cls", [AlignModel, AlignProcessor, AlignTextModel, AlignVisionModel, AlignImageProcessor, AlignTokenizer]
)
def test_every_align_class_loads_the_bundled_demo(cls):
    loaded = cls.from_pretrained("demo")
    assert loaded is not None
    if isinstance(loaded, torch.nn.Module):
        assert not loaded.training and all(not p.is_meta for p in loaded.parameters())


def test_bundled_sam_loads_through_every_entry_point():
    by_class = SamModel.from_pretrained("demo")
    by_registry = sam_model_registry["vit_b"]  # a published architecture; the demo is not one of them
    assert by_class.recommended["amg.json"]["points_per_side"] == 16
    folder = presets.bundled_folder("sam", "demo")
    assert folder is not None
    same = SamModel.from_pretrained(folder)
    pairs = zip(by_class.state_dict().values(), same.state_dict().values(), strict=True)
    assert all(torch.equal(a, b) for a, b in pairs)
    assert callable(by_registry)
    # the recommended settings apply in the library, not only on the command line
    generator = SamAutomaticMaskGenerator(by_class)
    assert generator.config == AmgConfig().replace(**json.loads((folder / "amg.json").read_text()))
    assert SamAutomaticMaskGenerator(by_class, points_per_side=8).config.points_per_side == 8


def test_every_reference_kind_resolves_through_the_one_resolver(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    bundled = resolve_model("demo", "sam")
    assert bundled.kind == "bundled" and bundled.path == presets.bundled_folder("sam", "demo")
    assert resolve_model("demo", "align").path == presets.bundled_folder("align", "demo")
    short = resolve_model("vit_b", "sam")
    assert (short.kind, short.location) == ("hub", "facebook/sam-vit-base")
    assert resolve_model("align-base", "align").location == "kakaobrain/align-base"
    assert resolve_model("internimage-t", "internimage").location == presets.NAMES["internimage"]["internimage-t"]
    hub = resolve_model("org/model", "align")
    assert (hub.kind, hub.location, hub.path) == ("hub", "org/model", None)
    (tmp_path / "demo").mkdir()  # a local folder wins over a bundled name
    assert resolve_model("demo", "sam").kind == "folder"
    weights = tmp_path / "sam_vit_b.pth"
    weights.write_bytes(b"x")
    found = resolve_model(weights, "sam")
    assert found.kind == "file" and found.folder == tmp_path
    assert resolve_model(found, "sam") is found
    with pytest.raises(ModelNotFoundError, match="No such file"):
        resolve_model("missing/weights.pth", "sam")
    with pytest.raises(ModelNotFoundError, match="empty"):
        resolve_model("  ", "align")
    assert isinstance(bundled, ModelSource) and str(bundled) == "demo"


def test_loaders_accept_a_resolved_source():
    source = resolve_model("demo", "align")
    model = AlignModel.from_pretrained(source)
    assert model.recommended["regions.json"]["context"] == 3.0
    assert (
        SamModel.from_pretrained(resolve_model("demo", "sam")).config.image_size
        == SamModel.from_pretrained("demo").config.image_size
    )


def test_recommended_settings_survive_a_save(tmp_path):
    sam = SamModel.from_pretrained("demo")
    sam.save_pretrained(tmp_path / "sam")
    assert SamModel.from_pretrained(tmp_path / "sam").recommended == sam.recommended
    align = AlignModel.from_pretrained("demo")
    align.save_pretrained(tmp_path / "align")
    assert AlignModel.from_pretrained(tmp_path / "align").recommended == align.recommended


def test_defaults_are_written_once():
    """The default model ids and the automatic-mask parameters each stand in one place in the sources."""
    sources = {p: p.read_text() for p in (ROOT / "src" / "alignsam").rglob("*.py")}
    for model_id in presets.DEFAULT_MODELS.values():
        holders = [p for p, text in sources.items() if f'"{model_id}"' in text]
        assert holders == [ROOT / "src/alignsam/presets/__init__.py"], (model_id, holders)
    holders = [p for p, text in sources.items() if "pred_iou_thresh: float = 0.88" in text or "0.88," in text]
    assert holders == [ROOT / "src/alignsam/sam/automatic.py"], holders
