"""The scene generator: determinism, splits, exact masks, occlusion limits, sizes, configuration errors."""

from __future__ import annotations

import hashlib
import json
import pickle

import numpy as np
import pytest

from alignsam.errors import ConfigError, InputError
from alignsam.synthetic import COLOURS, SHAPES, SceneConfig, SceneGenerator
from alignsam.synthetic.backgrounds import HIGH, LOW, render_background
from alignsam.synthetic.scenes import BACKGROUND, _own_area, _rng


def _digest(scene) -> str:
    h = hashlib.sha256(scene.image.tobytes())
    for obj in scene.objects:
        h.update(np.packbits(obj.mask).tobytes())
    h.update(scene.caption.encode())
    return h.hexdigest()


# --- determinism and splits ----------------------------------------------------------------------------------


def test_same_config_seed_and_index_give_identical_scenes():
    config = SceneConfig(noise=0.5)
    a, b = SceneGenerator(config, seed=3), SceneGenerator(SceneConfig(noise=0.5), seed=3)
    # Random access: the order of requests must not matter.
    first = [_digest(a[i]) for i in (5, 0, 17)]
    second = [_digest(b[i]) for i in (17, 0, 5)][::-1]
    assert first == second
    s1, s2 = a[9], b[9]
    assert s1.image.tobytes() == s2.image.tobytes()
    assert s1.to_dict() == s2.to_dict()


def test_different_indices_and_seeds_give_different_scenes():
    gen = SceneGenerator(seed=0)
    digests = {_digest(gen[i]) for i in range(60)}
    assert len(digests) == 60
    assert _digest(SceneGenerator(seed=1)[0]) != _digest(gen[0])


def test_train_and_held_out_sets_do_not_overlap():
    config = SceneConfig(image_size=48)
    train = SceneGenerator(config, seed=0).range(0, 400)
    held_out_by_seed = SceneGenerator(config, seed=1).range(0, 200)
    held_out_by_range = SceneGenerator(config, seed=0).range(400, 600)
    images = {hashlib.sha256(s.image.tobytes()).digest() for s in train}
    assert len(images) == 400
    assert not images & {hashlib.sha256(s.image.tobytes()).digest() for s in held_out_by_seed}
    assert not images & {hashlib.sha256(s.image.tobytes()).digest() for s in held_out_by_range}


def test_noise_share_leaves_images_unchanged():
    clean, noisy = SceneGenerator(SceneConfig(), seed=4), SceneGenerator(SceneConfig(noise=0.9), seed=4)
    for i in range(10):
        assert clean[i].image.tobytes() == noisy[i].image.tobytes()
        assert clean[i].clean_caption == noisy[i].clean_caption


def test_generators_pickle_and_scenes_serialise():
    # Data-loader workers receive the generator by pickling; ground truth goes to JSON.
    gen = SceneGenerator(SceneConfig(image_size=40, noise=0.5), seed=5)
    clone = pickle.loads(pickle.dumps(gen))
    assert _digest(clone[3]) == _digest(gen[3])
    record = json.loads(json.dumps(gen[3].to_dict()))
    assert record["index"] == 3 and [o["label"] for o in record["objects"]] == gen[3].labels


def test_scene_range_is_a_sequence():
    gen = SceneGenerator(SceneConfig(image_size=32), seed=2)
    r = gen.range(10, 20)
    assert len(r) == 10
    assert _digest(r[0]) == _digest(gen[10]) and _digest(r[-1]) == _digest(gen[19])
    assert [s.index for s in r[2:5]] == [12, 13, 14]
    assert [s.index for s in r] == list(range(10, 20))
    with pytest.raises(IndexError):
        r[10]
    with pytest.raises(InputError):
        gen.range(5, 2)


# --- masks -----------------------------------------------------------------------------------------------------


def _background(gen: SceneGenerator, index: int) -> np.ndarray:
    rng = _rng(gen.seed, index, BACKGROUND)
    kind = gen.config.backgrounds[int(rng.integers(len(gen.config.backgrounds)))]
    return render_background(kind, gen.config.image_size, rng)


def test_hard_edged_masks_are_exactly_the_object_pixels():
    gen = SceneGenerator(SceneConfig(supersample=1, max_objects=6), seed=8)
    for i in range(40):
        scene = gen[i]
        owner = np.zeros(scene.image.shape[:2], dtype=int)
        for k, obj in enumerate(scene.objects, start=1):
            assert (scene.image[obj.mask] == obj.rgb).all()
            assert not (owner[obj.mask]).any(), "masks overlap"
            owner[obj.mask] = k
        # Every other pixel is untouched background.
        background = _background(gen, i)
        assert (scene.image[owner == 0] == background[owner == 0]).all()


