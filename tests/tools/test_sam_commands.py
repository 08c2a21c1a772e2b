"""masks, segment, label-masks and find on small local checkpoints (random weights: structure and
consistency between commands, not answers)."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from alignsam.io.rle import decode_rle
from alignsam.sam import SamModel
from alignsam.tools.mask_labels import CropStyle, prepare_crop
from tests.sam.sam_testing import tiny_config

from .test_align_commands import run_cli, run_subprocess

# thresholds that let masks through random weights; a small grid keeps the tests fast
AMG = ["--points-per-side", "8", "--pred-iou-thresh", "0", "--stability-score-thresh", "0", "--box-nms-thresh", "0.99"]


@pytest.fixture(scope="module")
def tiny_sam_dir(tmp_path_factory):
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("tiny-sam")
    SamModel.from_config(tiny_config()).save_pretrained(out)
    return out


@pytest.fixture(autouse=True)
def _no_cache(monkeypatch):
    monkeypatch.setenv("ALIGNSAM_CACHE", "off")


@pytest.fixture(scope="module")
def photo_path(tmp_path_factory, sample_photo):
    path = tmp_path_factory.mktemp("photo") / "astronaut.png"
    Image.fromarray(sample_photo[:300, 50:450]).save(path)
    return path


def models(tiny_align_dir, tiny_sam_dir):
    return ["--model", str(tiny_align_dir), "--sam-model", str(tiny_sam_dir), "-q"]


def test_masks_writes_sa1b_records_and_overlays(capsys, tiny_sam_dir, image_folder, tmp_path):
    code, out, err = run_cli(
        capsys, "masks", str(image_folder), "--sam-model", str(tiny_sam_dir), *AMG, "--overlay-dir", str(tmp_path)
    )
    assert code == 0 and out["num_images"] == 6 and len(out["errors"]) == 3 and "skipped 3" in err
    for record in out["images"]:
        h, w = record["image"]["height"], record["image"]["width"]
        assert record["annotations"], record["image"]
        for ann in record["annotations"]:
            mask = decode_rle(ann["segmentation"])
            assert mask.shape == (h, w) and mask.sum() == ann["area"] > 0
            ys, xs = np.nonzero(mask)
            assert ann["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
            assert {"predicted_iou", "stability_score", "point_coords", "crop_box"} <= set(ann)
        stem = os.path.splitext(os.path.basename(record["image"]["file_name"]))[0]
        assert record["overlay"] == str(tmp_path / f"{stem}.png")
        assert Image.open(record["overlay"]).size == (w, h)


def test_overlays_never_overwrite_each_other_and_bad_outputs_fail_first(capsys, tiny_sam_dir, photo_path, tmp_path):
    for sub in ("a", "b"):
        (tmp_path / sub).mkdir()
    Image.open(photo_path).save(tmp_path / "a" / "shot.png")
    Image.open(photo_path).crop((0, 0, 120, 90)).save(tmp_path / "b" / "Shot.jpg")  # same stem, another case
    sam = ["--sam-model", str(tiny_sam_dir), "-q", *AMG]
    ov = tmp_path / "ov"
    code, out, _ = run_cli(capsys, "masks", str(tmp_path / "a"), str(tmp_path / "b"), *sam, "--overlay-dir", str(ov))
    assert code == 0 and [r["overlay"] for r in out["images"]] == [str(ov / "shot.png"), str(ov / "Shot-2.png")]
    assert [Image.open(r["overlay"]).size for r in out["images"]] == [(400, 300), (120, 90)]
    # outputs that cannot be written fail before the model is looked for (this one does not exist)
    missing = ["--sam-model", str(tmp_path / "no-sam")]
    code, _, err = run_cli(capsys, "masks", str(tmp_path / "a"), *missing, "--overlay-dir", str(photo_path))
    assert code == 1 and "is a file" in err and "no-sam" not in err and "Traceback" not in err
    code, _, err = run_cli(capsys, "segment", str(photo_path), "--point", "5,5", *missing, "--overlay", "o.xyz")
    assert code == 1 and "Cannot tell an image format" in err and "no-sam" not in err and "Traceback" not in err


def test_a_failing_image_is_reported_and_the_run_goes_on(image_folder):
    from alignsam.tools.pipeline import for_each_image

    def work(path, image):
        if path.name == "photo_1.jpg":
            raise RuntimeError("DefaultCPUAllocator: not enough memory")
        return [], [], None

    run = for_each_image(sorted(image_folder.iterdir()), work)
    assert len(run.records) == 5 and len(run.errors) == 4 and not run.interrupted  # 3 unreadable, 1 failing
    failed = [e for e in run.errors if e["image"].endswith("photo_1.jpg")]
    assert failed == [
        {"image": str(image_folder / "photo_1.jpg"), "error": "RuntimeError: DefaultCPUAllocator: not enough memory"}
    ]


def test_segment_prompts(capsys, tiny_sam_dir, photo_path, tmp_path):
    sam = ["--sam-model", str(tiny_sam_dir), "-q"]
    code, out, _ = run_cli(
        capsys, "segment", str(photo_path), "--point", "200,150", *sam, "--overlay", str(tmp_path / "o.png")
    )
    assert code == 0 and len(out["annotations"]) == 3  # one click: SAM's three candidates, best first
    scores = [a["predicted_iou"] for a in out["annotations"]]
    assert scores == sorted(scores, reverse=True) and Image.open(tmp_path / "o.png").size == (400, 300)
    code, out, _ = run_cli(capsys, "segment", str(photo_path), "--box", "50,40,250,200", "--point", "120,100,0", *sam)
    assert code == 0 and len(out["annotations"]) == 1
    code, out, _ = run_cli(capsys, "segment", str(photo_path), "--box", "0,0,100,100", "--box", "150,100,390,290", *sam)
    assert code == 0 and [a["prompt_index"] for a in out["annotations"]] == [0, 1]
    rough = np.zeros((300, 400), np.uint8)
    rough[80:220, 100:300] = 255
    Image.fromarray(rough).save(tmp_path / "rough.png")
    code, out, _ = run_cli(capsys, "segment", str(photo_path), "--mask-input", str(tmp_path / "rough.png"), *sam)
    assert code == 0 and len(out["annotations"]) == 1


def test_segment_bad_prompts(capsys, tiny_sam_dir, photo_path):
    """A malformed prompt is a usage error: one line, exit code 2, as for options argparse refuses."""
    sam = ["--sam-model", str(tiny_sam_dir), "-q"]
    for argv, message in [
        (["--box", "200,50,100,150"], "x1 < x0"),
        (["--point", "10,10,7"], "label"),
        (["--box", "0,0,50,50", "--box", "60,60,90,90", "--point", "5,5"], "cannot be combined"),
        ([], "at least one"),
    ]:
        code, out, err = run_cli(capsys, "segment", str(photo_path), *argv, *sam)
        assert code == 2 and out is None and message in err and "Traceback" not in err, (argv, err)
    with pytest.raises(SystemExit) as exited:
        main_args = ["segment", str(photo_path), "--point", "1,2,3,4", *sam]
        run_cli(capsys, *main_args)
    assert exited.value.code == 2


def test_label_masks_equals_classify_on_the_prepared_crop(capsys, tiny_align_dir, tiny_sam_dir, photo_path, tmp_path):
    labels = ["person", "rocket", "flag", "sky", "helmet"]
    code, out, _ = run_cli(
        capsys, "label-masks", str(photo_path), "--labels", *labels, *models(tiny_align_dir, tiny_sam_dir), *AMG,
        "--overlay-dir", str(tmp_path / "ov"),
    )  # fmt: skip
    assert code == 0
    anns = out["images"][0]["annotations"]
    assert anns and all(a["class_name"] == a["class_proposals"][0]["class_name"] for a in anns)
    assert all(len(a["class_proposals"]) == 3 and a["class_name"] in labels for a in anns)
    image = np.asarray(Image.open(photo_path).convert("RGB"))
    ann = anns[0]
    crop = prepare_crop(image, decode_rle(ann["segmentation"]), CropStyle())
    crop.save(tmp_path / "crop.png")
    code, cls, _ = run_cli(
        capsys, "classify", str(tmp_path / "crop.png"), "--labels", *labels, "--model", str(tiny_align_dir), "-q"
    )
    assert code == 0 and cls["predictions"][0]["label"] == ann["class_name"]
    assert cls["predictions"][0]["scores"][0] == pytest.approx(ann["class_proposals"][0]["score"], abs=1e-4)
    assert (tmp_path / "ov" / "astronaut.png").is_file()


def test_find_text_equals_argmax_of_crop_similarity(capsys, tiny_align_dir, tiny_sam_dir, photo_path, tmp_path):
    """find ranks masks by their crop's similarity to the text; a mask's probability is the text's among
    the model's vocabulary on its crop, and it matches when the text wins there."""
    words = ["sky", "grass", "a red car"]
    model = tmp_path / "model"
    shutil.copytree(tiny_align_dir, model)
    (model / "vocabulary.json").write_text(
        json.dumps({"tags": [*words, "A White  Helmet"]})
    )  # the text itself: left out
    args = [*models(model, tiny_sam_dir), *AMG, "--templates", "none"]
    code, out, _ = run_cli(capsys, "find", str(photo_path), "--text", "a white helmet", "--top-k", "100", *args)
    assert code == 0
    record = out["images"][0]
    matches = record["annotations"]
    assert len(matches) >= 4  # several candidates, so the ranking means something
    assert [m["rank"] for m in matches] == list(range(len(matches)))
    assert [m["score"] for m in matches] == sorted((m["score"] for m in matches), reverse=True)
    assert record["matched"] == any(m["matches"] for m in matches)
    image = np.asarray(Image.open(photo_path).convert("RGB"))
    crops = []
    for m in matches:
        crops.append(tmp_path / f"crop{m['id']}.png")
        prepare_crop(image, decode_rle(m["segmentation"])).save(crops[-1])
    texts = ["text:a white helmet", *(f"text:{w}" for w in words)]
    code, sim, _ = run_cli(
        capsys, "similarity", "--rows", *map(str, crops), "--cols", *texts, "--model", str(model), "-q"
    )
    cosine = np.array(sim["cosine"])  # crops x (text, words)
    best = int(np.argmax(cosine[:, 0]))
    assert os.path.basename(sim["rows"][best]) == f"crop{matches[0]['id']}.png"
    logits = 10.0 * cosine  # the tiny model's logit scale (temperature 0.1)
    expected = np.exp(logits[:, 0]) / np.exp(logits).sum(1)
    for m, p, row in zip(matches, expected, cosine, strict=True):
        assert m["probability"] == pytest.approx(float(p), abs=2e-3)
        assert m["matches"] == bool(row[0] >= row[1:].max())
    code, out, _ = run_cli(
        capsys, "find", str(photo_path), "--ref-image", str(photo_path), "--ref-box", "100,30,300,200",
        "--top-k", "100", *args,
    )  # fmt: skip
    regions = out["images"][0]["annotations"]
    assert code == 0 and len(regions) == len(matches)
    assert sum(m["probability"] for m in regions) < 1.0  # the rest is the chance that nothing is the region
    code, _, err = run_cli(capsys, "find", str(photo_path), "--ref-image", str(photo_path), *args)
    assert code == 2 and "--ref-box" in err
    code, _, err = run_cli(capsys, "find", str(photo_path), "--text", "x", "--ref-box", "0,0,9,9", *args)
    assert code == 2 and "--ref-image" in err
    code, _, err = run_cli(
        capsys, "find", str(photo_path), "--ref-image", str(photo_path), "--ref-box", "0,0,900,10", *args
    )
    assert code == 1 and "inside" in err


