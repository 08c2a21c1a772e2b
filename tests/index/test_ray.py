"""The Ray path on a real local Ray instance with 2 workers: the same vectors as one process, the same paths
in the same order, unreadable files listed and not fatal. About 20-40 s on 2 cores (Ray's start included)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from alignsam.errors import InputError, MissingDependencyError
from alignsam.synthetic import SceneConfig, SceneGenerator

ray = pytest.importorskip("ray", reason="Ray is an optional extra: pip install 'alignsam[ray]'")

from alignsam.index.ray import embed_with_ray, read_paths  # noqa: E402  (after the skip)
from alignsam.tools import Encoder  # noqa: E402

TOLERANCE = 1e-5
"""Largest difference allowed between a vector from Ray and one from a single process: the same model on the
same pixels, batched differently (float32 rounding only)."""


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[str], str]:
    """20 synthetic scenes of several sizes as PNG and JPEG, and one corrupt file among them."""
    folder = tmp_path_factory.mktemp("images")
    generator = SceneGenerator(SceneConfig(image_size=64), seed=3)
    paths = []
    for i in range(20):
        image = Image.fromarray(generator[i].image)
        if i % 3 == 0:
            image = image.resize((48 + 8 * i, 64))  # not square: widths and heights are told apart
        path = folder / f"scene_{i:02d}.{'jpg' if i % 2 else 'png'}"
        image.save(path)
        paths.append(str(path))
    corrupt = folder / "scene_07b.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really a png" * 8)
    paths.insert(8, str(corrupt))
    return paths, str(corrupt)


def test_ray_vectors_equal_the_single_process_encoder(local_ray, images: tuple[list[str], str]) -> None:
    paths, corrupt = images
    batches = list(embed_with_ray(paths, "demo", workers=2, batch_size=4))
    assert len(batches) >= 2  # several batches, so order across batches is checked too

    got_paths = [p for b in batches for p in b[0]]
    vectors = np.concatenate([b[1] for b in batches])
    sizes = [s for b in batches for s in b[2]]
    failed = [f for b in batches for f in b[3]]

    assert [p for p, _ in failed] == [corrupt]
    assert "corrupt" in failed[0][1] or "cannot identify" in failed[0][1], failed
    readable = [p for p in paths if p != corrupt]
    assert got_paths == readable  # every readable path once, in input order

    reference = Encoder.from_pretrained("demo").encode_images(paths, on_error="skip")
    assert [paths[i] for i in reference.indices] == readable
    assert vectors.dtype == np.float32 and vectors.shape == tuple(reference.embeds.shape)
    np.testing.assert_allclose(vectors, reference.embeds.numpy(), rtol=0, atol=TOLERANCE)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert sizes == [Image.open(p).size for p in readable]


def test_read_paths_from_a_folder_and_a_parquet_file(images: tuple[list[str], str], tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    paths, _ = images
    assert read_paths(Path(paths[0]).parent) == sorted(paths)
    table = tmp_path / "paths.parquet"
    pq.write_table(pa.table({"path": paths[::-1], "caption": ["x"] * len(paths)}), table)
    assert read_paths(table) == paths[::-1]


def test_bad_arguments_and_a_missing_ray(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(InputError, match="duplicates"):
        list(embed_with_ray(["a.png", "a.png"], "demo"))
    assert list(embed_with_ray([], "demo")) == []

    monkeypatch.setitem(sys.modules, "ray", None)  # what `import ray` meets without the package
    with pytest.raises(MissingDependencyError, match=r"pip install \"alignsam\[ray\]\""):
        list(embed_with_ray(["a.png"], "demo"))


def test_the_ray_engine_writes_the_index_one_process_writes(
    local_ray, images: tuple[list[str], str], tmp_path: Path
) -> None:
    """`ImageIndex.add(..., engine="ray")` (what `alignsam index --engine ray` runs) against the local engine on
    the same folder: the same paths with the same ids, vectors within 1e-5, the corrupt file listed by both."""
    from alignsam.index import ImageIndex

    folder = str(Path(images[0][0]).parent)
    reports, tables = [], []
    for engine in ("local", "ray"):
        with ImageIndex.open(tmp_path / engine, create=True) as index:
            reports.append(index.add([folder], model="demo", engine=engine, workers=2, batch_size=4))
            rows = index.conn.execute(
                "SELECT images.id, images.path, vectors.vector FROM images JOIN vectors USING (id) ORDER BY id"
            ).fetchall()
            tables.append({bytes(path): (row_id, np.frombuffer(vector, np.float32)) for row_id, path, vector in rows})
    local, remote = tables
    assert set(local) == set(remote) and len(local) == 20
    for path, (row_id, vector) in local.items():
        assert remote[path][0] == row_id
        np.testing.assert_allclose(remote[path][1], vector, rtol=0, atol=TOLERANCE)
    assert [len(r["errors"]) for r in reports] == [1, 1]