def test_anti_aliased_masks_are_exact_inside_and_own_their_edges():
    gen = SceneGenerator(SceneConfig(supersample=2, max_objects=5), seed=9)
    exact = total = 0
    for i in range(40):
        scene = gen[i]
        background = _background(gen, i).astype(int)
        masks = scene.masks
        assert masks.sum(0).max() <= 1, "masks overlap"
        others = masks.sum(0) > 0
        for obj in scene.objects:
            m = obj.mask
            # Interior pixels (4-neighbours in the mask) are fully covered: exactly the object's colour.
            inner = m.copy()
            inner[1:, :] &= m[:-1, :]
            inner[:-1, :] &= m[1:, :]
            inner[:, 1:] &= m[:, :-1]
            inner[:, :-1] &= m[:, 1:]
            exact += int((scene.image[inner] == obj.rgb).all(axis=1).sum())
            total += int(inner.sum())
            # An edge pixel is at least half covered: closer to the object's colour than to the background.
            near_other = others & ~m
            grown = near_other.copy()
            grown[1:, :] |= near_other[:-1, :]
            grown[:-1, :] |= near_other[1:, :]
            grown[:, 1:] |= near_other[:, :-1]
            grown[:, :-1] |= near_other[:, 1:]
            edge = m & ~inner & ~grown  # edges against the background only
            pixels = scene.image[edge].astype(int)
            to_object = np.abs(pixels - np.array(obj.rgb)).sum(1)
            to_background = np.abs(pixels - background[edge]).sum(1)
            assert (to_object <= to_background + 3).all()
    assert exact / total > 0.98


@pytest.mark.parametrize("supersample", [1, 2, 4])
def test_masks_are_where_the_geometry_says(supersample):
    # Symmetric shapes alone in a scene: no bias in mask area or position against the exact geometry.
    config = SceneConfig(image_size=96, shapes=("circle", "square"), supersample=supersample, max_objects=1)
    gen = SceneGenerator(config, seed=0)
    ratios, offsets = [], []
    for i in range(40):
        (obj,) = gen[i].objects
        ratios.append(obj.area / (SHAPES[obj.shape].area * obj.extent**2))
        rows, cols = np.nonzero(obj.mask)
        offsets.append((cols.mean() + 0.5 - obj.center[0], rows.mean() + 0.5 - obj.center[1]))
    assert abs(np.mean(ratios) - 1) < 0.02
    assert np.abs(np.mean(offsets, axis=0)).max() < 0.1
    assert np.abs(offsets).max() < 0.5 / supersample + 0.1  # outlines are drawn at whole drawing pixels


def test_bbox_and_area_are_the_mask_extent():
    gen = SceneGenerator(SceneConfig(image_size=100, max_objects=6), seed=10)
    for i in range(40):
        for obj in gen[i].objects:
            rows, cols = np.nonzero(obj.mask)
            assert obj.bbox == (cols.min(), rows.min(), cols.max() + 1, rows.max() + 1)
            assert obj.area == obj.mask.sum() > 0
            assert obj.mask.dtype == bool and obj.mask.shape == (100, 100)


def test_occlusion_stays_within_the_limit():
    config = SceneConfig(max_objects=8, max_occlusion=0.2)
    gen = SceneGenerator(config, seed=11)
    # The own-area measure agrees with an object drawn alone in its own scene.
    alone = SceneGenerator(config.replace(min_objects=1, max_objects=1), seed=1)
    for i in range(5):
        obj = alone[i].objects[0]
        placement = alone.layout(i)[0]
        assert _own_area(placement, config) == obj.area
    hidden_any = False
    for i in range(40):
        scene = gen[i]
        placements = {(p.center, p.shape): p for p in gen.layout(i)}
        for obj in scene.objects:
            own = _own_area(placements[(obj.center, obj.shape)], config)
            assert obj.area >= (1 - 0.2) * own
            hidden_any |= obj.area < own
    assert hidden_any, "no scene had any overlap; the test proves nothing"


