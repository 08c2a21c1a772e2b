"""classify, similarity, embed, search and tag: in-process and as subprocesses, on a small local checkpoint.

Random weights give random answers, so these tests check structure and consistency between commands.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest

from alignsam.cli import main

LABELS = ["cat", "dog", "red car", "mountain", "beach"]


def run_cli(capsys, *argv: str) -> tuple[int, dict | None, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, (json.loads(out) if out.strip() else None), err


def run_subprocess(*argv: str) -> tuple[int, dict | None, str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "ALIGNSAM_CACHE": "off"}
    proc = subprocess.run(
        [sys.executable, "-m", "alignsam", *argv], capture_output=True, text=True, env=env, timeout=300, check=False
    )
    return proc.returncode, (json.loads(proc.stdout) if proc.stdout.strip() else None), proc.stderr


@pytest.fixture(autouse=True)
def _no_cache(monkeypatch):
    monkeypatch.setenv("ALIGNSAM_CACHE", "off")


def test_classify_top_label_is_argmax_of_similarity(capsys, tiny_align_dir, image_folder):
    model = ["--model", str(tiny_align_dir), "-q"]
    code, cls, _ = run_cli(capsys, "classify", str(image_folder), "--labels", *LABELS, "--top-k", "3", *model)
    assert code == 0
    prompts = [f"a photo of a {label}." for label in LABELS]
    code, sim, _ = run_cli(capsys, "similarity", "--rows", str(image_folder), "--cols", *prompts, *model)
    assert code == 0
    assert [p["image"] for p in cls["predictions"]] == sim["rows"]
    for pred, row in zip(cls["predictions"], sim["cosine"], strict=True):
        assert pred["label"] == LABELS[int(np.argmax(row))]
        assert len(pred["labels"]) == 3 and pred["scores"] == sorted(pred["scores"], reverse=True)
        # probabilities are the softmax of the similarity command's logits
        logits = np.array(row) * sim["logit_scale"]
        probs = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
        assert pred["scores"][0] == pytest.approx(probs.max(), abs=1e-4)


def test_mixed_folder_is_processed_and_bad_files_counted(capsys, tiny_align_dir, image_folder, tmp_path):
    code, out, err = run_cli(capsys, "classify", str(image_folder), "--labels", *LABELS, "--model", str(tiny_align_dir))
    assert code == 0
    assert out["num_images"] == 6 and out["num_errors"] == 3
    bad = {os.path.basename(e["image"]) for e in out["errors"]}
    assert bad == {"empty.jpg", "notes.jpg", "truncated.jpg"}
    assert "skipped 3 of 9 images" in err and "Traceback" not in err


def test_non_image_files_in_folders_are_only_counted(capsys, tiny_align_dir, tmp_path, sample_photo):
    from PIL import Image

    Image.fromarray(sample_photo).save(tmp_path / "a.png")
    (tmp_path / "captions.json").write_text("{}")
    (tmp_path / "notes.txt").write_text("hello")
    code, out, _ = run_cli(
        capsys, "classify", str(tmp_path), "--labels", "x", "y", "--model", str(tiny_align_dir), "-q"
    )
    assert code == 0 and out["num_images"] == 1 and out["ignored_files"] == 2 and out["num_errors"] == 0


def test_bad_inputs_give_clear_messages(capsys, tiny_align_dir, image_folder, tmp_path):
    model = ["--model", str(tiny_align_dir), "-q"]
    empty = tmp_path / "labels.txt"
    empty.write_text("# nothing here\n\n")
    code, _, err = run_cli(capsys, "classify", str(image_folder), "--labels-file", str(empty), *model)
    assert code == 1 and "list of labels is empty" in err
    only_bad = tmp_path / "bad"
    only_bad.mkdir()
    (only_bad / "x.jpg").write_bytes(b"")
    code, out, err = run_cli(capsys, "classify", str(only_bad), "--labels", "a", "b", *model)
    assert code == 1 and out["num_images"] == 0 and "none of the images could be read" in err
    code, _, err = run_cli(capsys, "classify", str(tmp_path / "missing"), "--labels", "a", *model)
    assert code == 1 and "No such file or folder" in err
    code, _, err = run_cli(capsys, "classify", str(image_folder), "--labels", "a", "--model", "someorg/not-here")
    assert code == 1 and "not in the Hugging Face cache" in err and "hf download someorg/not-here" in err
    with pytest.raises(SystemExit) as info:
        main(["classify", str(image_folder)])  # no labels: argparse usage error
    assert info.value.code == 2
    code, _, err = run_cli(capsys, "similarity", "--rows", "text:a cat - text:a cat", "--cols", "dog", *model)
    assert code == 1 and "cancels out" in err


def test_a_thousand_labels(capsys, tiny_align_dir, image_folder):
    labels = [f"thing number {i}" for i in range(1000)]
    code, out, _ = run_cli(
        capsys, "classify", str(image_folder / "photo_0.jpg"), "--labels", *labels, "--model", str(tiny_align_dir), "-q"
    )
    assert code == 0 and out["labels"] == 1000 and len(out["predictions"][0]["labels"]) == 5


def test_embed_then_search(capsys, tiny_align_dir, image_folder, tmp_path):
    model = ["--model", str(tiny_align_dir), "-q"]
    out_dir = tmp_path / "emb"
    code, summary, _ = run_cli(
        capsys, "embed", "--images", str(image_folder), "--texts", "a cat", "a dog", "--out", str(out_dir), *model
    )
    assert code == 0 and summary["images"]["count"] == 6 and summary["texts"]["count"] == 2
    vectors = np.load(out_dir / "images.npy")
    table = pq.read_table(out_dir / "images.parquet").to_pydict()
    assert vectors.shape == (6, 80) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    assert table["id"] == list(range(6)) and len(table["path"]) == 6 and len(summary["errors"]) == 3
    target = table["path"][2]
    code, found, _ = run_cli(
        capsys, "search", f"image:{target}", "a red car", "--index", str(out_dir), "-k", "3", *model
    )
    assert code == 0
    first = found["results"][0]["results"][0]
    assert first["path"] == target and first["score"] == pytest.approx(1.0, abs=1e-4)
    assert len(found["results"][1]["results"]) == 3
    # an existing file as --out is refused in one line, and the file is left alone
    taken = tmp_path / "notes.txt"
    taken.write_text("keep me")
    code, _, err = run_cli(capsys, "embed", "--texts", "a cat", "--out", str(taken), *model)
    assert code != 0 and "exists and is not a folder" in err and "Traceback" not in err
    assert taken.read_text() == "keep me"


def test_embed_keeps_existing_embeddings_unless_overwrite(capsys, tiny_align_dir, image_folder, tmp_path):
    model = ["--model", str(tiny_align_dir), "-q"]
    out_dir = tmp_path / "emb"
    code, _, _ = run_cli(capsys, "embed", "--images", str(image_folder), "--out", str(out_dir), *model)
    assert code == 0
    before = {p.name: p.read_bytes() for p in out_dir.iterdir()}
    assert set(before) == {"images.npy", "images.parquet", "embeddings.json"}
    (out_dir / "notes.txt").write_text("mine")
    # a second run into the same folder is refused in one line and changes nothing
    code, _, err = run_cli(capsys, "embed", "--texts", "a cat", "--out", str(out_dir), *model)
    assert code != 0 and "already holds embeddings (images.npy" in err and "--overwrite" in err
    assert "Traceback" not in err
    assert {p.name: p.read_bytes() for p in out_dir.iterdir() if p.name != "notes.txt"} == before
    # --overwrite replaces them; the image files, not embedded this time, go, so the folder matches its summary
    code, summary, _ = run_cli(
        capsys, "embed", "--texts", "a cat", "a dog", "--out", str(out_dir), "--overwrite", *model
    )
    assert code == 0 and summary["texts"]["count"] == 2 and "images" not in summary
    names = sorted(p.name for p in out_dir.iterdir())
    assert names == ["embeddings.json", "notes.txt", "texts.npy", "texts.parquet"]
    assert json.loads((out_dir / "embeddings.json").read_text())["texts"]["count"] == 2
    assert (out_dir / "notes.txt").read_text() == "mine" and np.load(out_dir / "texts.npy").shape == (2, 80)


def test_search_refuses_a_broken_index_in_one_line(capsys, tiny_align_dir, tmp_path):
    import pyarrow as pa

    model = ["--model", str(tiny_align_dir), "-q"]
    index = tmp_path / "emb"
    index.mkdir()
    pq.write_table(pa.table({"id": [0, 1], "path": ["a.jpg", "b.jpg"]}), index / "images.parquet")
    cases = [
        (np.ones((2, 33), np.float32), "33-dimensional vectors but the queries are 80-dimensional"),
        (np.ones((2, 80, 2), np.float32), "not N x D vectors"),
        (np.array([[np.nan] * 80, [1.0] * 80], np.float32), "1 rows that are not finite"),
        (np.ones((3, 80), np.float32), "3 vectors but 2 paths"),
        (b"garbage", "is not a .npy file"),
    ]
    for vectors, message in cases:
        if isinstance(vectors, bytes):
            (index / "images.npy").write_bytes(vectors)
        else:
            np.save(index / "images.npy", vectors)
        code, _, err = run_cli(capsys, "search", "a cat", "--index", str(index), *model)
        assert code == 1 and message in err and "Traceback" not in err, (message, err)
    np.save(index / "images.npy", np.ones((2, 80)))  # float64 vectors are fine
    code, found, _ = run_cli(capsys, "search", "a cat", "--index", str(index), "-k", "5", *model)
    assert code == 0 and len(found["results"][0]["results"]) == 2


def test_failed_embedding_leaves_the_folder_alone(tiny_align_dir, image_folder, tmp_path):
    from alignsam.errors import ImageError
    from alignsam.tools.embed import export_embeddings
    from alignsam.tools.encoder import Encoder

    enc = Encoder.from_pretrained(str(tiny_align_dir))
    out_dir = tmp_path / "emb"
    export_embeddings(enc, out_dir, texts=["a cat"])
    before = {p.name: p.read_bytes() for p in out_dir.iterdir()}
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not an image")
    with pytest.raises(ImageError, match=r"broken\.jpg"):
        export_embeddings(enc, out_dir, images=[broken], on_error="raise", overwrite=True)
    assert {p.name: p.read_bytes() for p in out_dir.iterdir()} == before  # no partial files, nothing replaced


def test_a_bad_output_fails_before_the_work_and_a_failed_write_keeps_the_result(
    capsys, tiny_align_dir, image_folder, tmp_path, monkeypatch
):
    from alignsam.errors import OutputError

    # a folder as --output is refused before the model is looked for (this model does not exist)
    code, _, err = run_cli(
        capsys, "classify", str(image_folder), "--labels", "cat", "dog", "--model", str(tmp_path / "no-model"),
        "-o", str(tmp_path),
    )  # fmt: skip
    assert code == 1 and "is a folder" in err and "no-model" not in err and "Traceback" not in err

    # a write that fails at the end (a full disk) still delivers the result, on stdout, and says so
    def full_disk(path, text):
        raise OutputError(f"Cannot write '{path}': [Errno 28] No space left on device")

    monkeypatch.setattr("alignsam.io.files.write_text_atomic", full_disk)
    code, out, err = run_cli(
        capsys, "classify", str(image_folder), "--labels", "cat", "dog", "--model", str(tiny_align_dir), "-q",
        "-o", str(tmp_path / "result.json"),
    )  # fmt: skip
    assert code == 1 and "No space left" in err and "written to stdout instead" in err
    assert out is not None and len(out["predictions"]) == 6 and not (tmp_path / "result.json").exists()


def test_composed_queries(capsys, tiny_align_dir, image_folder):
    model = ["--model", str(tiny_align_dir), "-q"]
    img = str(image_folder / "photo_1.jpg")
    code, out, _ = run_cli(
        capsys,
        "similarity",
        "--rows", f"image:{img} + text:at night", "text:a red car - text:red + 0.5*text:blue",
        "--cols", img, "at night", "a blue car",
        *model,
    )  # fmt: skip
    assert code == 0
    cos = np.array(out["cosine"])
    assert cos.shape == (2, 3)
    # an image plus a text is closer to each of its parts than to an unrelated text
    assert cos[0, 0] > cos[0, 2] and cos[0, 1] > cos[0, 2]


def test_tag_with_own_vocabulary_and_tuning(capsys, tiny_align_dir, image_folder, tmp_path):
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("# my tags\ncat\ndog\ntree\ncar\nred\ngreen\nblue\nbeach\nsky\nperson\n")
    model = ["--model", str(tiny_align_dir), "-q"]
    code, out, _ = run_cli(
        capsys, "tag", str(image_folder), "--vocab", str(vocab), "--threshold", "1.0", "--max-tags", "3", *model
    )
    assert code == 0 and len(out["results"]) == 6 and out["vocabulary_size"] == 10
    for r in out["results"]:
        assert 1 <= len(r["tags"]) <= 3
        zs = [t["z"] for t in r["tags"]]
        assert zs == sorted(zs, reverse=True) and all(z >= 1.0 for z in zs[1:])
    truth = tmp_path / "truth.json"
    truth.write_text(
        json.dumps({str(image_folder / "plain_0.png"): ["red"], str(image_folder / "plain_2.png"): ["blue"]})
    )
    code, tuned, _ = run_cli(capsys, "tag", "--tune", str(truth), "--vocab", str(vocab), *model)
    assert code == 0 and tuned["num_images"] == 2
    assert tuned["best"]["f1"] == max(c["f1"] for c in tuned["curve"])


def test_commands_as_subprocesses(tiny_align_dir, image_folder):
    code, out, err = run_subprocess(
        "classify", str(image_folder), "--labels", *LABELS, "--model", str(tiny_align_dir), "--device", "cpu"
    )
    assert code == 0 and out["num_images"] == 6 and "Traceback" not in err
    code, out, err = run_subprocess("classify", str(image_folder), "--labels", "a", "--model", "someorg/not-here")
    assert code == 1 and out is None and "Traceback" not in err and "hf download" in err
    code, _, err = run_subprocess("classify", "--labels", "a")
    assert code == 2 and "usage" in err


def test_tag_with_built_in_vocabulary_groups(capsys, tiny_align_dir, image_folder):
    from alignsam.tools.vocabulary import load_tags

    model = ["--model", str(tiny_align_dir), "-q"]
    image = str(image_folder / "photo_0.jpg")
    # the groups option takes one comma-separated value, so image paths after it are not swallowed
    code, out, _ = run_cli(capsys, "tag", "--groups", "animals,colours", image, "--max-tags", "4", *model)
    assert code == 0 and out["vocabulary_size"] == len(load_tags(["animals", "colours"]))
    assert all(t["tag"] in load_tags(["animals", "colours"]) for t in out["results"][0]["tags"])
    code, groups, _ = run_cli(capsys, "tag", "--list-groups", *model)
    assert code == 0 and groups["animals"] > 100 and sum(groups.values()) == len(load_tags())
    code, _, err = run_cli(capsys, "tag", image, "--groups", "no-such-group", *model)
    assert code == 1 and "animals" in err  # the message lists the known groups
