"""Captions and caption noise: every object named, variety, relations that hold, noise share and kinds."""

from __future__ import annotations

import re
from collections import Counter

import numpy as np
import pytest

from alignsam.synthetic import SceneConfig, SceneGenerator
from alignsam.synthetic.captions import CONTENT_WORDS, RELATIONS
from alignsam.synthetic.noise import junk_caption, truncate_caption


@pytest.fixture(scope="module")
def noisy_scenes():
    # Small images: noise does not depend on the picture, and 2,000 scenes must stay quick.
    gen = SceneGenerator(SceneConfig(image_size=32, noise=0.3), seed=21)
    return list(gen.range(0, 2000))


def test_clean_captions_name_every_object_and_nothing_else(noisy_scenes, mentioned):
    for scene in noisy_scenes[:600]:
        assert set(mentioned(scene.clean_caption)) == set(scene.labels), scene.clean_caption
        if scene.noise == "none":
            assert scene.caption == scene.clean_caption


def test_captions_are_varied(noisy_scenes, mentioned):
    captions = [s.clean_caption for s in noisy_scenes[:1000]]
    assert len(set(captions)) > 0.9 * len(captions)
    # Many phrasings: the words that come before the first colour word.
    openings = Counter(c.lower().split(mentioned(c)[0].split()[0], 1)[0].strip() for c in captions)
    assert len(openings) >= 25
    assert max(openings.values()) < 0.5 * len(captions)
    text = " ".join(captions).lower()
    for phrase in ("a photo of", "there are", "two ", "background", "to the left of", "in the ", "disc", "violet"):
        assert phrase in text, phrase


def test_relations_hold_in_the_picture(noisy_scenes, mentioned):
    # A relation joins two single objects: "<a colour shape> <relation> <a colour shape>".
    phrases = sorted((p for ps in RELATIONS.values() for p in ps), key=len, reverse=True)
    pattern = re.compile(r" ({}) (a|an|one) ".format("|".join(map(re.escape, phrases))))
    direction = {p: k for k, ps in RELATIONS.items() for p in ps}
    checked = Counter()
    for scene in noisy_scenes:
        if len(scene.objects) != 2:
            continue
        for match in pattern.finditer(scene.clean_caption):
            left, right = scene.clean_caption[: match.start()], scene.clean_caption[match.start(2) :]
            right_named = mentioned(" ".join(right.split()[:5]))
            if not right_named:
                continue  # "near the top" is a region, not a relation
            a = next(o for o in scene.objects if o.label == mentioned(left)[-1])
            b = next(o for o in scene.objects if o.label == right_named[0])
            (ax, ay), (bx, by) = a.center, b.center
            relation = direction[match.group(1)]
            clear = 0.15 * 32
            truth = {
                "left": bx - ax > clear,
                "right": ax - bx > clear,
                "above": by - ay > clear,
                "below": ay - by > clear,
                "near": abs(ax - bx) <= clear and abs(ay - by) <= clear,
            }
            assert truth[relation], (scene.clean_caption, a.center, b.center)
            checked[relation] += 1
    assert all(checked[r] >= 5 for r in ("left", "right", "above", "below")), checked


def test_noise_share_is_close_to_the_configured_share(noisy_scenes):
    kinds = Counter(s.noise for s in noisy_scenes)
    noisy = len(noisy_scenes) - kinds["none"]
    assert abs(noisy / len(noisy_scenes) - 0.3) < 0.04
    for kind in ("wrong", "truncated", "unrelated"):
        assert kinds[kind] > 0.2 * noisy, kinds


def test_noise_is_nested_across_shares():
    low = SceneGenerator(SceneConfig(image_size=32, noise=0.3), seed=5)
    high = SceneGenerator(SceneConfig(image_size=32, noise=0.6), seed=5)
    pairs = [(low[i].noise, high[i].noise) for i in range(200)]
    assert all(h != "none" for lo, h in pairs if lo != "none")
    assert sum(h != "none" for _, h in pairs) > sum(lo != "none" for lo, _ in pairs)
    assert all(SceneGenerator(SceneConfig(image_size=32), seed=5)[i].noise == "none" for i in range(50))


def test_truncated_captions_lose_part_of_the_scene(noisy_scenes):
    truncated = [s for s in noisy_scenes if s.noise == "truncated"]
    assert truncated
    for scene in truncated:
        kept = scene.caption.removesuffix("...").split()
        words = scene.clean_caption.split()
        assert 1 <= len(kept) < len(words)
        assert kept[:-1] == words[: len(kept) - 1] and words[len(kept) - 1].startswith(kept[-1])
        content = [i for i, w in enumerate(words) if w.strip(",.:;&+").lower() in CONTENT_WORDS]
        assert len(kept) <= content[-1], "the last colour or shape word must be cut off"


def test_wrong_captions_describe_another_scene(noisy_scenes, mentioned):
    wrong = [s for s in noisy_scenes if s.noise == "wrong"]
    assert wrong
    for scene in wrong:
        named = Counter(mentioned(scene.caption))
        assert named, scene.caption  # a real description...
        assert scene.caption != scene.clean_caption
    # ...of different content (only counts may coincide: "a red star" vs "two red stars").
    different = sum(set(mentioned(s.caption)) != set(s.labels) for s in wrong)
    assert different > 0.9 * len(wrong)


def test_unrelated_captions_say_nothing_about_the_picture(noisy_scenes, mentioned):
    junk = [s.caption for s in noisy_scenes if s.noise == "unrelated"]
    assert len(set(junk)) > 0.5 * len(junk)
    rng = np.random.default_rng(0)
    for caption in junk + [junk_caption(rng) for _ in range(2000)]:
        assert not mentioned(caption)
        assert not {w.strip(",.:;()").lower() for w in caption.split()} & CONTENT_WORDS, caption
    assert any(re.fullmatch(r"IMG_\d{4}\.JPG", c) for c in junk + [junk_caption(rng) for _ in range(500)])


def test_truncate_keeps_at_least_one_word():
    rng = np.random.default_rng(0)
    for _ in range(100):
        cut = truncate_caption("red circle", rng)
        assert cut.removesuffix("...").strip() == "red"


def test_several_clean_captions_per_image(mentioned):
    gen = SceneGenerator(SceneConfig(image_size=64, min_objects=2), seed=6)
    for i in range(30):
        scene = gen[i]
        captions = gen.clean_captions(scene, 5)
        assert len(set(captions)) == 5
        assert captions == gen.clean_captions(gen[i], 5)
        for caption in captions:
            assert set(mentioned(caption)) == set(scene.labels)


def test_tiny_vocabulary_falls_back_to_junk_instead_of_a_wrong_caption_that_is_right():
    config = SceneConfig(image_size=32, shapes=("circle",), colours=("red",), max_objects=1, noise=1.0)
    gen = SceneGenerator(config.replace(noise_kinds=("wrong",)), seed=0)
    assert {gen[i].noise for i in range(20)} == {"unrelated"}
