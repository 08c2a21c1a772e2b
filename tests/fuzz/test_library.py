"""The library's entry points over the malformed corpus and generated inputs: a result or one AlignSamError
line, never another exception (bounded tier: `tests/fuzz/profiles.py`)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from alignsam.errors import AlignSamError

from . import corpus
from .profiles import FUZZ, LARGE, large_only

pytestmark = pytest.mark.filterwarnings("ignore:Point .* lies outside")  # used as given, as the official code


def one_line(err: BaseException) -> None:
    assert isinstance(err, AlignSamError), f"{type(err).__name__}: {err}"
    assert str(err) and "\n" not in str(err), repr(str(err))


@pytest.fixture(scope="module")
def encoder():
    from alignsam.tools import Encoder

    return Encoder.from_pretrained("demo", device="cpu", batch_size=4, workers=1)


@pytest.fixture(scope="module")
def predictor():
    from alignsam import SamModel
    from alignsam.sam import SamPredictor

    p = SamPredictor(SamModel.from_pretrained("demo"))
    p.set_image(np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8))
    return p


IMAGES = corpus.images()
BROKEN = {"empty.png", "truncated.jpg", "header_only.png", "random.png", "random.jpg", "text.png",
          "huge_declared.png", "zero_width.png"}  # fmt: skip


@pytest.mark.parametrize(("name", "data"), IMAGES, ids=[n for n, _ in IMAGES])
def test_load_image(name, data):
    from alignsam.io.images import load_image

    try:
        image = load_image(data)
    except Exception as err:
        one_line(err)
        assert name in BROKEN | {"truncated.png"}, f"{name} is readable but was refused: {err}"
        return
    assert name not in BROKEN, f"{name} is broken but loaded"
    assert image.mode == "RGB" and min(image.size) >= 1


@FUZZ
@given(seed=st.integers(0, 2**32 - 1), which=st.sampled_from([n for n, _ in IMAGES if n not in BROKEN]))
def test_load_image_damaged(seed, which):
    from alignsam.io.images import load_image

    data = corpus.mutate(dict(IMAGES)[which], np.random.default_rng(seed))
    try:
        image = load_image(data)
    except Exception as err:
        one_line(err)
    else:
        assert image.mode == "RGB"


def test_encode_images_over_the_corpus(encoder, tmp_path):
    paths = corpus.write_images(tmp_path)
    done = encoder.encode_images(paths, on_error="skip")
    failed = {paths[i].name for i, _ in done.errors}
    assert failed >= BROKEN and "good.png" not in failed
    assert all("\n" not in message for _, message in done.errors)
    assert torch.isfinite(done.embeds).all() and done.embeds.shape[0] == len(paths) - len(failed)


@pytest.mark.parametrize(("name", "text"), corpus.texts(), ids=[n for n, _ in corpus.texts()])
def test_encode_texts_corpus(encoder, name, text):
    try:
        vectors = encoder.encode_texts([text, "a cat"])
    except Exception as err:
        one_line(err)
        return
    assert vectors.shape[0] == 2 and torch.isfinite(vectors).all()


@FUZZ
@given(st.lists(st.text(max_size=300), min_size=1, max_size=4))
def test_encode_texts_generated(encoder, texts):
    try:
        vectors = encoder.encode_texts(texts)
    except Exception as err:
        one_line(err)
    else:
        assert vectors.shape[0] == len(texts) and torch.isfinite(vectors).all()


@large_only
@pytest.mark.fuzz_large
def test_encode_a_sixty_megabyte_text(encoder):
    vectors = encoder.encode_texts(["word " * (12 * 2**20)])
    assert torch.isfinite(vectors).all()


PROMPTS = corpus.prompts()


@pytest.mark.parametrize(("name", "kwargs"), PROMPTS, ids=[n for n, _ in PROMPTS])
def test_predict_corpus(predictor, name, kwargs):
    try:
        masks, scores, _ = predictor.predict(**kwargs)
    except Exception as err:
        one_line(err)
        assert name != "good"
        return
    assert masks.shape[-2:] == (48, 64) and np.isfinite(scores).all()


NUMBER = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True, width=32), st.integers(-(2**40), 2**40), st.just(math.nan)
)


@FUZZ
@given(
    coords=st.lists(st.lists(NUMBER, min_size=0, max_size=3), min_size=0, max_size=4),
    labels=st.lists(st.integers(-3, 3), min_size=0, max_size=5),
    box=st.none() | st.lists(NUMBER, min_size=0, max_size=6),
)
def test_predict_generated(predictor, coords, labels, box):
    kwargs = {"point_coords": coords or None, "point_labels": labels or None, "box": box}
    try:
        masks, scores, _ = predictor.predict(**kwargs)
    except Exception as err:
        one_line(err)
    else:
        assert masks.shape[-2:] == (48, 64) and np.isfinite(scores).all()


ANY_VALUE = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**31), 2**31), st.floats(allow_nan=True), st.text(max_size=5),
    st.lists(st.integers(0, 3), max_size=3),
)  # fmt: skip


AMG_NAMES = [
    "points_per_side", "points_per_batch", "pred_iou_thresh", "stability_score_thresh", "box_nms_thresh",
    "crop_n_layers", "crop_overlap_ratio", "crop_n_points_downscale_factor", "min_mask_region_area",
    "output_mode", "unknown",
]  # fmt: skip


@FUZZ
@given(st.dictionaries(st.sampled_from(AMG_NAMES), ANY_VALUE, max_size=4))
def test_amg_config(changes):
    from alignsam.sam.automatic import AmgConfig

    try:
        config = AmgConfig().replace(**changes)
    except Exception as err:
        one_line(err)
    else:
        assert config.points_per_batch <= 1024 and (config.points_per_side or 0) <= 512


@FUZZ
@given(st.one_of(st.text(max_size=20), st.lists(st.text(alphabet="{}ab01:!r ", max_size=8), max_size=3)))
def test_templates(templates):
    from alignsam.tools.templates import resolve_templates

    try:
        forms = resolve_templates(templates)
    except Exception as err:
        one_line(err)
    else:
        assert all(f.format("\x00").count("\x00") == 1 for f in forms)


def _json_values() -> st.SearchStrategy:
    leaves = st.one_of(
        st.none(), st.booleans(), st.integers(-(10**12), 10**12), st.floats(allow_nan=False), st.text(max_size=4)
    )

    def nest(inner: st.SearchStrategy) -> st.SearchStrategy:
        return st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3)

    return st.recursive(leaves, nest, max_leaves=6)


def _paths(node, prefix=()):
    if isinstance(node, dict):
        for key, value in node.items():
            yield (*prefix, key)
            yield from _paths(value, (*prefix, key))


def _parsers():
    from alignsam import AlignModel, SamModel
    from alignsam.align.modeling.config import config_from_json
    from alignsam.internimage.modeling.config import InternImageConfig
    from alignsam.sam.modeling.config import SamConfig
    from tests.internimage.helpers import tiny_config

    sam = {k: v for k, v in SamModel.from_pretrained("demo").config.to_dict().items()}
    return {
        "align": (AlignModel.from_pretrained("demo").config.to_dict(), config_from_json),
        "sam": (sam, SamConfig.from_dict),
        "internimage": (tiny_config().to_dict(), InternImageConfig.from_dict),
    }


PARSERS = _parsers()


@FUZZ
@given(family=st.sampled_from(sorted(PARSERS)), data=st.data(), value=_json_values())
def test_config_parsing(family, data, value):
    import copy

    base, parse = PARSERS[family]
    config = copy.deepcopy(base)
    path = data.draw(st.sampled_from(list(_paths(config))))
    node = config
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    try:
        parse(config)
    except Exception as err:
        one_line(err)


def test_checkpoints_are_refused_and_pickles_never_run(tmp_path):
    from alignsam.io.weights import load_state_dict

    sentinel = tmp_path / "ran"
    for path in corpus.checkpoints(tmp_path / "ckpt", sentinel):
        with pytest.raises(AlignSamError) as err:
            load_state_dict(path)
        one_line(err.value)
        assert path.name in str(err.value)
    assert not sentinel.exists(), "a pickled payload ran"


@pytest.mark.skipif(LARGE, reason="the large tier runs the generated checkpoints below instead")
def test_profile_is_bounded():
    assert FUZZ.max_examples <= 50