def test_same_coloured_objects_never_touch():
    gen = SceneGenerator(SceneConfig(max_objects=8, repeat=0.6, colours=("red", "blue")), seed=12)
    for i in range(30):
        scene = gen[i]
        for a in range(len(scene.objects)):
            for b in range(a + 1, len(scene.objects)):
                oa, ob = scene.objects[a], scene.objects[b]
                if oa.colour != ob.colour:
                    continue
                grown = oa.mask.copy()
                grown[1:, :] |= oa.mask[:-1, :]
                grown[:-1, :] |= oa.mask[1:, :]
                grown[:, 1:] |= oa.mask[:, :-1]
                grown[:, :-1] |= oa.mask[:, 1:]
                assert not (grown & ob.mask).any()


def test_colours_stand_out_from_the_background():
    gen = SceneGenerator(SceneConfig(), seed=13)
    for i in range(20):
        background = _background(gen, i)
        assert background.min() >= LOW and background.max() <= HIGH
        for obj in gen[i].objects:
            rgb = np.array(obj.rgb)
            # Saturated (channel spread) or bright white: never a muted grey like the background.
            assert rgb.max() - rgb.min() >= 90 or rgb.min() >= 220
    for base in COLOURS.values():
        assert max(base) - min(base) >= 100 or min(base) >= 230


# --- sizes, counts, forced objects -------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [32, 33, 64, 100, 257, 512, 1024])
def test_image_sizes(size):
    scene = SceneGenerator(SceneConfig(image_size=size), seed=0)[3]
    assert scene.image.shape == (size, size, 3) and scene.image.dtype == np.uint8
    assert scene.masks.shape == (len(scene.objects), size, size)
    assert scene.objects and all(o.area > 0 for o in scene.objects)


def test_object_counts_follow_the_config():
    gen = SceneGenerator(SceneConfig(image_size=64, min_objects=2, max_objects=3), seed=14)
    counts = [len(gen[i].objects) for i in range(60)]
    assert set(counts) <= {1, 2, 3} and {2, 3} <= set(counts)
    assert counts.count(1) <= 2  # only when placement fails, which must be rare


def test_forced_objects():
    gen = SceneGenerator(SceneConfig(), seed=0)
    scene = gen.scene(4, objects=[("star", "red")])
    assert scene.labels == ["red star"]
    two = gen.scene(4, objects=[("heart", "blue"), ("cross", "white")])
    assert sorted(two.labels) == ["blue heart", "white cross"]
    with pytest.raises(InputError, match="outside the configured vocabulary"):
        gen.scene(0, objects=[("hexagon", "red")])
    with pytest.raises(InputError):
        gen.scene(0, objects=[])


# --- configuration and argument errors --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"image_size": 16}, "image_size=16 is out of range"),
        ({"image_size": 2048}, "out of range"),
        ({"min_objects": 0}, "at least 1 object"),
        ({"min_objects": 3, "max_objects": 2}, "max_objects=2"),
        ({"shapes": ("circle", "blob")}, "unknown shapes \\['blob'\\]; choose from: circle"),
        ({"colours": ("red", "grey")}, "unknown colours"),
        ({"colours": ()}, "colours is empty"),
        ({"shapes": ("star", "star")}, "twice"),
        ({"noise": 1.5}, "noise=1.5"),
        ({"noise": 0.3, "noise_kinds": ()}, "at least one noise kind"),
        ({"noise_kinds": ("garbled",)}, "unknown noise_kinds"),
        ({"supersample": 8}, "supersample=8"),
        ({"max_occlusion": 1.0}, "max_occlusion"),
        ({"shapes": "circle"}, "list of names"),
        ({"image_size": 64.0}, "integer"),
    ],
)
def test_bad_config_is_a_clear_error(changes, message):
    with pytest.raises(ConfigError, match=message):
        SceneConfig(**changes)


def test_config_round_trips_through_json_dicts():
    config = SceneConfig(image_size=96, shapes=["circle", "hexagon"], noise=0.25, noise_kinds=["wrong"])
    assert config.shapes == ("circle", "hexagon")
    assert SceneConfig.from_dict(config.to_dict()) == config
    assert config.classes[:2] == ("red circle", "red hexagon")
    with pytest.raises(ConfigError, match="unknown SceneConfig fields \\['colour'\\]"):
        SceneConfig.from_dict({"colour": ["red"]})


def test_bad_seed_and_index():
    with pytest.raises(InputError, match="seed"):
        SceneGenerator(seed=-1)
    gen = SceneGenerator()
    with pytest.raises(InputError, match="index"):
        gen[-1]
    with pytest.raises(InputError, match="index"):
        gen["3"]  # type: ignore[index]
    with pytest.raises(TypeError, match="range"):
        iter(gen)
