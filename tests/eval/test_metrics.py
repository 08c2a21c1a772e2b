"""Ranking metrics, caption-file readers and class folders."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from alignsam.errors import InputError
from alignsam.eval import read_captions, read_class_folders, recall_at_k, topk_accuracy


def test_topk_accuracy_by_hand():
    logits = torch.tensor([[0.9, 0.1, 0.0], [0.2, 0.3, 0.5], [0.1, 0.8, 0.7]])
    targets = torch.tensor([0, 0, 2])  # ranks 0, 2, 1
    assert topk_accuracy(logits, targets, ks=(1, 2, 3)) == {
        "top1": pytest.approx(1 / 3),
        "top2": pytest.approx(2 / 3),
        "top3": 1.0,
    }


def test_recall_by_hand():
    # 3 images on the axes; image 0 has captions e0 and (e0+e1), image 1 one caption e2 (wrong), image 2 none.
    images = torch.eye(3)
    texts = F.normalize(torch.tensor([[1.0, 0, 0], [1.0, 0.9, 0], [0, 0, 1.0]]), dim=-1)
    owner = torch.tensor([0, 0, 1])
    r = recall_at_k(images, texts, owner, ks=(1, 2))
    # text->image: captions 0 and 1 put image 0 first; caption 2 puts image 2 first and image 1 second (its tie
    # with image 0 counts in its favour).
    assert r["text_to_image_R@1"] == pytest.approx(2 / 3) and r["text_to_image_R@2"] == 1.0
    # image->text: image 0's best caption comes first; for image 1, caption 1 (which has an axis-1 part) scores
    # above its own caption 2, so that is second. Image 2 has no caption and is no query.
    assert r["image_to_text_R@1"] == 0.5 and r["image_to_text_R@2"] == 1.0


def _brute_force(images, texts, owner, k):
    t2i = (texts @ images.t()).argsort(dim=1, descending=True)[:, :k]
    t2i_hits = (t2i == owner[:, None]).any(1).float().mean()
    i2t = (images @ texts.t()).argsort(dim=1, descending=True)[:, :k]
    i2t_hits = [bool((owner[i2t[i]] == i).any()) for i in range(len(images)) if bool((owner == i).any())]
    return float(t2i_hits), sum(i2t_hits) / len(i2t_hits)


def test_recall_matches_a_brute_force_ranking():
    g = torch.Generator().manual_seed(0)
    images = F.normalize(torch.randn(50, 16, generator=g), dim=-1)
    owner = torch.arange(50).repeat_interleave(3)[:140]  # images 47..49 have fewer or no captions
    texts = F.normalize(images[owner] + 0.9 * torch.randn(140, 16, generator=g), dim=-1)
    r = recall_at_k(images, texts, owner, ks=(1, 5, 10), chunk=17)  # chunks that do not divide the counts
    for k in (1, 5, 10):
        t2i, i2t = _brute_force(images, texts, owner, k)
        assert r[f"text_to_image_R@{k}"] == pytest.approx(t2i, abs=1e-6)
        assert r[f"image_to_text_R@{k}"] == pytest.approx(i2t, abs=1e-6)
    assert 0.1 < r["text_to_image_R@1"] < 0.9  # neither trivial nor hopeless


def test_caption_files(tmp_path):
    (tmp_path / "images").mkdir()
    coco = {
        "images": [{"id": 7, "file_name": "a.jpg"}, {"id": 9, "file_name": "b.jpg"}],
        "annotations": [
            {"image_id": 9, "caption": "b1"},
            {"image_id": 7, "caption": "a1"},
            {"image_id": 9, "caption": "b2"},
        ],
    }
    (tmp_path / "coco.json").write_text(json.dumps(coco))
    paths, captions = read_captions(tmp_path / "coco.json")
    assert paths == [tmp_path / "images" / "a.jpg", tmp_path / "images" / "b.jpg"] and captions == [
        ["a1"],
        ["b1", "b2"],
    ]
    karpathy = {
        "images": [
            {"filename": "x.jpg", "split": "train", "sentences": [{"raw": "x"}]},
            {"filename": "y.jpg", "filepath": "val2014", "split": "test", "sentences": [{"raw": "y1"}, {"raw": "y2"}]},
        ]
    }
    (tmp_path / "dataset_coco.json").write_text(json.dumps(karpathy))
    paths, captions = read_captions(tmp_path / "dataset_coco.json", image_root=tmp_path)
    assert paths == [tmp_path / "val2014" / "y.jpg"] and captions == [["y1", "y2"]]
    assert read_captions(tmp_path / "dataset_coco.json", split="train")[1] == [["x"]]
    (tmp_path / "pairs.csv").write_text("image,caption\na.jpg,one\nb.jpg,two\na.jpg,three\n")
    assert read_captions(tmp_path / "pairs.csv")[1] == [["one", "three"], ["two"]]
    (tmp_path / "bad.json").write_text("[1, 2]")
    with pytest.raises(InputError, match="neither"):
        read_captions(tmp_path / "bad.json")


def test_class_folders(tmp_path):
    for name in ("n02", "n01", "n03"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "0.png").write_bytes(b"")
    (tmp_path / "n01" / "notes.txt").write_text("not an image")
    paths, targets, names = read_class_folders(tmp_path)
    assert names == ["n01", "n02", "n03"] and targets == [0, 1, 2] and len(paths) == 3
    (tmp_path / "names.txt").write_text("goldfish\nshark\nray\n")
    assert read_class_folders(tmp_path, tmp_path / "names.txt")[2] == ["goldfish", "shark", "ray"]
    (tmp_path / "classes.txt").write_text("n03\nn01\nn02\n")  # listing the folder names: their order
    paths, targets, names = read_class_folders(tmp_path)
    assert names == ["n03", "n01", "n02"] and paths[0].parent.name == "n03"
    with pytest.raises(InputError, match="2 class names for 3"):
        read_class_folders(tmp_path, ["a", "b"])
