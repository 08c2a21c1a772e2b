"""The page in a real browser (headless Chromium driven by Playwright) against a real server with the demo
models, on synthetic scenes whose true masks are known. Every number is read from what the page itself
gives a person: its mask PNG download, its COCO JSON download, its result grid.

Screenshots of each step go to `tests/serve/screenshots/` (or `$ALIGNSAM_SCREENSHOTS`); look at them.
Skipped, with the reason, where Playwright or Chromium is missing (CI installs both).
"""

from __future__ import annotations

import io
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from alignsam.io.rle import decode_rle
from alignsam.serve import Service
from tests.serve.conftest import SCENES, inside_point, iou, running_server, scene

pytestmark = pytest.mark.browser
sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright is not installed (pip install playwright)")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
if CHROMIUM is None:
    pytest.skip("Chromium is not installed (apt-get install chromium)", allow_module_level=True)
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]  # fmt: skip
SHOTS = Path(os.environ.get("ALIGNSAM_SCREENSHOTS", Path(__file__).parent / "screenshots"))
LABEL_SCENES = (200, 203, 206, 208, 210)


@pytest.fixture(scope="module")
def index_dir(scene_files: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from alignsam.tools import Encoder
    from alignsam.tools.embed import export_embeddings

    out = tmp_path_factory.mktemp("index")
    export_embeddings(Encoder.from_pretrained("demo"), out, images=sorted(scene_files.glob("*.png")))
    return out


@pytest.fixture(scope="module")
def url(index_dir: Path) -> Iterator[str]:
    with Service("demo", "demo", index=index_dir) as service, running_server(service) as address:
        yield address


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    SHOTS.mkdir(parents=True, exist_ok=True)
    print(f"\nscreenshots: {SHOTS}")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser: Any, url: str) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 800}, accept_downloads=True)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.goto(url)
    yield page
    context.close()
    assert errors == [], errors  # no script errors, no CSP violations, no failed loads


def idle(page: Any) -> None:
    page.wait_for_selector("body[data-busy='0']", state="attached", timeout=60_000)
    page.wait_for_timeout(150)


def shot(page: Any, name: str) -> None:
    page.screenshot(path=str(SHOTS / f"{name}.png"))


def set_vocabulary(page: Any, words: list[str]) -> None:
    page.click("#open-settings")
    page.fill("#vocab", ", ".join(words))
    page.click("#settings-form button[type=submit]")


def open_scene(page: Any, index: int, tmp: Path) -> Any:
    path = tmp / f"scene_{index}.png"
    Image.fromarray(scene(index).image).save(path)
    page.set_input_files("#file-input", str(path))
    page.wait_for_selector("#progress.hidden", state="attached", timeout=60_000)
    idle(page)
    return page.locator("#overlay-canvas").bounding_box()


def click(page: Any, box: dict[str, float], xy: tuple[float, float], shift: bool = False) -> None:
    scale = box["width"] / 128
    at = (box["x"] + xy[0] * scale, box["y"] + xy[1] * scale)
    page.mouse.move(*at)
    if shift:
        page.keyboard.down("Shift")
    page.mouse.click(*at)
    if shift:
        page.keyboard.up("Shift")
    idle(page)


def downloaded_mask(page: Any) -> np.ndarray:
    with page.expect_download() as info:
        page.click("#download-mask")
    data = Path(info.value.path()).read_bytes()
    return np.asarray(Image.open(io.BytesIO(data)).convert("L")) > 127


def test_click_negative_click_and_find(page: Any, tmp_path: Path) -> None:
    truth = scene(203)
    shot(page, "01-empty")
    box = open_scene(page, 203, tmp_path)
    shot(page, "02-uploaded")
    target = truth.objects[1]  # the orange square
    xy = inside_point(target.mask)
    page.mouse.move(box["x"] + xy[0] * box["width"] / 128, box["y"] + xy[1] * box["width"] / 128)
    page.wait_for_timeout(600)
    idle(page)
    shot(page, "03-hover")
    click(page, box, xy)
    shot(page, "04-click")
    assert page.locator(".candidate").count() == 3
    mask = downloaded_mask(page)
    assert mask.shape == (128, 128) and iou(mask, target.mask) >= 0.8, iou(mask, target.mask)
    with page.expect_download() as info:  # the page's own COCO RLE of the mask (made in the browser)
        page.click("#download-coco")
    record = json.loads(Path(info.value.path()).read_text())
    mine = record["annotations"][-1]
    assert mine["source"] == "prompt" and (decode_rle(mine["segmentation"]) == mask).all()
    assert mine["area"] == int(mask.sum())
    # a negative click on the object, away from the first click: the mask shrinks
    ys, xs = np.nonzero(target.mask)
    far = int(np.argmax((xs - xy[0]) ** 2 + (ys - xy[1]) ** 2))
    edge = (float(xs[far]) + 0.5, float(ys[far]) + 0.5)
    negative = ((edge[0] + 2 * xy[0]) / 3, (edge[1] + 2 * xy[1]) / 3)
    negative = (negative[0] + (edge[0] - negative[0]) * 0.5, negative[1] + (edge[1] - negative[1]) * 0.5)
    click(page, box, negative, shift=True)
    shot(page, "05-negative-click")
    shrunk = downloaded_mask(page)
    assert shrunk.sum() < mask.sum(), (int(shrunk.sum()), int(mask.sum()))
    page.keyboard.press("u")  # undo brings the first mask back at once
    assert (downloaded_mask(page) == mask).all()
    page.keyboard.press("r")
    found_target = truth.objects[3]  # the red star
    page.fill("#find-text", f"the {found_target.label}")
    page.click("#find-go")
    idle(page)
    shot(page, "06-find")
    found = downloaded_mask(page)
    assert iou(found, found_target.mask) >= 0.5, [iou(found, o.mask) for o in truth.objects]


