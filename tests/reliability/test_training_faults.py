"""Training faults: a damaged newest checkpoint (resume falls back to the newest readable one, with a
warning), leftovers of a kill (removed at start), steps redone after a resume (logged once), and two runs
learning their vocabulary from the same captions (the same vocabulary)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from alignsam.cli import main
from alignsam.train.core.checkpoint import checkpoint_path, list_checkpoints
from tests.reliability.conftest import ROOT
from tests.reliability.test_kills import finetune_argv, train_argv

ARGV = {"train": train_argv, "finetune-sam": finetune_argv}


def _steps(out: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("trainer", ["train", "finetune-sam"])
def test_resume_auto_falls_back_past_a_damaged_newest_checkpoint(trainer, tmp_path, capsys):
    out = tmp_path / "run"
    argv = ARGV[trainer](tmp_path, out, steps=3)
    assert main(argv) == 0
    newest = checkpoint_path(out, 3)
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])  # a disk that filled, a cut copy
    capsys.readouterr()
    code = main([*ARGV[trainer](tmp_path, out, steps=4), "--resume"])
    err = capsys.readouterr().err
    assert code == 0, err
    assert f"alignsam {trainer}: warning: '{newest}' is not a readable training checkpoint" in err
    assert "step-0000003.pt.unreadable" in err and "Traceback" not in err
    assert newest.with_name("step-0000003.pt.unreadable").is_file()  # kept for a look, out of the way
    assert [p.name for p in list_checkpoints(out)][-1] == "step-0000004.pt"
    assert _steps(out) == [1, 2, 3, 4]  # step 3, redone, logged once


def test_no_readable_checkpoint_is_one_error(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(finetune_argv(tmp_path, out, steps=2)) == 0
    for path in list_checkpoints(out):
        path.write_bytes(b"PK\x03\x04 not a checkpoint")
    capsys.readouterr()
    assert main([*finetune_argv(tmp_path, out, steps=3), "--resume"]) == 1
    err = capsys.readouterr().err
    assert "alignsam finetune-sam: error: None of the 2 checkpoints in" in err and "Traceback" not in err


@pytest.mark.parametrize("trainer", ["train", "finetune-sam"])
def test_a_killed_runs_leftovers_are_removed_and_steps_logged_once(trainer, tmp_path, capsys):
    """As a kill leaves a run: the last checkpoint's write cut short (its temporary file left), steps logged
    past the newest whole checkpoint, the last line half written."""
    out = tmp_path / "run"
    assert main([*ARGV[trainer](tmp_path, out, steps=4)]) == 0
    checkpoint_path(out, 4).unlink()
    checkpoint_path(out, 3).unlink()
    leftovers = [
        out / "checkpoints" / ".step-0000003.pt.k2j4h1.partial",
        out / ".metrics.jsonl.x81ca.partial",
        out / "model" / ".model.safetensors.a1b2.partial",
    ]
    for path in leftovers:
        path.write_bytes(b"half")
    with open(out / "metrics.jsonl", "a") as f:
        f.write('{"step": 5, "lo')
    assert _steps_or_cut(out) == [1, 2, 3, 4]
    capsys.readouterr()
    assert main([*ARGV[trainer](tmp_path, out, steps=4), "--resume"]) == 0
    assert not [p for p in leftovers if p.exists()]
    assert _steps(out) == [1, 2, 3, 4]


def _steps_or_cut(out: Path) -> list[int]:
    steps = []
    for line in (out / "metrics.jsonl").read_text().splitlines():
        try:
            steps.append(json.loads(line)["step"])
        except ValueError:
            continue
    return steps


VOCAB = """
import hashlib, sys
from alignsam.train.align.vocab import train_wordpiece
captions = [
    "a photo of a red cat on the mat", "two blue dogs near a green tree", "the red car parked by a house",
    "a cat and a dog", "green apples in a bowl", "blue sky over the sea",
] * 3  # few words, many equal counts: ties everywhere
tok = train_wordpiece(captions, 120, min_frequency=1)
vocab = sorted(tok._tokenizer.get_vocab().items(), key=lambda kv: kv[1])
print(hashlib.sha256(repr(vocab).encode()).hexdigest(), len(vocab))
"""


def test_two_runs_learn_the_same_vocabulary():
    """In separate processes (the library's trainer broke ties by a per-process hash order)."""
    env = {"PYTHONPATH": f"{ROOT / 'src'}:{ROOT}", "PATH": "/usr/bin:/bin"}
    runs = [
        subprocess.run([sys.executable, "-c", VOCAB], capture_output=True, text=True, cwd=ROOT, env=env, check=True)
        for _ in range(2)
    ]
    digests = {r.stdout.split()[0] for r in runs}
    assert len(digests) == 1 and int(runs[0].stdout.split()[1]) <= 120
