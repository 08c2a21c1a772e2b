"""The index as a library: incremental adds (counted), prune, search (exact and HNSW, filtered, composed,
without near-duplicates), dedupe, the model it was built with, corrupt files, names that are not UTF-8."""

from __future__ import annotations

import os
import shutil
import sqlite3

import numpy as np
import pytest
import torch

from alignsam.errors import InputError, UsageError
from alignsam.index import ImageIndex
from alignsam.index.store import DB_NAME
from tests.index.conftest import draw_image, make_images


class Counting:
    """The demo encoder, counting the images it embeds."""

    def __init__(self, encoder) -> None:
        self.inner = encoder
        self.embedded = 0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def encode_pixels(self, pixels, **kwargs):
        self.embedded += len(pixels)
        return self.inner.encode_pixels(pixels, **kwargs)


def rows(index: ImageIndex) -> dict[str, tuple[int, np.ndarray]]:
    """path -> (id, vector) of every row."""
    out = {}
    for row_id, raw, blob in index.conn.execute("SELECT id, path, vector FROM images JOIN vectors USING (id)"):
        out[os.fsdecode(bytes(raw))] = (row_id, np.frombuffer(blob, np.float32))
    return out


def test_add_embeds_only_new_and_changed_files(encoder, tmp_path):
    images = make_images(tmp_path / "photos", 8)
    counting = Counting(encoder)
    with ImageIndex.open(tmp_path / "idx", create=True) as index:
        first = index.add([tmp_path / "photos"], model="demo", encoder=counting, batch_size=4)
        assert (first["added"], first["updated"], first["unchanged"], counting.embedded) == (8, 0, 0, 8)
        before = rows(index)
        # the index's vectors are the encoder's own (same preprocessing), L2-normalised
        direct = encoder.encode_images([str(p) for p in images]).embeds.numpy()
        stored = np.stack([before[str(p)][1] for p in images])
        assert np.abs(stored - direct).max() < 1e-5
        assert np.allclose(np.linalg.norm(stored, axis=1), 1, atol=1e-5)

        again = index.add([tmp_path / "photos"], model="demo", encoder=counting, batch_size=4)
        assert (again["added"], again["updated"], again["unchanged"], counting.embedded) == (0, 0, 8, 8)

        make_images(tmp_path / "photos", 3, start=100)  # 3 new
        draw_image(images[0], seed=999)  # changed content
        os.utime(images[1], ns=(1, 1_000_000_000))  # touched: same bytes, new time
        third = index.add([tmp_path / "photos"], model="demo", encoder=counting, batch_size=4)
        assert (third["added"], third["updated"], third["touched"], third["unchanged"]) == (3, 1, 1, 6)
        assert counting.embedded == 8 + 4  # only the 3 new files and the changed one were embedded
        after = rows(index)
        assert len(after) == 11 == len(index)
        assert after[str(images[0])][0] > max(i for i, _ in before.values())  # a changed file gets a new id
        assert not np.allclose(after[str(images[0])][1], before[str(images[0])][1])
        for p in images[1:]:
            assert after[str(p)][0] == before[str(p)][0]
            assert np.array_equal(after[str(p)][1], before[str(p)][1])
        mtime = index.conn.execute("SELECT mtime_ns FROM images WHERE path=?", (os.fsencode(str(images[1])),))
        assert mtime.fetchone()[0] == 1_000_000_000


def test_unreadable_files_are_skipped_and_listed(encoder, tmp_path):
    make_images(tmp_path / "photos", 3)
    (tmp_path / "photos" / "empty.jpg").write_bytes(b"")
    (tmp_path / "photos" / "text.png").write_text("not an image")
    (tmp_path / "photos" / "notes.txt").write_text("ignored: not an image by its suffix")
    with ImageIndex.open(tmp_path / "idx", create=True) as index:
        report = index.add([tmp_path / "photos"], model="demo", encoder=encoder)
        assert report["added"] == 3 and report["ignored_files"] == 1
        assert sorted(os.path.basename(e["image"]) for e in report["errors"]) == ["empty.jpg", "text.png"]
        assert all(e["error"] and "\n" not in e["error"] for e in report["errors"])
        # still unreadable: listed again, never stored
        again = index.add([tmp_path / "photos"], model="demo", encoder=encoder)
        assert len(again["errors"]) == 2 and again["unchanged"] == 3 and len(index) == 3