def test_sam_commands_as_subprocesses(tiny_align_dir, tiny_sam_dir, photo_path):
    code, out, err = run_subprocess("masks", str(photo_path), "--sam-model", str(tiny_sam_dir), *AMG, "--device", "cpu")
    assert code == 0 and out["num_images"] == 1 and "Traceback" not in err
    code, out, err = run_subprocess("segment", str(photo_path), "--point", "9,1,7", "--sam-model", str(tiny_sam_dir))
    assert code == 2 and out is None and "Traceback" not in err and "label" in err  # a malformed prompt
    code, out, err = run_subprocess("segment", str(photo_path), "--point", "9999,1", "--sam-model", str(tiny_sam_dir))
    assert code == 0 and out["annotations"] and "Traceback" not in err  # used as given, with a warning:
    assert "alignsam segment: warning: Point (9999, 1) lies outside" in err and ".py:" not in err
    code, _, err = run_subprocess("masks", str(photo_path), "--sam-model", "nobody/sam-missing")
    assert code == 1 and "hf download nobody/sam-missing" in err and "Traceback" not in err
    assert json.dumps(out) is not None


def test_a_models_amg_json_replaces_the_defaults(capsys, tiny_sam_dir, photo_path, tmp_path):
    import shutil

    folder = tmp_path / "sam-with-settings"
    shutil.copytree(tiny_sam_dir, folder)
    (folder / "amg.json").write_text(
        json.dumps({"points_per_side": 2, "pred_iou_thresh": 0, "stability_score_thresh": 0})
    )

    def grid_points(argv):
        code, out, _ = run_cli(capsys, "masks", str(photo_path), "--sam-model", str(folder), "-q", *argv)
        assert code == 0
        return {tuple(a["point_coords"][0]) for a in out["images"][0]["annotations"]}

    # a 2 x 2 grid sits at 1/4 and 3/4 of the 400 x 300 image
    assert grid_points([]) <= {(100.0, 75.0), (300.0, 75.0), (100.0, 225.0), (300.0, 225.0)}
    # an option given on the command line wins over the file
    assert any(p[0] not in (100.0, 300.0) for p in grid_points(["--points-per-side", "3"]))


