"""The HTTP service: a real server on a free port, requests with urllib, answers equal to the commands'."""

from __future__ import annotations

import base64
import json
import threading
import urllib.error
import urllib.request

import pytest

from alignsam.service import Service, make_server
from alignsam.tools import Encoder
from alignsam.tools.classify import classify


@pytest.fixture(scope="module")
def server(tiny_align_dir, tmp_path_factory):
    import torch

    from alignsam.sam import SamModel
    from tests.sam.sam_testing import tiny_config

    torch.manual_seed(0)
    sam_dir = tmp_path_factory.mktemp("sam")
    SamModel.from_config(tiny_config()).save_pretrained(sam_dir)
    srv = make_server(Service(str(tiny_align_dir), str(sam_dir)), port=0, max_body=5_000_000)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


def post(url: str, path: str, body: object) -> tuple[int, dict]:
    data = json.dumps(body).encode() if not isinstance(body, bytes) else body
    req = urllib.request.Request(url + path, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=120) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def b64(path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def test_health_and_errors(server):
    with urllib.request.urlopen(server + "/health", timeout=30) as resp:
        assert json.loads(resp.read())["status"] == "ok"
    assert post(server, "/nope", {})[0] == 404
    code, body = post(server, "/classify", b"{not json")
    assert code == 400 and "error" in body
    code, body = post(server, "/classify", {"images": ["%%%"], "labels": ["a"]})
    assert code == 400 and "base64" in body["error"]
    code, body = post(server, "/classify", {"images": [], "labels": ["a"]})
    assert code == 400 and "non-empty" in body["error"]
    code, body = post(server, "/similarity", {"rows": ["image:/etc/passwd"], "cols": ["x"]})
    assert code == 400 and "not allowed" in body["error"]
    code, body = post(server, "/classify", b"x" * 6_000_000)
    assert code == 413


def test_classify_equals_the_library(server, tiny_align_dir, image_folder):
    files = [image_folder / "photo_0.jpg", image_folder / "plain_1.png"]
    code, body = post(server, "/classify", {"images": [b64(f) for f in files], "labels": ["cat", "dog", "car"]})
    assert code == 200 and body["num_images"] == 2
    want = classify(Encoder.from_pretrained(tiny_align_dir), files, ["cat", "dog", "car"]).to_dict()
    for got, ref in zip(body["predictions"], want["predictions"], strict=True):
        assert got["labels"] == ref["labels"] and got["scores"] == pytest.approx(ref["scores"], abs=1e-5)


@pytest.mark.parametrize(
    ("path", "body", "message"),
    [
        ("/classify", {"labels": ["a", "b"], "top_k": "abc"}, "'top_k' must be a whole number"),
        ("/classify", {"labels": ["a", "b"], "top_k": 2.5}, "'top_k' must be a whole number"),
        ("/classify", {"labels": ["a", "b"], "templates": 5}, "'templates' must be a non-empty list"),
        ("/tag", {"threshold": "x"}, "'threshold' must be a finite number"),
        ("/tag", {"max_tags": None}, "'max_tags' must be a whole number"),
        ("/tag", {"groups": 5}, "'groups' must be a non-empty list"),
        ("/segment", {"points": 5}, "'points' must be a list of lists"),
        ("/segment", {"points": [[1]]}, "A point must be 3 numbers"),
        ("/segment", {"points": [["a", "b"]]}, "A point must be 3 numbers"),
        ("/segment", {"points": [[1, 2, 3, 4]]}, "A point must be 3 numbers"),  # was taken as a point
        ("/segment", {"points": [[1, 2, 7]]}, "label must be 1 (object) or 0"),
        ("/segment", {"boxes": [[1, 2]]}, "A box must be 4 numbers"),
        ("/segment", {"points": [[1, 2]], "multimask": "yes"}, "'multimask' must be true, false or null"),
        ("/masks", {"points_per_side": "x"}, "points_per_side must be a whole number"),
        ("/masks", {"pred_iou_thresh": "x"}, "pred_iou_thresh must be a finite number"),
        ("/masks", {"box_nms_thresh": 2}, "box_nms_thresh must be a finite number in [0, 1]"),
    ],
)
def test_malformed_fields_answer_400_naming_the_field(server, image_folder, path, body, message):
    image = b64(image_folder / "plain_0.png")
    key = "images" if path in ("/classify", "/tag") else "image"
    code, answer = post(server, path, {key: [image] if key == "images" else image, **body})
    assert code == 400 and message in answer["error"], answer  # these were 500s (a TypeError or ValueError)


def test_embed_tag_segment_masks(server, image_folder):
    image = b64(image_folder / "photo_1.jpg")
    code, body = post(server, "/embed", {"images": [image, "bm90IGFuIGltYWdl"], "texts": ["a cat"]})
    assert code == 200 and len(body["image_embeddings"]) == 1 and body["image_indices"] == [0]
    assert len(body["errors"]) == 1 and len(body["text_embeddings"][0]) == 80
    code, body = post(server, "/tag", {"images": [image], "vocab": ["cat", "dog", "tree", "car"], "threshold": 1.0})
    assert code == 200 and body["results"][0]["tags"]
    code, body = post(server, "/segment", {"image": image, "points": [[50, 60]]})
    assert code == 200 and len(body["annotations"]) == 3
    with pytest.warns(UserWarning, match=r"Point \(5000, 60\) lies outside"):
        code, body = post(server, "/segment", {"image": image, "points": [[5000, 60]]})
    assert code == 200 and len(body["annotations"]) == 3  # a point outside the image is a coordinate, as in SAM
    code, body = post(
        server, "/masks", {"image": image, "points_per_side": 4, "pred_iou_thresh": 0, "stability_score_thresh": 0}
    )
    assert code == 200 and body["annotations"]
