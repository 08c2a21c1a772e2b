"""Data pipelines: brace expansion, tar streaming, corrupt samples, filters, splitting, exact resumption."""

from __future__ import annotations

import io
import json
import tarfile
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from alignsam.align import AlignImageProcessor, AlignTokenizer
from alignsam.errors import ConfigError, InputError
from alignsam.train.align.data import (
    FilterConfig,
    LoaderState,
    PairStream,
    ResumableLoader,
    SampleFilter,
    TableSource,
    TrainTransform,
    WebDatasetSource,
    expand_braces,
    iter_tar,
    open_source,
    repeated_captions,
    shard_list,
)
from tests.tools.conftest import MINILM


def test_brace_expansion():
    assert expand_braces("a/{000..003}.tar") == [f"a/{i:03d}.tar" for i in range(4)]
    assert expand_braces("{a,b}-{1..2}") == ["a-1", "a-2", "b-1", "b-2"]
    assert expand_braces("x{a,b{1..2}}y") == ["xay", "xb1y", "xb2y"]
    assert expand_braces("{0..10..5}") == ["0", "5", "10"]
    assert expand_braces("{3..1}") == ["3", "2", "1"]
    assert expand_braces("plain.tar") == ["plain.tar"]
    assert expand_braces("{x}.tar") == ["{x}.tar"]  # as bash: one item is no expansion


def test_shard_list_joins_sources_and_reports_missing_shards(shards):
    root = Path(shards["out"])
    spec = f"{root}/{{00000..00001}}.tar::{root}/00005.tar"
    assert [Path(p).name for p in shard_list(spec)] == ["00000.tar", "00001.tar", "00005.tar"]
    with pytest.raises(InputError, match="2 of 8 shards do not exist"):
        shard_list(f"{root}/{{00000..00006}}.tar::{root}/nope.tar")


