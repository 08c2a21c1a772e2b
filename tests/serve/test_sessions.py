"""Image sessions (embedding once, shared by identical uploads, bounded in bytes, never mixed up), prompts
on them (points, boxes, scribbles, refinement from kept logits), and the request batcher."""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from typing import Any

import numpy as np
import pytest
import torch

from alignsam.io.rle import decode_rle
from alignsam.sam import SamAutomaticMaskGenerator, SamModel, SamPredictor
from alignsam.serve import Service
from alignsam.serve.batching import Batcher
from alignsam.serve.segment import scribble_points
from alignsam.serve.sessions import ByteLRU
from alignsam.tools.masks import automatic_masks
from tests.serve.conftest import b64, inside_point, iou, png_bytes, scene


def wait_ready(client: Any, image_id: str, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline:
        info = client.get(f"/images/{image_id}").json()
        seen.append(info["status"])
        if info["status"] != "pending":
            return {**info, "seen": seen}
        time.sleep(0.01)
    raise AssertionError(f"not ready after {timeout} s: {seen[-3:]}")


def upload(client: Any, image: np.ndarray, name: str = "scene.png") -> dict[str, Any]:
    response = client.post("/images", files={"file": (name, png_bytes(image), "image/png")})
    assert response.status_code == 201, response.text
    return dict(response.json())


def test_upload_embeds_once_and_identical_uploads_share(client: Any, demo_service: Service) -> None:
    image = scene(210).image
    first = upload(client, image)
    assert first["status"] in ("pending", "ready") and (first["width"], first["height"]) == (128, 128)
    ready = wait_ready(client, first["id"])
    assert ready["status"] == "ready" and ready["progress"] == 1.0
    again = client.post("/images", json={"image": b64(png_bytes(image)), "name": "again.png"}).json()
    assert again["id"] != first["id"] and again["shared"] and again["status"] == "ready"
    assert again["sha256"] == first["sha256"]
    embedding = demo_service.embeddings.get(first["sha256"])
    predictor = SamPredictor(SamModel.from_pretrained("demo"))
    predictor.set_image(image)
    assert embedding is not None and torch.allclose(embedding.features, predictor.features, atol=1e-5)


def test_progress_is_reported_while_embedding(client: Any) -> None:
    info = upload(client, scene(211).image[::-1].copy())
    ready = wait_ready(client, info["id"])
    assert ready["status"] == "ready"


def test_sessions_are_never_mixed_up(client: Any) -> None:
    """Clicks on two images, sent concurrently, each answered from its own embedding."""
    scenes = [scene(i) for i in (220, 221, 222, 223)]
    ids = [upload(client, s.image, f"s{k}.png")["id"] for k, s in enumerate(scenes)]
    for image_id in ids:
        wait_ready(client, image_id)

    def click(k: int) -> float:
        truth = scenes[k].objects[0].mask
        x, y = inside_point(truth)
        answer = client.post(f"/images/{ids[k]}/segment", json={"points": [[x, y, 1]]}).json()
        return iou(decode_rle(answer["candidates"][0]["segmentation"]), truth)

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        scores = list(pool.map(click, [0, 1, 2, 3] * 4))
    assert min(scores) >= 0.7, scores


def test_prompts_on_a_session(client: Any) -> None:
    truth = scene(230)
    image_id = upload(client, truth.image)["id"]
    target = truth.objects[0].mask
    x, y = inside_point(target)
    one = client.post(f"/images/{image_id}/segment", json={"points": [[x, y]], "output": ["rle", "png"]}).json()
    assert len(one["candidates"]) == 3 and one["candidates"][0]["png"]
    scores = [c["score"] for c in one["candidates"]]
    assert scores == sorted(scores, reverse=True)
    best = one["candidates"][0]
    assert iou(decode_rle(best["segmentation"]), target) >= 0.8
    refined = client.post(
        f"/images/{image_id}/segment", json={"points": [[x, y, 1]], "mask_input": best["mask_id"]}
    ).json()
    assert len(refined["candidates"]) == 1 and iou(decode_rle(refined["candidates"][0]["segmentation"]), target) >= 0.8
    x0, y0, x1, y1 = truth.objects[0].bbox
    boxed = client.post(f"/images/{image_id}/segment", json={"box": [x0, y0, x1, y1]}).json()
    assert iou(decode_rle(boxed["candidates"][0]["segmentation"]), target) >= 0.8
    ys, xs = np.nonzero(target)
    line = [[float(xs[i]) + 0.5, float(ys[i]) + 0.5] for i in np.linspace(0, len(xs) - 1, 12).astype(int)]
    line = [p for p in line if target[int(p[1]), int(p[0])]]
    scribbled = client.post(f"/images/{image_id}/segment", json={"scribbles": [{"line": line}]}).json()
    assert iou(decode_rle(scribbled["candidates"][0]["segmentation"]), target) >= 0.7
    missing = client.post(f"/images/{image_id}/segment", json={"points": [[x, y]], "mask_input": "m999"})
    assert missing.status_code == 400 and "'mask_input'" in missing.json()["error"]
    empty = client.post(f"/images/{image_id}/segment", json={})
    assert empty.status_code == 400 and "at least one point" in empty.json()["error"]


def test_scribble_points_spread_along_the_line() -> None:
    points = scribble_points([[0, 0], [10, 0], [10, 10]], 5)
    assert points.shape == (5, 2) and points[0].tolist() == [0, 0] and points[-1].tolist() == [10, 10]
    assert points[2].tolist() == [10, 0]  # half of the length
    assert scribble_points([[3, 4]]).tolist() == [[3, 4]]
    assert scribble_points([[3, 4], [3, 4]]).tolist() == [[3, 4]]


def test_automatic_masks_reuse_the_embedding_and_equal_the_generator(client: Any, demo_service: Service) -> None:
    truth = scene(240)
    image_id = upload(client, truth.image)["id"]
    wait_ready(client, image_id)
    calls = []
    encoder = demo_service.sam.image_encoder
    hook = encoder.register_forward_hook(lambda *_: calls.append(1))
    try:
        answer = client.post(f"/images/{image_id}/masks", json={"output": ["rle", "png"]}).json()
    finally:
        hook.remove()
    assert calls == []  # the cached embedding, not the encoder
    generator = SamAutomaticMaskGenerator(SamModel.from_pretrained("demo"))  # its amg.json applies
    want = automatic_masks(generator, truth.image)
    got = [decode_rle(a["segmentation"]) for a in answer["annotations"]]
    assert len(got) == len(want) and all(iou(g, w.mask) > 0.99 for g, w in zip(got, want, strict=True))
    assert answer["label_map"]


def test_label_find_and_tags_on_a_session(client: Any) -> None:
    from alignsam.synthetic import SceneConfig

    classes = list(SceneConfig(image_size=128).classes)
    truth = scene(250)
    image_id = upload(client, truth.image)["id"]
    labelled = client.post(f"/images/{image_id}/label", json={"labels": classes}).json()
    masks = [decode_rle(a["segmentation"]) for a in labelled["annotations"]]
    right = 0
    for obj in truth.objects:
        overlaps = [iou(m, obj.mask) for m in masks]
        k = int(np.argmax(overlaps))
        right += overlaps[k] >= 0.5 and labelled["annotations"][k]["class_name"].split()[-1] == obj.shape
    assert right >= len(truth.objects) - 1, (right, truth.labels, [a["class_name"] for a in labelled["annotations"]])
    unique = next(o for o in truth.objects if truth.labels.count(o.label) == 1)
    found = client.post(f"/images/{image_id}/find", json={"text": f"the {unique.label}", "top_k": 1}).json()
    assert found["query"]["matched_as"] == unique.label
    assert iou(decode_rle(found["matches"][0]["segmentation"]), unique.mask) >= 0.5
    other = upload(client, scene(251).image)["id"]
    x0, y0, x1, y1 = unique.bbox
    by_box = client.post(f"/images/{other}/find", json={"reference": {"image_id": image_id, "box": [x0, y0, x1, y1]}})
    assert by_box.status_code == 200 and by_box.json()["matches"]
    tags = client.post(f"/images/{image_id}/tags", json={"vocab": classes, "max_tags": 3}).json()
    assert tags["image_id"] == image_id and tags["results"][0]["tags"]
    both = client.post(f"/images/{image_id}/find", json={})
    assert both.status_code == 400 and "exactly one of 'text' and 'reference'" in both.json()["error"]


def test_the_embedding_cache_is_bounded_in_bytes() -> None:
    from fastapi.testclient import TestClient

    from alignsam.serve.app import create_app

    per_image = 128 * 16 * 16 * 4 + 256  # the demo's embedding, as the cache counts it
    with Service("demo", "demo", cache_mb=2.5 * per_image / 2**20) as service, TestClient(create_app(service)) as c:
        ids = [upload(c, scene(260 + k).image)["id"] for k in range(4)]
        for image_id in ids:
            wait_ready(c, image_id)
        assert len(service.embeddings) == 2 and service.embeddings.nbytes <= 2.5 * per_image
        assert service.embeddings.evictions >= 2
        truth = scene(260).objects[0].mask  # the first was evicted: computed again, same answer
        x, y = inside_point(truth)
        answer = c.post(f"/images/{ids[0]}/segment", json={"points": [[x, y]]}).json()
        assert iou(decode_rle(answer["candidates"][0]["segmentation"]), truth) >= 0.8


def test_byte_lru() -> None:
    cache: ByteLRU[bytes] = ByteLRU(10, len)
    cache.put("a", b"1234")
    cache.put("b", b"1234")
    assert cache.get("a") == b"1234"  # now the most recent
    cache.put("c", b"1234")
    assert "b" not in cache and "a" in cache and "c" in cache and cache.nbytes == 8 and cache.evictions == 1
    cache.put("huge", b"x" * 11)
    assert "huge" not in cache and cache.nbytes == 8
    cache.put("a", b"123456")
    assert cache.nbytes == 10 and cache.pop("a") == b"123456" and cache.nbytes == 4


# --- the batcher -------------------------------------------------------------------------------------------------


def test_batcher_gathers_concurrent_items() -> None:
    seen: list[list[int]] = []

    def double(items: list[int]) -> list[int]:
        seen.append(list(items))
        time.sleep(0.02)
        return [2 * x for x in items]

    async def main() -> list[int]:
        with concurrent.futures.ThreadPoolExecutor(1) as lane:
            batcher = Batcher(double, lane, max_batch_size=4, max_wait_s=0.05)
            out = await asyncio.gather(*(batcher.submit(i) for i in range(10)))
            batcher.close()
            return list(out)

    assert asyncio.run(main()) == [2 * i for i in range(10)]
    assert [len(b) for b in seen] == [4, 4, 2] and sorted(x for b in seen for x in b) == list(range(10))


def test_batcher_waits_at_most_max_wait_and_reports_errors() -> None:
    def fail_on_three(items: list[int]) -> list[int]:
        if 3 in items:
            raise ValueError("three")
        return items

    async def main() -> tuple[float, Any, Any]:
        with concurrent.futures.ThreadPoolExecutor(1) as lane:
            batcher = Batcher(fail_on_three, lane, max_batch_size=64, max_wait_s=0.05)
            start = time.perf_counter()
            await batcher.submit(1)
            waited = time.perf_counter() - start
            results = await asyncio.gather(batcher.submit(3), batcher.submit(4), return_exceptions=True)
            after = await batcher.submit(5)  # the batcher goes on after a failed batch
            batcher.close()
            return waited, results, after

    waited, results, after = asyncio.run(main())
    assert 0.04 <= waited < 1.0
    assert all(isinstance(r, ValueError) for r in results) and after == 5


def test_concurrent_classify_requests_share_batches_and_label_embeddings(scene_files: Any) -> None:
    """16 concurrent requests with the same labels: the images go through in a few batches, each label text is
    embedded once, and every answer equals the answer of a lone request."""
    from alignsam.synthetic import SceneConfig

    labels = list(SceneConfig(image_size=128).classes)
    images = [b64(p.read_bytes()) for p in sorted(scene_files.glob("*.png"))]
    with Service("demo", "demo", align_wait_ms=50) as service:
        lone = [service.classify({"images": [im], "labels": labels})["predictions"][0] for im in images[:2]]
    with Service("demo", "demo", align_wait_ms=50) as service:
        calls: list[int] = []
        real = service._embed_text_lists

        def counted(lists: list[tuple[str, ...]]) -> list[torch.Tensor]:
            calls.append(sum(len(x) for x in lists))
            return real(lists)

        service.text_batcher.fn = counted
        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            answers = list(
                pool.map(lambda k: service.classify({"images": [images[k % len(images)]], "labels": labels}), range(16))
            )
        assert sum(calls) == len(labels)  # each label's prompt embedded once for all 16 requests
        stats = service.image_batcher.stats
        assert stats.items == 16 and stats.largest >= 4, stats
        for k in range(2):
            got = answers[k]["predictions"][0]
            assert got["labels"] == lone[k]["labels"] and got["scores"] == pytest.approx(lone[k]["scores"], abs=1e-5)