def test_prune_drops_files_that_are_gone(encoder, tmp_path):
    images = make_images(tmp_path / "photos", 6)
    with ImageIndex.open(tmp_path / "idx", create=True) as index:
        index.add([tmp_path / "photos"], model="demo", encoder=encoder)
        assert index.prune() == []
        images[1].unlink()
        images[4].unlink()
        assert sorted(index.prune()) == sorted([str(images[1]), str(images[4])])
        assert len(index) == 4
        hits = index.search(np.ones((1, index.dim), np.float32) / np.sqrt(index.dim), k=10)[0]
        assert {h["path"] for h in hits} == {str(p) for i, p in enumerate(images) if i not in (1, 4)}


def test_search_metadata_filters_and_hostile_filters(encoder, tmp_path):
    for i in range(10):
        sub = "beach" if i % 2 else "city"
        draw_image(tmp_path / "photos" / sub / f"{i}.png", seed=i, size=(64 + 64 * (i % 4), 80))
    captions = {str(tmp_path / "photos" / "beach" / "1.png"): {"caption": "it's a dog", "tags": ["dog", "sand"]}}
    with ImageIndex.open(tmp_path / "idx", create=True) as index:
        index.add([tmp_path / "photos"], model="demo", encoder=encoder, captions=captions, tags=["trip"])
        query = encoder.encode_texts(["a red square"])
        every = index.search(query, k=10)[0]
        assert len(every) == 10 and [h["score"] for h in every] == sorted((h["score"] for h in every), reverse=True)
        hits = index.search(query, k=10, where="width >= 200 AND path LIKE '%/beach/%'")[0]
        expected = [h for h in every if h["width"] >= 200 and "/beach/" in h["path"]]
        assert [h["path"] for h in hits] == [h["path"] for h in expected] and len(hits) == 2
        assert index.search(query, k=10, where="caption = 'it''s a dog'")[0][0]["tags"] == ["dog", "sand", "trip"]
        assert len(index.search(query, k=10, where="tags LIKE '%\"trip\"%'")[0]) == 10
        for hostile in ("path = ''; DROP TABLE images", "width >= 1; DELETE FROM images", "1=1 OR width > 0"):
            with pytest.raises(UsageError, match="position"):
                index.search(query, k=3, where=hostile)
        assert index.search(query, k=3, where="caption = '''; DROP TABLE images; --'")[0] == []
        assert len(index) == 10


def test_composed_queries_are_the_normalised_sum_of_their_parts(encoder, tmp_path):
    images = make_images(tmp_path / "photos", 8)
    with ImageIndex.open(tmp_path / "idx", create=True) as index:
        index.add([tmp_path / "photos"], model="demo", encoder=encoder)
        spec = f"image:{images[2]} + text:at night"
        found = index.query(encoder, [spec, "text:a blue circle - 0.5*text:red"], k=8)
        assert [r["query"] for r in found["results"]] == [spec, "text:a blue circle - 0.5*text:red"]
        image_vec = encoder.encode_images([str(images[2])]).embeds[0]
        text_vec = encoder.encode_texts(["at night"])[0]
        composed = torch.nn.functional.normalize(image_vec + text_vec, dim=0).numpy()
        stored = rows(index)
        expected = sorted(stored, key=lambda p: -float(stored[p][1] @ composed))
        hits = found["results"][0]["results"]
        assert [h["path"] for h in hits] == expected
        for hit in hits:
            assert hit["score"] == pytest.approx(float(stored[hit["path"]][1] @ composed), abs=1e-5)


def test_dedupe_groups_and_search_without_duplicates(encoder, tmp_path):
    images = make_images(tmp_path / "photos", 6)
    shutil.copy(images[0], tmp_path / "photos" / "copy_of_0.png")
    shutil.copy(images[0], tmp_path / "photos" / "another_copy_of_0.png")
    shutil.copy(images[3], tmp_path / "photos" / "copy_of_3.png")
    with ImageIndex.open(tmp_path / "idx", create=True) as index:
        index.add([tmp_path / "photos"], model="demo", encoder=encoder)
        groups = index.dedupe(0.999)
        names = [sorted(os.path.basename(p) for p in g["paths"]) for g in groups]
        assert names == [
            ["another_copy_of_0.png", "copy_of_0.png", "img_000.png"],
            ["copy_of_3.png", "img_003.png"],
        ]
        assert all(g["min_score"] >= 0.999 for g in groups)
        query = encoder.encode_images([str(images[0])]).embeds
        plain = [os.path.basename(h["path"]) for h in index.search(query, k=4)[0]]
        assert set(plain[:3]) == {"img_000.png", "copy_of_0.png", "another_copy_of_0.png"}
        unique = index.search(query, k=4, dedupe=0.999)[0]
        assert len(unique) == 4 and sum("_0.png" in h["path"] or "000" in h["path"] for h in unique) == 1
        with pytest.raises(UsageError):
            index.dedupe(1.5)