def test_label_everything_names_the_objects(page: Any, tmp_path: Path) -> None:
    set_vocabulary(page, list(SCENES.classes))
    named = right = 0
    for k, index in enumerate(LABEL_SCENES):
        truth = scene(index)
        open_scene(page, index, tmp_path)
        page.keyboard.press("l")
        page.wait_for_selector("#labels .item", timeout=60_000)
        idle(page)
        shot(page, f"07-label-everything-{index}")
        assert page.locator("#tags .chip").count() >= 1  # tags from the same vocabulary
        with page.expect_download() as info:
            page.click("#download-coco")
        record = json.loads(Path(info.value.path()).read_text())
        assert record["image"]["width"] == 128
        masks = [decode_rle(a["segmentation"]) for a in record["annotations"]]
        for obj in truth.objects:
            overlaps = [iou(m, obj.mask) for m in masks]
            named += 1
            best = int(np.argmax(overlaps)) if overlaps else -1
            right += best >= 0 and overlaps[best] >= 0.5 and record["annotations"][best]["class_name"] == obj.label
        if k == 0:
            page.keyboard.press("?")
            shot(page, "08-help")
            page.keyboard.press("Escape")
    assert named >= 12 and right / named >= 0.7, (right, named)


def test_search_returns_the_query_scene_first(page: Any, scene_files: Path) -> None:
    page.click("#tab-search")
    page.fill("#search-text", "purple star")
    page.click("#search-go")
    page.wait_for_selector(".result", timeout=30_000)
    idle(page)
    first = page.locator(".result").first.get_attribute("data-path")
    assert first is not None and first.endswith("scene_204.png"), first  # the only purple star
    page.wait_for_function("() => document.querySelector('.result img').naturalWidth > 0")
    shot(page, "09-search-text")
    query = scene_files / "scene_208.png"
    page.fill("#search-text", "")
    page.set_input_files("#search-file", str(query))
    page.click("#search-go")
    page.wait_for_selector(".result[data-rank='0'][data-path$='scene_208.png']", timeout=30_000)
    page.fill("#search-text", "a blue square")
    page.click("#search-go")
    idle(page)
    page.wait_for_selector(".result[data-rank='0'][data-path$='scene_208.png']", timeout=30_000)
    shot(page, "10-search-image-and-text")


def test_docs_work_offline(page: Any, url: str) -> None:
    page.goto(url + "/docs")
    page.get_by_text("/images/{image_id}/segment", exact=True).first.wait_for(timeout=30_000)
    shot(page, "11-docs")


def test_the_page_asks_for_the_token(browser: Any, tmp_path: Path) -> None:
    with Service("demo", "demo", token="page-token") as service, running_server(service) as address:
        context = browser.new_context(viewport={"width": 1280, "height": 800})
        page = context.new_page()
        page.goto(address)
        path = tmp_path / "s.png"
        Image.fromarray(scene(205).image).save(path)
        page.set_input_files("#file-input", str(path))
        page.wait_for_selector("#settings:not(.hidden)", timeout=30_000)
        shot(page, "12-token-asked")
        page.fill("#token", "page-token")
        page.click("#settings-form button[type=submit]")
        page.set_input_files("#file-input", str(path))
        page.wait_for_selector("#progress.hidden", state="attached", timeout=60_000)
        idle(page)
        box = page.locator("#overlay-canvas").bounding_box()
        click(page, box, inside_point(scene(205).objects[0].mask))
        assert page.locator(".candidate").count() == 3
        context.close()
