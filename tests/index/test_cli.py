"""`alignsam index` and `alignsam search` on index folders, in-process; their one-line errors and exit codes;
the service's /search on an index folder (the same search code)."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import numpy as np
import pytest

from alignsam.cli import main
from alignsam.index.store import DB_NAME
from tests.index.conftest import draw_image, make_images


def run(capsys, *argv: str) -> tuple[int, dict | None, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, (json.loads(out) if out.strip() else None), err


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.fixture()
def built(tmp_path, capsys, monkeypatch) -> tuple[Path, Path]:
    monkeypatch.setenv("ALIGNSAM_CACHE", "off")
    photos = tmp_path / "photos"
    for i in range(6):
        draw_image(photos / ("beach" if i % 2 else "city") / f"{i}.png", seed=i, size=(100 + 100 * (i % 3), 90))
    (photos / "broken.png").write_bytes(b"\x89PNG broken")
    captions = tmp_path / "captions.jsonl"
    captions.write_text(json.dumps({"path": str(photos / "city" / "0.png"), "caption": "a city", "tags": ["x"]}) + "\n")
    code, out, err = run(
        capsys, "index", str(tmp_path / "idx"), "--add", str(photos), "--model", "demo", "--captions", str(captions),
        "--tags", "holiday", "-q",
    )  # fmt: skip
    assert code == 0 and out["add"]["added"] == 6 and out["images"] == 6, err
    assert [os.path.basename(e["image"]) for e in out["add"]["errors"]] == ["broken.png"]
    assert "skipped 1 of 7 images" not in err  # -q: no notes
    return tmp_path / "idx", photos


def test_index_grows_and_search_filters(built, capsys, tmp_path):
    index, photos = built
    make_images(photos / "more", 2)
    code, out, _ = run(capsys, "index", str(index), "--add", str(photos), "-q")  # the index's model by default
    assert code == 0 and out["model"] == "demo"
    assert (out["add"]["added"], out["add"]["unchanged"], out["images"]) == (2, 6, 8)

    query = str(photos / "beach" / "1.png")
    code, found, _ = run(capsys, "search", query, "a city", "--index", str(index), "-k", "3", "-q")
    assert code == 0 and found["model"] == "demo" and found["index_size"] == 8
    first = found["results"][0]["results"][0]
    assert first["path"] == query and first["score"] == pytest.approx(1.0, abs=1e-4) and first["tags"] == ["holiday"]
    code, found, _ = run(
        capsys, "search", query, "--index", str(index), "-k", "8", "--where",
        "width >= 200 AND path LIKE '%/beach/%' OR caption = 'a city'", "-q",
    )  # fmt: skip
    paths = sorted(os.path.relpath(h["path"], photos) for h in found["results"][0]["results"])
    assert code == 0 and paths == ["beach/1.png", "beach/5.png", "city/0.png"]
    code, found, _ = run(capsys, "search", query, "--index", str(index), "--dedupe", "-q")
    assert code == 0 and len(found["results"][0]["results"]) >= 1

    code, out, _ = run(capsys, "index", str(index), "--dedupe", "0.9999", "-q")
    assert code == 0 and out["duplicates"] == [] and out["images"] == 8
    (photos / "more" / "img_000.png").unlink()
    code, out, _ = run(capsys, "index", str(index), "--prune", "-q")
    assert code == 0 and [os.path.basename(p) for p in out["pruned"]] == ["img_000.png"] and out["images"] == 7


def test_one_line_errors_leave_the_index_untouched(built, capsys, tmp_path):
    index, photos = built
    before = snapshot(index)
    cases = [
        (["search", "a cat", "--index", str(index), "--where", "width >= 'wide'"], 2, "holds numbers"),
        (["search", "a cat", "--index", str(index), "--where", "path = ''; DROP TABLE images"], 2, "position 10"),
        (["search", "a cat", "--index", str(index), "--model", "align-base"], 2, "contradicts the index"),
        (["index", str(index), "--add", str(photos), "--model", "align-base"], 2, "built with 'demo'"),
        (["index", str(index)], 2, "Nothing to do"),
        (["index", str(index), "--dedupe", "2"], 2, "(0, 1]"),
        (["index", str(tmp_path / "nothing"), "--prune"], 1, "is not an image index"),
        (["search", "a cat", "--index", str(photos), "--where", "id = 1"], 2, "need an index built by"),
    ]
    for argv, exit_code, words in cases:
        code, out, err = run(capsys, *argv)
        assert code == exit_code and words in err and out is None, (argv, err)
        assert err.count("\n") == 1 and "Traceback" not in err
        assert snapshot(index) == before
    assert not (tmp_path / "nothing").exists()

    db = index / DB_NAME
    for leftover in index.glob(f"{DB_NAME}-*"):
        leftover.unlink()
    db.write_bytes(b"\x00garbage" * 64)
    for argv in (["search", "a cat", "--index", str(index)], ["index", str(index), "--add", str(photos)]):
        code, _, err = run(capsys, *argv)
        assert code == 1 and "corrupt index file" in err and err.count("\n") == 1
        assert db.read_bytes() == b"\x00garbage" * 64


@pytest.mark.skipif(importlib.util.find_spec("alignsam.index.ray") is not None, reason="the Ray engine is here")
def test_the_ray_engine_missing_is_one_line(built, capsys):
    index, photos = built
    make_images(photos / "more", 1)
    code, _, err = run(capsys, "index", str(index), "--add", str(photos), "--engine", "ray", "-q")
    assert code == 1 and "--engine ray is not available" in err and err.count("\n") == 1


def test_the_service_searches_an_index_folder(built):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from alignsam.serve import Service
    from alignsam.serve.app import create_app
    from alignsam.serve.search import IndexFolder, open_index

    index, photos = built
    assert isinstance(open_index(index), IndexFolder)
    with Service("demo", "demo", index=index) as service, TestClient(create_app(service)) as client:
        answer = client.post("/search", json={"text": "a city", "k": 3})
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["index_size"] == 6 and len(body["results"]) == 3
        filtered = client.post("/search", json={"text": "a city", "k": 6, "where": "path LIKE '%/city/%'"}).json()
        assert sorted(os.path.basename(h["path"]) for h in filtered["results"]) == ["0.png", "2.png", "4.png"]
        thumb = client.get(filtered["results"][0]["thumbnail"])
        assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
        bad = client.post("/search", json={"text": "a city", "where": "width >="})
        assert bad.status_code == 400 and "position" in bad.json()["error"]
        assert client.get("/thumbnail", params={"path": str(photos / "broken.png")}).status_code == 404
    direct = open_index(index)
    q = np.ones((1, direct.dim), np.float32) / np.sqrt(direct.dim)
    assert len(direct.search(q, 4)[0]) == 4