def test_approximate_search_agrees_with_exact_and_follows_the_writer(encoder, tmp_path):
    make_images(tmp_path / "photos", 40)
    with ImageIndex.open(tmp_path / "exact", create=True) as exact:
        exact.add([tmp_path / "photos"], model="demo", encoder=encoder, batch_size=8)
    with ImageIndex.open(tmp_path / "ann", create=True, exact_below=10) as index:
        index.add([tmp_path / "photos"], model="demo", encoder=encoder, batch_size=8)
        info = index.info
        assert info["ann_file"] == f"ann-{info['generation']}.usearch" and info["ann_count"] == 40
        queries = encoder.encode_texts(["a red circle", "a green square", "blue"])
        for where in (None, "width >= 100", "id IN (3, 7, 11, 19, 23, 31)"):
            got = index.search(queries, k=5, where=where)
            with ImageIndex.open(tmp_path / "exact") as exact:
                want = exact.search(queries, k=5, where=where)
            for g, w in zip(got, want, strict=True):  # HNSW on 40 vectors finds the true neighbours
                assert [h["path"] for h in g] == [h["path"] for h in w]
                assert [h["score"] for h in g] == pytest.approx([h["score"] for h in w], abs=1e-5)
        # rows added after the ANN file and rows removed since are seen by a reader at once
        reader = ImageIndex.open(tmp_path / "ann", exact_below=10)
        first = reader.search(queries[:1], k=40)[0]
        (tmp_path / "photos" / "img_000.png").unlink()
        index.prune()
        assert index.info["ann_generation"] < index.info["generation"]  # one removal: the graph is kept
        pruned = reader.search(queries[:1], k=50)[0]
        assert len(pruned) == 39 and not any(h["path"].endswith("img_000.png") for h in pruned)
        make_images(tmp_path / "photos", 2, start=500)
        index.add([tmp_path / "photos"], model="demo", encoder=encoder)
        later = reader.search(queries[:1], k=50)[0]
        assert len(first) == 40 and len(later) == 41
        assert not any(h["path"].endswith("img_000.png") for h in later)
        assert sum(h["path"].endswith(("img_500.png", "img_501.png")) for h in later) == 2
        assert len(list((tmp_path / "ann").glob("ann-*.usearch"))) <= 2


def test_another_model_is_refused_and_the_index_left_untouched(encoder, tmp_path):
    make_images(tmp_path / "photos", 3)
    with ImageIndex.open(tmp_path / "idx", create=True) as index:
        index.add([tmp_path / "photos"], model="demo", encoder=encoder)
        before = (index.info, rows(index))
        with pytest.raises(InputError, match="built with the model 'demo'") as info:
            index.add([tmp_path / "photos"], model="align-base", encoder=encoder)
        assert "\n" not in str(info.value)
        # vectors of another dimension under the same name (a model folder replaced) are refused too
        batch = ([str(tmp_path / "photos" / "img_000.png")], np.ones((1, 7), np.float32), [(1, 1)], [])
        with pytest.raises(InputError, match="7-dimensional"):
            index._commit(batch, "demo", {}, [])
        after = (index.info, rows(index))
        assert after[0] == before[0] and after[1].keys() == before[1].keys()
        assert all(
            after[1][p][0] == before[1][p][0] and np.array_equal(after[1][p][1], before[1][p][1]) for p in after[1]
        )


def test_corrupt_files_are_refused_in_one_line_and_left_alone(encoder, tmp_path):
    make_images(tmp_path / "photos", 12)
    with ImageIndex.open(tmp_path / "idx", create=True, exact_below=5) as index:
        index.add([tmp_path / "photos"], model="demo", encoder=encoder)
        ann_file = tmp_path / "idx" / index.info["ann_file"]
    ann_file.write_bytes(ann_file.read_bytes()[:100])  # a damaged HNSW file
    with ImageIndex.open(tmp_path / "idx") as index, pytest.raises(InputError, match="--reindex") as info:
        index.search(np.ones((1, index.dim), np.float32), k=3)
    assert "\n" not in str(info.value)
    with ImageIndex.open(tmp_path / "idx", exact_below=5) as index:
        index.reindex()
        assert len(index.search(np.ones((1, index.dim), np.float32), k=3)[0]) == 3

    db = tmp_path / "idx" / DB_NAME
    for damage in (b"garbage" * 100, b"SQLite format 3\x00" + b"\x00" * 200):
        for leftover in (tmp_path / "idx").glob(f"{DB_NAME}-*"):
            leftover.unlink()
        db.write_bytes(damage)
        with pytest.raises(InputError) as info:
            ImageIndex.open(tmp_path / "idx", create=True)
        assert "\n" not in str(info.value) and db.read_bytes() == damage
    other = tmp_path / "other"
    other.mkdir()
    sqlite3.connect(other / DB_NAME).execute("CREATE TABLE x (y)").connection.commit()
    with pytest.raises(InputError, match="not an alignsam image index"):
        ImageIndex.open(other, create=True)
    assert sqlite3.connect(other / DB_NAME).execute("SELECT name FROM sqlite_master").fetchall() == [("x",)]