def test_a_models_regions_json_sets_the_crops(capsys, tiny_align_dir, tiny_sam_dir, photo_path, tmp_path):
    import shutil

    from alignsam.errors import InputError
    from alignsam.tools import Encoder
    from alignsam.tools.mask_labels import crop_style

    folder = tmp_path / "align-with-settings"
    shutil.copytree(tiny_align_dir, folder)
    (folder / "regions.json").write_text(json.dumps({"context": 3.0, "background": "blur", "unknown": 1}))
    encoder = Encoder.from_pretrained(folder)
    assert encoder.crop_defaults == {"context": 3.0, "background": "blur"}
    assert crop_style(encoder) == CropStyle(3.0, "blur")
    assert crop_style(encoder, context=1.5) == CropStyle(1.5, "blur")  # a given value wins
    assert crop_style(Encoder.from_pretrained(tiny_align_dir)) == CropStyle()  # no file: the defaults

    labels = ["person", "rocket", "flag", "sky", "helmet"]
    argv = ["label-masks", str(photo_path), "--labels", *labels, "--sam-model", str(tiny_sam_dir), *AMG, "-q"]

    def first_scores(*extra: str) -> tuple[list[float], np.ndarray, np.ndarray]:
        code, out, _ = run_cli(capsys, *argv, *extra)
        assert code == 0
        ann = out["images"][0]["annotations"][0]
        image = np.asarray(Image.open(photo_path).convert("RGB"))
        return [p["score"] for p in ann["class_proposals"]], decode_rle(ann["segmentation"]), image

    # the command uses the model's crops: its scores are those of the crop made with the file's settings
    scores, mask, image = first_scores("--model", str(folder))
    prepare_crop(image, mask, CropStyle(3.0, "blur")).save(tmp_path / "crop.png")
    code, cls, _ = run_cli(
        capsys, "classify", str(tmp_path / "crop.png"), "--labels", *labels, "--model", str(folder), "-q"
    )
    assert code == 0
    assert cls["predictions"][0]["scores"][0] == pytest.approx(scores[0], abs=1e-4)
    # options on the command line win over the file
    given, _, _ = first_scores("--model", str(folder), "--context", "1.2", "--background", "gray")
    plain, _, _ = first_scores("--model", str(tiny_align_dir))
    assert given == pytest.approx(plain, abs=1e-6)

    (folder / "regions.json").write_text(json.dumps({"context": "wide"}))
    with pytest.raises(InputError, match="context must be a number"):
        crop_style(Encoder.from_pretrained(folder))


def test_ctrl_c_keeps_the_images_done(capsys, tiny_sam_dir, image_folder, monkeypatch):
    import alignsam.tools.masks

    real, calls = alignsam.tools.masks.automatic_masks, []

    def stop_at_the_third(generator, image):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(generator, image)

    monkeypatch.setattr(alignsam.tools.masks, "automatic_masks", stop_at_the_third)
    code, out, err = run_cli(capsys, "masks", str(image_folder), "--sam-model", str(tiny_sam_dir), "-q", *AMG)
    assert code == 130 and out["interrupted"] is True and "interrupted; the result holds the 2 images done" in err
    assert out["num_images"] == 2 and all(r["annotations"] for r in out["images"])
