"""Crash safety in real subprocesses: `alignsam index --add` and `alignsam embed` killed with SIGKILL at random
moments resume with nothing lost, duplicated or corrupted; a reader never sees half a batch; an embedding
folder whose commit was cut between two renames is finished, not left inconsistent."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import time
from pathlib import Path

import numpy as np
import pytest

from alignsam.cli import main
from alignsam.index import ImageIndex
from alignsam.index.store import DB_NAME
from tests.index.conftest import make_images, start_cli

N_IMAGES = 20
BATCH = 2


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("photos")
    make_images(folder, N_IMAGES)
    return folder


@pytest.fixture(scope="module")
def reference(photos, tmp_path_factory, encoder) -> dict[int, tuple[str, np.ndarray]]:
    """The index built in one go: id -> (path, vector)."""
    folder = tmp_path_factory.mktemp("reference")
    with ImageIndex.open(folder, create=True) as index:
        index.add([photos], model="demo", encoder=encoder, batch_size=BATCH)
        return table(index)


def table(index: ImageIndex) -> dict[int, tuple[str, np.ndarray]]:
    return {
        row_id: (os.fsdecode(bytes(raw)), np.frombuffer(blob, np.float32).copy())
        for row_id, raw, blob in index.conn.execute("SELECT id, path, vector FROM images JOIN vectors USING (id)")
    }


def committed(db: Path) -> int:
    """Rows committed so far, read as any reader would (0 before the database exists)."""
    if not db.is_file() or db.stat().st_size == 0:
        return 0
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
        try:
            return int(conn.execute("SELECT count(*) FROM images").fetchone()[0])
        finally:
            conn.close()
    except sqlite3.OperationalError:  # created, schema not committed yet
        return 0


def kill_when(proc, db: Path, rows: int, rng: random.Random, deadline: float = 90) -> int:
    """SIGKILL `proc` once `rows` rows are committed (plus a random few milliseconds, to land anywhere in the
    next batch); returns the rows committed when it died."""
    end = time.monotonic() + deadline
    while committed(db) < rows and proc.poll() is None:
        assert time.monotonic() < end, "the writer made no progress"
        time.sleep(0.005)
    time.sleep(rng.uniform(0, 0.06))
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    return committed(db)


def check_whole(folder: Path) -> None:
    """The database is intact and every row is complete (or there is none yet: killed before creating it)."""
    if not (folder / DB_NAME).exists():
        return
    conn = sqlite3.connect(folder / DB_NAME)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        paths = [r[0] for r in conn.execute("SELECT path FROM images")]
        assert len(paths) == len(set(paths))
        vectors = conn.execute("SELECT count(*) FROM vectors").fetchone()[0]
        assert vectors == len(paths)  # every row has its vector and every vector its row
        for (blob,) in conn.execute("SELECT vector FROM images JOIN vectors USING (id)"):
            assert abs(float(np.linalg.norm(np.frombuffer(blob, np.float32))) - 1) < 1e-5
    finally:
        conn.close()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_index_add_resumes_after_kill_9(seed, photos, reference, encoder, tmp_path):
    rng = random.Random(seed)
    folder = tmp_path / "idx"
    db = folder / DB_NAME
    argv = ["index", str(folder), "--add", str(photos), "--model", "demo", "--batch-size", str(BATCH)]
    argv += ["--threads", "1", "-q"]
    seen = []
    # two kills at random points (the first may land before anything is committed), then a run to the end
    for low, high in ((0, N_IMAGES // 2), (N_IMAGES // 2, N_IMAGES - BATCH)):
        start = min(committed(db), high)  # a loaded machine may have let the last run go further
        at = kill_when(start_cli(*argv), db, rng.randint(max(low, start), high), rng)
        seen.append(at)
        check_whole(folder)
        assert at % BATCH == 0  # whole batches only
    with ImageIndex.open(folder) as index:
        report = index.add([photos], model="demo", encoder=encoder, batch_size=BATCH)
        assert report["added"] == N_IMAGES - seen[-1] and report["unchanged"] == seen[-1]
        resumed = table(index)
    assert resumed.keys() == reference.keys()  # same ids
    for row_id, (path, vector) in reference.items():
        assert resumed[row_id][0] == path
        assert np.abs(resumed[row_id][1] - vector).max() < 1e-6, (row_id, seen)


def test_a_reader_never_sees_half_a_batch(photos, tmp_path):
    folder = tmp_path / "idx"
    db = folder / DB_NAME
    proc = start_cli(
        "index", str(folder), "--add", str(photos), "--model", "demo", "--batch-size", "4", "--threads", "1", "-q"
    )
    end = time.monotonic() + 90
    while committed(db) == 0 and proc.poll() is None:
        assert time.monotonic() < end
        time.sleep(0.005)
    observed = []
    with ImageIndex.open(folder) as reader:
        query = np.ones((1, 160), np.float32) / np.sqrt(160)
        while True:
            running = proc.poll() is None
            hits = reader.search(query, k=N_IMAGES)[0]
            count = len(hits)
            assert count % 4 == 0, count  # each batch of 4 appears whole or not at all
            assert len({h["path"] for h in hits}) == count
            assert not observed or count >= observed[-1]
            observed.append(count)
            if not running:
                break
            time.sleep(0.01)
    assert proc.returncode == 0 and observed[-1] == N_IMAGES
    assert len({c for c in observed if 0 < c < N_IMAGES}) >= 2, observed  # it did read while the writer wrote


def test_embed_resumes_after_kill_9(photos, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("ALIGNSAM_CACHE", "off")
    assert main(["embed", "--images", str(photos), "--out", str(tmp_path / "once"), "--model", "demo", "-q"]) == 0
    capsys.readouterr()
    out = tmp_path / "killed"
    db = out / ".embed-progress" / DB_NAME
    argv = ["embed", "--images", str(photos), "--out", str(out), "--model", "demo", "--batch-size", str(BATCH)]
    at = kill_when(start_cli(*argv, "--threads", "1", "-q"), db, N_IMAGES // 2, random.Random(7))
    assert at >= N_IMAGES // 2 and not (out / "images.npy").exists()  # kept, not yet committed

    from alignsam.tools.encoder import Encoder

    embedded = []
    original = Encoder.encode_pixels
    monkeypatch.setattr(Encoder, "encode_pixels", lambda self, x, **kw: embedded.append(len(x)) or original(self, x))
    assert main([*argv, "--workers", "1"]) == 0
    summary_err = capsys.readouterr().err
    assert sum(embedded) == N_IMAGES - at  # only what the killed run had not finished
    assert f"going on from a previous run: {at} images already embedded" in summary_err
    assert sorted(p.name for p in out.iterdir()) == ["embeddings.json", "images.npy", "images.parquet"]
    import pyarrow.parquet as pq

    once = np.load(tmp_path / "once" / "images.npy")
    again = np.load(out / "images.npy")
    assert (
        pq.read_table(out / "images.parquet").to_pydict()
        == pq.read_table(tmp_path / "once" / "images.parquet").to_pydict()
    )
    assert once.shape == again.shape == (N_IMAGES, 160) and np.abs(once - again).max() < 1e-6


def test_an_embedding_commit_cut_between_renames_is_finished(photos, tmp_path, encoder, monkeypatch):
    from alignsam.tools import embed as embed_module
    from alignsam.tools.embed import export_embeddings, load_image_index

    out = tmp_path / "emb"
    images = sorted(photos.glob("*.png"))
    export_embeddings(encoder, out, images=images[:3])
    renames = []
    real = os.replace

    def dies_on_the_second_rename(src, dst):
        if str(dst).endswith(("images.npy", "images.parquet", "embeddings.json")):
            renames.append(dst)
            if len(renames) == 2:
                raise KeyboardInterrupt  # the process dies here: one file new, the others old
        return real(src, dst)

    monkeypatch.setattr(embed_module.os, "replace", dies_on_the_second_rename)
    with pytest.raises(KeyboardInterrupt):
        export_embeddings(encoder, out, images=images[:7], overwrite=True)
    monkeypatch.setattr(embed_module.os, "replace", real)
    assert (out / ".embed-commit.json").exists()
    vectors, paths = load_image_index(out)  # the next reader finishes the commit
    assert vectors.shape[0] == len(paths) == 7 and not (out / ".embed-commit.json").exists()
    assert not list(out.glob(".*.partial"))

    # killed before the journal: the old embeddings stay, and the temporary files go with the next write
    def dies_before_the_journal(src, dst):
        if str(dst).endswith(".embed-commit.json"):
            raise KeyboardInterrupt
        return real(src, dst)

    monkeypatch.setattr(embed_module.os, "replace", dies_before_the_journal)
    with pytest.raises(KeyboardInterrupt):
        export_embeddings(encoder, out, images=images[:2], overwrite=True)
    monkeypatch.setattr(embed_module.os, "replace", real)
    vectors, paths = load_image_index(out)
    assert vectors.shape[0] == len(paths) == 7