def test_file_names_that_are_not_utf8_survive(encoder, tmp_path):
    folder = tmp_path / "photos"
    make_images(folder, 2)
    raw = os.fsencode(str(folder)) + b"/caf\xe9 \xff.png"
    shutil.copy(os.fsencode(str(folder / "img_000.png")), raw)
    os.utime(raw, ns=(5, 5))
    with ImageIndex.open(tmp_path / "idx", create=True) as index:
        assert index.add([folder], model="demo", encoder=encoder)["added"] == 3
        stored = [bytes(r[0]) for r in index.conn.execute("SELECT path FROM images")]
        assert raw in stored  # the name's bytes, exactly
        assert index.add([folder], model="demo", encoder=encoder)["unchanged"] == 3
        hits = index.search(encoder.encode_images([str(folder / "img_000.png")]).embeds, k=3)[0]
        shown = {h["path"] for h in hits}
        assert str(folder) + "/caf\\xe9 \\xff.png" in shown  # printable, and JSON-safe
        assert index.search(np.ones((1, index.dim)), k=5, where="path LIKE '%caf%'")[0][0]["path"].endswith(".png")
        os.unlink(raw)
        assert index.prune() == [str(folder) + "/caf\\xe9 \\xff.png"]


def test_an_engine_failure_keeps_the_batches_committed_before_it(encoder, tmp_path, monkeypatch):
    from alignsam.index import core

    make_images(tmp_path / "photos", 10)
    real = core.embed_local

    def fails_after_two_batches(paths, enc, batch_size=None):
        for n, batch in enumerate(real(paths, enc, batch_size=batch_size)):
            if n == 2:
                raise RuntimeError("the engine died")
            yield batch

    monkeypatch.setattr(core, "embed_local", fails_after_two_batches)
    with ImageIndex.open(tmp_path / "idx", create=True) as index:
        with pytest.raises(RuntimeError, match="the engine died"):
            index.add([tmp_path / "photos"], model="demo", encoder=encoder, batch_size=3)
        assert len(index) == 6 and index.info["generation"] == 2
        monkeypatch.setattr(core, "embed_local", real)
        report = index.add([tmp_path / "photos"], model="demo", encoder=encoder, batch_size=3)
        assert (report["added"], report["unchanged"], len(index)) == (4, 6, 10)


def test_a_writer_killed_while_publishing_the_graph_leaves_the_old_one(encoder, tmp_path, monkeypatch):
    from alignsam.index import ann

    make_images(tmp_path / "photos", 12)
    with ImageIndex.open(tmp_path / "idx", create=True, exact_below=5) as index:
        index.add([tmp_path / "photos"], model="demo", encoder=encoder)
        published = index.info["ann_file"]
        real = ann.publish

        def dies_after_writing(graph, folder, generation):
            graph.save(str(folder / f".ann-{generation}.usearch.partial"))
            raise KeyboardInterrupt  # killed before the rename

        monkeypatch.setattr(ann, "publish", dies_after_writing)
        make_images(tmp_path / "photos", 2, start=50)
        with pytest.raises(KeyboardInterrupt):
            index.add([tmp_path / "photos"], model="demo", encoder=encoder)
        assert index.info["ann_file"] == published and len(index) == 14
        with ImageIndex.open(tmp_path / "idx") as reader:  # the old graph plus the rows committed since
            assert len(reader.search(np.ones((1, index.dim), np.float32), k=20)[0]) == 14
        monkeypatch.setattr(ann, "publish", real)
        index.add([tmp_path / "photos"], model="demo", encoder=encoder)
        assert index.info["ann_file"] != published and index.info["ann_count"] == 14
        assert not list((tmp_path / "idx").glob(".*.partial"))