def _tar(members: list[tuple[str, bytes]]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def test_iter_tar_groups_members_by_key(tmp_path):
    path = tmp_path / "x.tar"
    path.write_bytes(
        _tar(
            [("d/a.jpg", b"1"), ("d/a.txt", b"cap"), ("d/a.seg.PNG", b"2"), ("._junk", b"0"), ("b.txt", b"t"),
             ("noext", b"?"), ("b.json", b"{}")]
        )
    )  # fmt: skip
    assert list(iter_tar(path)) == [
        ("d/a", {"jpg": b"1", "txt": b"cap", "seg.png": b"2"}),
        ("b", {"txt": b"t", "json": b"{}"}),
    ]


def test_a_truncated_shard_is_counted_not_fatal(tmp_path, shards):
    good = Path(shards["out"]) / "00000.tar"
    broken = tmp_path / "00001.tar"
    broken.write_bytes(good.read_bytes()[:20_000])  # cut inside a member
    source = WebDatasetSource(f"{tmp_path}/00001.tar")
    counts: Counter[str] = Counter()
    got = list(source.stream(0, 0, 0, 1, counts))
    assert 0 < len(got) < 40 and counts["skipped:unreadable_shard"] == 1


def _tokenizer() -> AlignTokenizer:
    return AlignTokenizer.from_pretrained(MINILM)


def _stream(source, *, workers=0, batch_size=8, state=None, filters=None, rank=0, world=1, banned=()):
    return PairStream(
        source,
        tokenizer=_tokenizer(),
        transform=TrainTransform(AlignImageProcessor(size=36, crop_size=32), hflip=True),
        sample_filter=SampleFilter(filters or FilterConfig(), frozenset(banned)),
        batch_size=batch_size,
        seed=3,
        rank=rank,
        world_size=world,
        workers=workers,
        shuffle_buffer=50,
        state=state,
    )


def _epoch_keys(source, streams: int) -> list[list[str]]:
    out = []
    for s in range(streams):
        counts: Counter[str] = Counter()
        out.append([x.key for x in source.stream(0, 3, s, streams, counts)])
    return out


def test_corrupt_samples_are_skipped_and_counted(shards):
    # One pass over the whole epoch: every damaged sample is dropped under its own reason, the rest kept.
    source = open_source(f"{shards['out']}/{{00000..00005}}.tar")
    assert isinstance(source, WebDatasetSource)
    stream = _stream(source, batch_size=1)
    damaged = shards["corrupt"]["keys"]
    assert damaged, "the fixture must damage some samples"
    batches = [next(it) for it in [iter(stream)] for _ in range(240 - len(damaged))]
    keys = {b["keys"][0] for b in batches}
    assert keys.isdisjoint(damaged) and len(keys) == 240 - len(damaged)
    want = Counter(
        {"truncated_image": "skipped:bad_image", "not_an_image": "skipped:bad_image",
         "missing_caption": "skipped:missing_caption", "bad_json": "skipped:bad_json"}[kind]
        for kind in damaged.values()
    )  # fmt: skip
    assert batches[-1]["counts"] == dict(want)
    b = batches[0]
    assert b["pixel_values"].shape == (1, 3, 32, 32) and b["input_ids"][0, 0] == 101  # [CLS]


def test_streams_split_the_data_disjointly_and_completely(shards):
    source = WebDatasetSource(f"{shards['out']}/{{00000..00005}}.tar")
    for streams in (4, 6, 8):  # 8 > 6 shards: every stream reads every shard and keeps every 8th sample
        parts = _epoch_keys(source, streams)
        flat = [k for p in parts for k in p]
        assert len(flat) == len(set(flat)) and all(parts)
        assert len(flat) == len(_epoch_keys(source, 1)[0])
    # the epoch changes the shard order, the seed fixes it
    c: Counter[str] = Counter()
    first = [x.key for x in source.stream(0, 3, 0, 1, c)]
    assert first == [x.key for x in source.stream(0, 3, 0, 1, c)] != [x.key for x in source.stream(1, 3, 0, 1, c)]


def test_filters_on_coyo_metadata_and_captions(shards):
    root = Path(shards["out"])
    table = pq.read_table([root / f"{i:05d}.parquet" for i in range(6)]).to_pylist()
    ok = {r["key"] for r in table if r["corruption"] is None}
    filters = FilterConfig(min_clip_similarity=0.3, max_watermark=0.5, min_words=3, rules=("num_faces<=0",))
    want = {
        r["key"]
        for r in table
        if r["key"] in ok
        and r["clip_similarity_vitb32"] >= 0.3
        and r["watermark_score"] <= 0.5
        and len(r["caption"].split()) >= 3
        and r["num_faces"] <= 0
    }
    assert 0 < len(want) < len(ok) - 20
    stream = iter(_stream(WebDatasetSource(f"{root}/{{00000..00005}}.tar"), batch_size=1, filters=filters))
    batches = [next(stream) for _ in range(len(want))]
    assert {b["keys"][0] for b in batches} == want
    # The last sample of the epoch comes out of the shuffle buffer after the whole epoch was read. Metadata
    # rules run before decoding, so damaged images are filtered too; a bad json or no caption comes first.
    readable = {r["key"] for r in table if r["corruption"] not in ("bad_json", "missing_caption")}
    assert batches[-1]["counts"]["filtered:min_clip_similarity"] == sum(
        1 for r in table if r["key"] in readable and r["clip_similarity_vitb32"] < 0.3
    )


def test_filter_config_rules():
    assert FilterConfig.align_paper().min_words == 3 and FilterConfig.coyo().max_nsfw == 0.5
    f = SampleFilter(FilterConfig(min_image_side=200, max_aspect_ratio=3.0, max_text_length=10))
    assert f.reason("ok", {"original_width": 640, "original_height": 400, "width": 64, "height": 64}) is None
    assert f.reason("ok", {"width": 640, "height": 100}) == "filtered:min_image_side"
    assert f.reason("ok", {"width": 900, "height": 250}) == "filtered:max_aspect_ratio"
    assert f.reason("a" * 11, None) == "filtered:max_text_length"
    assert f.reason("ok", None) is None  # no size in the metadata: judged on the decoded image
    assert f.size_reason(150, 300) == "filtered:min_image_side"
    g = SampleFilter(FilterConfig(max_watermark=0.5))
    assert g.reason("x", {"watermark_score": "0.7"}) == "filtered:max_watermark"  # CSV cells are strings
    assert g.reason("x", {}) == "filtered:max_watermark:missing"
    assert repeated_captions(["a", "a ", "b", "a"], 2) == frozenset({"a"})
    with pytest.raises(ConfigError, match="column OP number"):
        FilterConfig(rules=("clip_similarity > high",))
    with pytest.raises(ConfigError, match="non-negative"):
        FilterConfig(min_words=-1)


def test_caption_repeats_filter(table, tmp_path):
    # A CSV of 30 rows where "click here to enlarge" captions 3 images and "logo" 2: with at most 2 repeats
    # allowed, the three "click here" rows go.
    rows = TableSource(Path(table["out"]) / "captions.parquet").rows[:30]
    captions = ["click here to enlarge"] * 3 + ["logo"] * 2 + [r["caption"] for r in rows[5:]]
    lines = ["image,caption"] + [f"{Path(table['out']) / r['image']},{c}" for r, c in zip(rows, captions, strict=True)]
    (tmp_path / "pairs.csv").write_text("\n".join(lines) + "\n")
    source = TableSource(tmp_path / "pairs.csv")
    banned = repeated_captions(source.captions(), 2)
    assert banned == {"click here to enlarge"}
    stream = iter(_stream(source, batch_size=1, filters=FilterConfig(max_caption_repeats=2), banned=banned))
    batches = [next(stream) for _ in range(27)]
    assert sorted(int(b["keys"][0]) for b in batches) == list(range(3, 30))
    assert batches[-1]["counts"] == {"filtered:max_caption_repeats": 3}


def test_table_sources_parquet_csv_and_pair_folder(table, tmp_path):
    root = Path(table["out"])
    parquet, csv_ = TableSource(root / "captions.parquet"), TableSource(root / "captions.csv")
    assert [r["caption"] for r in parquet.rows] == [r["caption"] for r in csv_.rows]
    assert float(csv_.rows[0]["clip_similarity_vitb32"]) == parquet.rows[0]["clip_similarity_vitb32"]
    assert len(TableSource(root).rows) == 120  # a folder with tables: the parquet one
    for i in range(3):
        (tmp_path / f"{i}.png").write_bytes((root / parquet.rows[i]["image"]).read_bytes())
        if i:
            (tmp_path / f"{i}.txt").write_text(f"caption {i}\n")
    pairs = TableSource(tmp_path)
    counts: Counter[str] = Counter()
    assert sorted(s.caption for s in pairs.stream(0, 0, 0, 1, counts)) == ["caption 1", "caption 2"]
    assert counts == {"skipped:missing_caption": 1}
    with pytest.raises(InputError, match="no column"):
        TableSource(root / "captions.parquet", image_key="path")


def _take(loader_or_stream, n):
    it = iter(loader_or_stream)
    return [next(it) for _ in range(n)]


@pytest.mark.parametrize("workers", [0, 2])
def test_loader_resumes_exactly(shards, workers):
    # 9 batches uninterrupted vs 4 + (state) + 5: the same keys, pixels and counters.
    spec = f"{shards['out']}/{{00000..00005}}.tar"
    uninterrupted = ResumableLoader(_stream(WebDatasetSource(spec), workers=workers, batch_size=16), workers)
    full = _take(uninterrupted, 9)
    first = ResumableLoader(_stream(WebDatasetSource(spec), workers=workers, batch_size=16), workers)
    head = _take(first, 4)
    state = LoaderState.from_dict(json.loads(json.dumps(first.state().to_dict())))  # as stored in a checkpoint
    resumed = ResumableLoader(_stream(WebDatasetSource(spec), workers=workers, batch_size=16, state=state), workers)
    tail = _take(resumed, 5)
    for a, b in zip(full, head + tail, strict=True):
        assert a["keys"] == b["keys"]
        assert np.array_equal(a["pixel_values"].numpy(), b["pixel_values"].numpy())  # same crops and flips
        assert a["counts"] == b["counts"]
    assert resumed.counts() == uninterrupted.counts() and sum(resumed.counts().values()) > 0
    assert resumed.state() == uninterrupted.state()
    if workers:  # batches come from both workers in turn, so the epoch boundary is crossed (240 / 2 / 16)
        assert {b["stream"] for b in full} == {0, 1}


def test_resuming_with_other_workers_is_refused(shards):
    with pytest.raises(InputError, match="same --workers"):
        _stream(WebDatasetSource(f"{shards['out']}/00000.tar"), workers=2, state=LoaderState(workers=1))


def test_a_data_set_with_nothing_usable_fails_instead_of_hanging(shards):
    stream = _stream(WebDatasetSource(f"{shards['out']}/00000.tar"), filters=FilterConfig(min_words=1000))
    with pytest.raises(InputError, match="no usable sample"):
        next(iter(stream))


def test_train_transform_crops_flips_and_scales_like_the_processor():
    processor = AlignImageProcessor(size=40, crop_size=32)
    image = np.random.default_rng(0).integers(0, 256, (50, 60, 3), dtype=np.uint8)
    plain = TrainTransform(processor, augment=False)(image, np.random.default_rng(0))
    np.testing.assert_array_equal(plain, processor.preprocess(image))
    crops = {TrainTransform(processor)(image, np.random.default_rng(s)).tobytes() for s in range(20)}
    assert len(crops) > 10  # random crops (and flips) differ
    full = TrainTransform(AlignImageProcessor(size=32, crop_size=32), hflip=True)
    outs = [full(image, np.random.default_rng(s)) for s in range(8)]
    ref = AlignImageProcessor(size=32, crop_size=32).preprocess(image)
    assert all(np.array_equal(o, ref) or np.array_equal(o, ref[:, :, ::-1]) for o in outs)
    assert any(np.array_equal(o, ref[:, :, ::-1]) for o in outs) and any(np.array_equal(o, ref) for o in outs)


def test_grayscale_augmentation_matches_pil_luma():
    from PIL import Image

    processor = AlignImageProcessor(size=32, crop_size=32)
    image = np.random.default_rng(1).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    grey = TrainTransform(processor, hflip=False, grayscale=1.0)(image, np.random.default_rng(0))
    assert np.array_equal(grey[0], grey[1]) and np.array_equal(grey[0], grey[2])
    want = processor.preprocess(np.asarray(Image.fromarray(image).convert("L").convert("RGB")))
    np.testing.assert_allclose(grey, want, atol=1.01 / 127.5)  # PIL rounds luma in fixed point
    kept = [TrainTransform(processor, hflip=False, grayscale=0.5)(image, np.random.default_rng(s)) for s in range(40)]
    n_grey = sum(bool(np.array_equal(k[0], k[1])) for k in kept)
    assert 8 < n_grey < 32  # about half
