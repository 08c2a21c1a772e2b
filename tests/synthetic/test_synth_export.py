"""Writers: each layout read back with standard tools (tarfile, PIL, json, csv, pyarrow, pycocotools)."""

from __future__ import annotations

import csv
import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from alignsam.errors import InputError
from alignsam.synthetic import (
    COYO_COLUMNS,
    SceneConfig,
    SceneGenerator,
    write_classification,
    write_folder,
    write_retrieval,
    write_segmentation,
    write_webdataset,
)

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:pycocotools.*")

IMG2DATASET_FIELDS = ("url", "caption", "key", "status", "error_message", "width", "height")


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def generator():
    return SceneGenerator(SceneConfig(image_size=64, noise=0.4), seed=7)


# --- webdataset ------------------------------------------------------------------------------------------------


def test_webdataset_shards_read_back(tmp_path, generator):
    report = write_webdataset(generator, tmp_path / "wds", num=25, shard_size=10, corrupt=0.3, progress=False)
    root = tmp_path / "wds"
    assert report["shards"] == 3 and report["pattern"] == "{00000..00002}.tar"
    assert sorted(p.name for p in root.glob("*.tar")) == ["00000.tar", "00001.tar", "00002.tar"]
    corrupt = report["corrupt"]["keys"]
    assert 0 < len(corrupt) < 25 and set(corrupt.values()) <= {
        "truncated_image",
        "not_an_image",
        "missing_caption",
        "bad_json",
    }

    seen, intact = 0, 0
    for shard in range(3):
        with tarfile.open(root / f"{shard:05d}.tar") as tar:
            members = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}
        keys = sorted({name.split(".")[0] for name in members})
        assert keys == [f"{shard:05d}{i:04d}" for i in range(len(keys))]
        table = pq.read_table(root / f"{shard:05d}.parquet").to_pylist()
        assert [row["key"] for row in table] == keys
        stats = json.loads((root / f"{shard:05d}_stats.json").read_text())
        assert stats["count"] == stats["successes"] == len(keys)
        assert stats["corrupt"] == sum(k in corrupt for k in keys)
        for key, row in zip(keys, table, strict=True):
            seen += 1
            assert row["corruption"] == corrupt.get(key)
            damage = corrupt.get(key)
            jpg = members[f"{key}.jpg"]
            if damage in ("truncated_image", "not_an_image"):
                with pytest.raises(OSError):
                    Image.open(io.BytesIO(jpg)).load()
                continue
            if damage == "missing_caption":
                assert f"{key}.txt" not in members
                continue
            if damage == "bad_json":
                with pytest.raises(ValueError):
                    json.loads(members[f"{key}.json"])
                continue
            intact += 1
            image = Image.open(io.BytesIO(jpg))
            assert image.format == "JPEG" and image.size == (64, 64)
            meta = json.loads(members[f"{key}.json"])
            caption = members[f"{key}.txt"].decode()
            assert set(IMG2DATASET_FIELDS) | set(COYO_COLUMNS) <= set(meta)
            assert meta["key"] == key and meta["caption"] == caption == row["caption"] and meta["status"] == "success"
            assert meta["text_length"] == len(caption) and meta["word_count"] == len(caption.split())
            scene = generator[meta["index"]]
            assert caption == scene.caption and meta["noise"] == scene.noise
            assert [o["label"] for o in meta["objects"]] == scene.labels
            assert meta["objects"][0]["segmentation"]["size"] == [64, 64]
    assert seen == 25 and intact > 0


def test_webdataset_metadata_tracks_noise(tmp_path):
    gen = SceneGenerator(SceneConfig(image_size=32, noise=0.5), seed=1)
    write_webdataset(gen, tmp_path, num=300, shard_size=300, progress=False)
    rows = pq.read_table(tmp_path / "00000.parquet").to_pylist()
    by_kind = {k: [r["clip_similarity_vitb32"] for r in rows if r["noise"] == k] for k in ("none", "unrelated")}
    assert np.mean(by_kind["none"]) > np.mean(by_kind["unrelated"]) + 0.1
    assert all(-0.0809 <= r["clip_similarity_vitb32"] <= 0.5918 for r in rows)
    assert all(r["nsfw_score_opennsfw2"] < 0.5 and r["num_faces"] >= 0 for r in rows)


def test_writers_are_deterministic(tmp_path, generator):
    for name in ("a", "b"):
        write_webdataset(generator, tmp_path / name / "wds", num=12, shard_size=5, corrupt=0.2, progress=False)
        write_segmentation(generator, tmp_path / name / "seg", num=4, mask_pngs=True, progress=False)
    a, b = _files(tmp_path / "a"), _files(tmp_path / "b")
    assert a.keys() == b.keys() and len(a) > 10
    assert a == b
    other = SceneGenerator(generator.config, seed=8)
    write_webdataset(other, tmp_path / "c", num=12, shard_size=5, progress=False)
    assert (tmp_path / "c" / "00000.tar").read_bytes() != a["wds/00000.tar"]


# --- folder ------------------------------------------------------------------------------------------------------


