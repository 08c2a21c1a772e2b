"""Every endpoint through FastAPI's TestClient, with the demo models: answers equal to the library's, and
each class of malformed input answered by one line of JSON naming what is wrong (never a 500)."""

from __future__ import annotations

import json
import struct
import zlib
from typing import Any

import numpy as np
import pytest
import torch

from alignsam.io.rle import decode_rle
from alignsam.tools import Encoder
from alignsam.tools.classify import classify
from tests.serve.conftest import SCENES, b64, inside_point, iou, png_bytes, scene

CLASSES = list(SCENES.classes)


@pytest.fixture(scope="module")
def scene_b64() -> str:
    return b64(png_bytes(scene(200).image))


def error_of(response: Any, status: int) -> str:
    assert response.status_code == status, (response.status_code, response.text)
    body = response.json()
    assert set(body) <= {"error", "field"} and "\n" not in body["error"], body
    return str(body["error"])


def test_health_schema_and_docs(client: Any) -> None:
    health = client.get("/health").json()
    assert health["status"] == "ok" and health["models"] == {"align": "demo", "sam": "demo"}
    schema = client.get("/openapi.json").json()
    for path in ("/classify", "/embed", "/similarity", "/tag", "/segment", "/masks", "/images", "/search",
                 "/images/{image_id}", "/images/{image_id}/segment", "/images/{image_id}/masks",
                 "/images/{image_id}/label", "/images/{image_id}/find", "/images/{image_id}/tags",
                 "/thumbnail"):  # fmt: skip
        assert path in schema["paths"], path
    request = schema["paths"]["/classify"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert request["$ref"].endswith("/ClassifyRequest")
    assert {"multipart/form-data", "application/json"} <= schema["paths"]["/images"]["post"]["requestBody"][
        "content"
    ].keys()
    docs = client.get("/docs")
    assert docs.status_code == 200 and "/docs-assets/swagger-ui-bundle.js" in docs.text and "cdn" not in docs.text
    assert client.get("/docs-assets/swagger-ui-bundle.js").status_code == 200
    page = client.get("/")
    assert page.status_code == 200 and "/static/app.js" in page.text
    assert "script-src 'self'" in page.headers["content-security-policy"]
    for asset in ("app.js", "app.css"):
        assert client.get(f"/static/{asset}").status_code == 200


def test_classify_equals_the_library(client: Any, scene_b64: str) -> None:
    body = {"images": [scene_b64, scene_b64], "labels": CLASSES, "top_k": 3}
    answer = client.post("/classify", json=body).json()
    image = scene(200).image
    want = classify(Encoder.from_pretrained("demo"), [image, image], CLASSES, top_k=3).to_dict()
    assert answer["num_images"] == 2 and answer["errors"] == []
    for got, ref in zip(answer["predictions"], want["predictions"], strict=True):
        assert got["labels"] == ref["labels"] and got["scores"] == pytest.approx(ref["scores"], abs=1e-5)


def test_embed_reports_unreadable_images_and_embeds_texts(client: Any, scene_b64: str) -> None:
    not_an_image = b64(b"not an image at all")
    answer = client.post("/embed", json={"images": [scene_b64, not_an_image], "texts": ["a red star"]}).json()
    assert answer["image_indices"] == [0] and len(answer["image_embeddings"]) == 1
    assert answer["errors"][0]["image"] == "#1" and "not an image format" in answer["errors"][0]["error"]
    encoder = Encoder.from_pretrained("demo")
    want = encoder.encode_texts(["a red star"])[0]
    assert torch.allclose(torch.tensor(answer["text_embeddings"][0]), want, atol=1e-5)
    assert len(answer["image_embeddings"][0]) == encoder.model.config.projection_dim


def test_similarity_treats_base64_images_as_images(client: Any, scene_b64: str) -> None:
    """The bug this fixes: a base64 image given to /similarity was embedded as a text."""
    body = {
        "rows": [scene_b64, f"data:image/png;base64,{scene_b64}", {"image": scene_b64}],
        "cols": ["red square", scene_b64],
    }
    answer = client.post("/similarity", json=body).json()
    cosine = np.array(answer["cosine"])
    assert cosine[:, 1] == pytest.approx([1.0, 1.0, 1.0], abs=1e-5)  # the image against itself
    encoder = Encoder.from_pretrained("demo")
    image = encoder.encode_images([scene(200).image]).embeds[0]
    text = encoder.encode_texts(["red square"])[0]
    assert cosine[0, 0] == pytest.approx(float(image @ text), abs=1e-5)
    assert answer["rows"][0] == "image#0" and answer["columns"] == ["red square", "image#0"]


def test_similarity_compositions(client: Any, scene_b64: str) -> None:
    terms = [{"image": scene_b64}, {"text": "red square", "weight": 0.5}]
    body = {"rows": [f"image:{scene_b64} + 0.5*text:red square", {"terms": terms}],
            "cols": ["red square", "blue circle"]}  # fmt: skip
    answer = client.post("/similarity", json=body).json()
    assert answer["cosine"][0] == pytest.approx(answer["cosine"][1], abs=1e-6)
    encoder = Encoder.from_pretrained("demo")
    image = encoder.encode_images([scene(200).image]).embeds[0]
    texts = encoder.encode_texts(["red square", "blue circle"])
    query = torch.nn.functional.normalize(image + 0.5 * texts[0], dim=0)
    assert answer["cosine"][0] == pytest.approx((texts @ query).tolist(), abs=1e-5)
    cancel = client.post("/similarity", json={"rows": ["text:a - text:a"], "cols": ["b"]})
    assert "cancels out" in error_of(cancel, 400)


def test_tag(client: Any, scene_b64: str) -> None:
    answer = client.post("/tag", json={"images": [scene_b64], "vocab": CLASSES, "threshold": 1.0, "max_tags": 3}).json()
    tags = [t["tag"] for t in answer["results"][0]["tags"]]
    assert 1 <= len(tags) <= 3 and answer["vocabulary_size"] == len(CLASSES)
    assert any(t.split()[-1] in {"cross", "square"} for t in tags), tags


def test_segment_and_masks_without_a_session(client: Any, scene_b64: str) -> None:
    truth = scene(200)
    x, y = inside_point(truth.objects[2].mask)
    answer = client.post("/segment", json={"image": scene_b64, "points": [[x, y]]}).json()
    assert len(answer["annotations"]) == 3 and answer["image"]["height"] == 128
    best = decode_rle(answer["annotations"][0]["segmentation"])
    assert iou(best, truth.objects[2].mask) >= 0.8
    boxes = [list(o.bbox) for o in truth.objects[:2]]
    answer = client.post("/segment", json={"image": scene_b64, "boxes": boxes}).json()
    assert [a["prompt_index"] for a in answer["annotations"]] == [0, 1]
    masks = client.post("/masks", json={"image": scene_b64}).json()
    found = [decode_rle(a["segmentation"]) for a in masks["annotations"]]
    assert sum(max(iou(m, o.mask) for m in found) >= 0.5 for o in truth.objects) >= 3


@pytest.mark.parametrize(
    ("path", "body", "status", "message"),
    [
        ("/classify", b"{not json", 400, "not valid JSON"),
        ("/classify", b"[1, 2]", 422, "valid dictionary"),
        ("/classify", {"images": [], "labels": ["a"]}, 422, "'images'"),
        ("/classify", {"images": ["%%%"], "labels": ["a"]}, 400, "base64"),
        ("/classify", {"images": ["x"], "labels": ["a"], "top_k": "abc"}, 422, "'top_k'"),
        ("/classify", {"images": ["x"], "labels": ["a"], "top_k": 2.5}, 422, "'top_k'"),
        ("/classify", {"images": ["x"], "labels": ["a"], "top_k": True}, 422, "'top_k'"),
        ("/classify", {"images": ["x"], "labels": ["a"], "top_k": 10**30}, 422, "'top_k'"),
        ("/classify", {"images": ["x"], "labels": ["a"], "templates": 5}, 422, "'templates"),
        ("/classify", {"images": ["x"], "labels": [" "], "top_k": 1}, 400, "non-empty"),
        ("/classify", {"images": ["x"], "labels": ["a"], "colour": 1}, 422, "'colour'"),
        ("/tag", {"images": ["x"], "threshold": "x"}, 422, "'threshold'"),
        ("/tag", {"images": ["x"], "max_tags": None}, 422, "'max_tags'"),
        ("/tag", {"images": ["x"], "groups": 5}, 422, "'groups"),
        ("/tag", {"images": ["x"], "groups": ["no such group"]}, 400, "Unknown tag group"),
        ("/segment", {"points": 5}, 422, "'points'"),
        ("/segment", {"points": [[1]]}, 422, "'points.0'"),
        ("/segment", {"points": [["a", "b"]]}, 422, "'points.0.0'"),
        ("/segment", {"points": [[1, 2, 3, 4]]}, 422, "'points.0'"),
        ("/segment", {"points": [[1, 2, 7]]}, 400, "label must be 1 (object) or 0"),
        ("/segment", {"points": [[5000, 60]]}, 400, "outside"),
        ("/segment", {"points": [[1e308, 60]]}, 400, "outside"),
        ("/segment", {"boxes": [[1, 2]]}, 422, "'boxes.0'"),
        ("/segment", {"points": [[1, 2]], "multimask": "yes"}, 422, "'multimask'"),
        ("/masks", {"points_per_side": "x"}, 422, "'points_per_side'"),
        ("/masks", {"pred_iou_thresh": "x"}, 422, "'pred_iou_thresh'"),
        ("/masks", {"box_nms_thresh": 2}, 422, "'box_nms_thresh'"),
        ("/masks", {"points_per_side": 100000}, 422, "'points_per_side'"),
        ("/embed", {}, 400, "Give 'images', 'texts' or both"),
        ("/similarity", {"rows": ["image:/etc/passwd"], "cols": ["x"]}, 400, "not allowed"),
        ("/search", {"text": "a red star"}, 503, "no search index"),
    ],
)
def test_malformed_input_is_one_line_naming_the_field(
    client: Any, scene_b64: str, path: str, body: Any, status: int, message: str
) -> None:
    if isinstance(body, dict) and path in ("/segment", "/masks"):
        body = {"image": scene_b64, **body}
    if isinstance(body, dict) and body.get("images") == ["x"]:
        body = {**body, "images": [scene_b64]}
    if isinstance(body, bytes):
        response = client.post(path, content=body, headers={"Content-Type": "application/json"})
    else:
        response = client.post(path, json=body)
    assert message in error_of(response, status)


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_non_finite_numbers_are_refused(client: Any, scene_b64: str, literal: str) -> None:
    raw = f'{{"image": "{scene_b64}", "points": [[{literal}, 10]]}}'
    response = client.post("/segment", content=raw, headers={"Content-Type": "application/json"})
    assert "'points.0.0'" in error_of(response, 422)
    raw = f'{{"images": ["{scene_b64}"], "threshold": {literal}, "vocab": ["a", "b"]}}'
    response = client.post("/tag", content=raw, headers={"Content-Type": "application/json"})
    assert "'threshold'" in error_of(response, 422)


def test_huge_integers_are_refused(client: Any, scene_b64: str) -> None:
    raw = '{{"images": ["{}"], "labels": ["a"], "top_k": {}}}'.format(scene_b64, "9" * 5000)
    response = client.post("/classify", content=raw, headers={"Content-Type": "application/json"})
    assert error_of(response, 400)  # Python's JSON reader refuses integers over 4,300 digits


def test_non_image_bytes(client: Any) -> None:
    junk = b64(b"\x00\x01 definitely not an image" * 10)
    assert "not an image format" in error_of(client.post("/images", json={"image": junk}), 400)
    assert "not an image format" in error_of(client.post("/segment", json={"image": junk, "points": [[1, 1]]}), 400)
    files = {"file": ("x.png", b"GIF89a broken", "image/png")}
    assert error_of(client.post("/images", files=files), 400)
    assert "'file'" in error_of(client.post("/images", files={"other": ("x.png", b"abc", "image/png")}), 400)
    assert "'image'" in error_of(client.post("/images", json={"picture": "abc"}), 422)
    assert "too large" in error_of(client.post("/images", json={"image": b64(png_header(100_000, 100_000))}), 400)


def png_header(width: int, height: int) -> bytes:
    """The start of a PNG that claims `width x height` pixels (a decompression bomb's header)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")
    )


def test_unknown_ids_and_endpoints(client: Any) -> None:
    for path, body in (("/images/nope", None), ("/images/nope/segment", {"points": [[1, 1]]}),
                       ("/images/nope/masks", {}), ("/images/nope/label", {}), ("/images/nope/tags", {}),
                       ("/images/nope/find", {"text": "x"})):  # fmt: skip
        response = client.get(path) if body is None else client.post(path, json=body)
        assert "No image session 'nope'" in error_of(response, 404)
    assert "No endpoint" in error_of(client.post("/nowhere", json={}), 404)
    assert error_of(client.get("/classify"), 405)


def test_body_limit(tmp_path: Any) -> None:
    from fastapi.testclient import TestClient

    from alignsam.serve import Service
    from alignsam.serve.app import create_app

    with Service("demo", "demo", max_body=1000) as service, TestClient(create_app(service)) as small:
        response = small.post("/classify", content=b"x" * 5000, headers={"Content-Type": "application/json"})
        assert "over the limit of 1000 bytes" in error_of(response, 413)
        files = {"file": ("x.png", b"x" * 5000, "image/png")}
        assert error_of(small.post("/images", files=files), 413)
        assert small.get("/health").status_code == 200


def test_in_process_service_keeps_its_methods(demo_service: Any, scene_b64: str) -> None:
    from alignsam.errors import InputError

    answer = demo_service.handle("/classify", {"images": [scene_b64], "labels": CLASSES[:4], "top_k": 2})
    assert answer["num_images"] == 1 and len(answer["predictions"][0]["labels"]) == 2
    with pytest.raises(InputError, match="'top_k'"):
        demo_service.classify({"images": [scene_b64], "labels": ["a"], "top_k": 0})
    info = demo_service.add_image(png_bytes(scene(201).image), "s.png", wait=True)
    assert info["status"] == "ready"
    truth = scene(201).objects[0]
    x, y = inside_point(truth.mask)
    result = demo_service.segment_image(info["id"], {"points": [[x, y, 1]]})
    assert iou(decode_rle(result["candidates"][0]["segmentation"]), truth.mask) >= 0.8
    json.dumps(demo_service.health())