def test_folder_csv_and_parquet(tmp_path, generator):
    report = write_folder(generator, tmp_path, num=9, start=100, progress=False)
    assert report["samples"] == 9 and report["start"] == 100
    with open(tmp_path / "captions.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    table = pq.read_table(tmp_path / "captions.parquet").to_pylist()
    assert len(rows) == len(table) == 9
    assert list(rows[0])[:2] == ["image", "caption"]
    assert {"image", "caption", "clean_caption", "noise", "labels", *COYO_COLUMNS} <= set(table[0])
    for k, (row, record) in enumerate(zip(rows, table, strict=True)):
        scene = generator[100 + k]
        assert row["image"] == record["image"] == f"images/{k:08d}.jpg"
        assert row["caption"] == record["caption"] == scene.caption
        assert Image.open(tmp_path / row["image"]).size == (64, 64)
        assert [o["label"] for o in json.loads(record["objects"])] == scene.labels


# --- classification -------------------------------------------------------------------------------------------------


def test_classification_folders(tmp_path):
    config = SceneConfig(image_size=48, shapes=("circle", "star", "heart"), colours=("red", "blue"), max_objects=4)
    gen = SceneGenerator(config, seed=2)
    report = write_classification(gen, tmp_path, per_class=3, image_format="png", progress=False)
    assert report["classes"] == 6 and report["images"] == 18
    classes = (tmp_path / "classes.txt").read_text().splitlines()
    assert classes == list(config.classes)
    assert classes == ["red circle", "red star", "red heart", "blue circle", "blue star", "blue heart"]
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == sorted(classes)
    for c, name in enumerate(classes):
        files = sorted((tmp_path / name).iterdir())
        assert [f.name for f in files] == ["00000.png", "00001.png", "00002.png"]
        for j, f in enumerate(files):
            scene = gen.scene(j * 6 + c, objects=[(name.split()[1], name.split()[0])])
            assert scene.labels == [name]
            assert np.array_equal(np.asarray(Image.open(f)), scene.image)


# --- retrieval ----------------------------------------------------------------------------------------------------


def test_retrieval_coco_captions(tmp_path, mentioned):
    gen = SceneGenerator(SceneConfig(image_size=64, min_objects=2, max_objects=4), seed=3)
    report = write_retrieval(gen, tmp_path, num=6, progress=False)
    assert report["captions"] == 30
    document = json.loads((tmp_path / "captions.json").read_text())
    assert [img["id"] for img in document["images"]] == list(range(6))
    assert len({a["id"] for a in document["annotations"]}) == 30
    for image in document["images"]:
        assert Image.open(tmp_path / "images" / image["file_name"]).size == (image["width"], image["height"])
        captions = [a["caption"] for a in document["annotations"] if a["image_id"] == image["id"]]
        assert len(set(captions)) == 5
        scene = gen[image["index"]]
        assert image["labels"] == scene.labels and len(scene.objects) >= 2
        for caption in captions:  # clean: every object is named
            assert set(mentioned(caption)) == set(scene.labels)


# --- segmentation ---------------------------------------------------------------------------------------------------


def test_segmentation_coco_instances(tmp_path, capsys):
    from pycocotools.coco import COCO

    gen = SceneGenerator(SceneConfig(image_size=80, max_objects=5), seed=4)
    report = write_segmentation(gen, tmp_path, num=5, mask_pngs=True, progress=False)
    coco = COCO(str(tmp_path / "annotations.json"))
    capsys.readouterr()  # COCO prints its loading messages
    assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == list(gen.config.shapes)
    assert report["objects"] == len(coco.getAnnIds())
    for image_id in coco.getImgIds():
        info = coco.loadImgs(image_id)[0]
        scene = gen[info["index"]]
        assert np.array_equal(np.asarray(Image.open(tmp_path / "images" / info["file_name"])), scene.image)
        anns = coco.loadAnns(coco.getAnnIds(imgIds=image_id))
        assert len(anns) == len(scene.objects)
        for j, (ann, obj) in enumerate(zip(anns, scene.objects, strict=True)):
            assert np.array_equal(coco.annToMask(ann).astype(bool), obj.mask)
            assert coco.loadCats(ann["category_id"])[0]["name"] == obj.shape
            assert ann["attributes"]["colour"] == obj.colour and ann["area"] == obj.area
            x0, y0, x1, y1 = obj.bbox
            assert ann["bbox"] == [x0, y0, x1 - x0, y1 - y0] and ann["iscrowd"] == 0
            png = np.asarray(Image.open(tmp_path / "masks" / f"{image_id:08d}_{j:02d}.png")) > 0
            assert np.array_equal(png, obj.mask)


# --- errors ------------------------------------------------------------------------------------------------------


def test_non_empty_output_needs_overwrite(tmp_path, generator):
    (tmp_path / "keep.txt").write_text("mine")
    with pytest.raises(InputError, match=r"not empty.*--overwrite"):
        write_folder(generator, tmp_path, num=2, progress=False)
    write_folder(generator, tmp_path, num=2, overwrite=True, progress=False)
    assert (tmp_path / "keep.txt").read_text() == "mine" and (tmp_path / "captions.csv").exists()
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match="not a folder"):
        write_folder(generator, tmp_path / "file", num=2, progress=False)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num": 0}, "num=0"),
        ({"num": 2, "shard_size": 20_000}, "at most 10000"),
        ({"num": 2, "corrupt": 1.5}, "corrupt=1.5"),
        ({"num": 2, "image_format": "gif"}, "'jpg' or 'png'"),
        ({"num": 2, "quality": 0}, "quality"),
        ({"num": 2, "start": -1}, "start=-1"),
    ],
)
def test_bad_writer_arguments(tmp_path, generator, kwargs, message):
    with pytest.raises(InputError, match=message):
        write_webdataset(generator, tmp_path / "out", progress=False, **kwargs)
    assert not (tmp_path / "out").exists()  # nothing is created before the arguments are checked
