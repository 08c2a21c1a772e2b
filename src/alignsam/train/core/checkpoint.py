"""Training checkpoints that resume exactly: weights, optimiser, step, data position and random state.

A checkpoint is one file `out/checkpoints/step-0000100.pt`, written by rank 0 (atomically: a temporary file
renamed into place) and read back with `torch.load(weights_only=True)`, so it holds only tensors and plain
containers:
    version, step, config (the `TrainConfig` dict), model_config (the `AlignConfig` dict),
    model (the unwrapped model's state dict), optimizer (its state dict),
    data (every rank's `LoaderState` dict), rng (every rank's torch CPU and CUDA generator states),
    metrics (the last logged values).
The processor (tokenizer, image settings) is written once, to `out/processor/`, when the run starts.

Faults: `--resume auto` takes the newest checkpoint that reads; newer ones that do not (a disk that filled,
a file damaged later) are renamed `step-N.pt.unreadable` with a warning, so they are kept for a look but
neither resumed from nor counted by `keep`. The temporary files a kill leaves (`.step-N.pt.XXXX.partial`,
and those of `write_atomic` in the run folder) are removed when a run starts.
"""

from __future__ import annotations

import contextlib
import os
import re
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch

from alignsam.errors import CheckpointError, ConfigError
from alignsam.io.files import clean_partials, write_atomic

VERSION = 1
_NAME = re.compile(r"^step-(\d+)\.pt$")


def checkpoint_dir(out: str | os.PathLike[str]) -> Path:
    return Path(out) / "checkpoints"


def checkpoint_path(out: str | os.PathLike[str], step: int) -> Path:
    return checkpoint_dir(out) / f"step-{step:07d}.pt"


def list_checkpoints(out: str | os.PathLike[str]) -> list[Path]:
    """The run's checkpoints, oldest first."""
    folder = checkpoint_dir(out)
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found)]


def latest_checkpoint(out: str | os.PathLike[str]) -> Path | None:
    found = list_checkpoints(out)
    return found[-1] if found else None


def rng_state() -> dict[str, Any]:
    """This process's torch random state (CPU, and every GPU's when there are GPUs)."""
    state: dict[str, Any] = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["cpu"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: Path, payload: dict[str, Any], keep: int | None = None) -> Path:
    """Write `payload` (see the module docstring) atomically; then keep only the newest `keep` checkpoints."""
    write_atomic(path, lambda partial: torch.save({"version": VERSION, **payload}, partial))
    if keep is not None:
        for old in list_checkpoints(path.parent.parent)[:-keep]:
            old.unlink(missing_ok=True)
    return path


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a training checkpoint (weights only: no code runs while loading)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"Training checkpoint '{path}' does not exist.")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for damaged or foreign files
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0].split(". ")[0]  # torch's first sentence
        raise CheckpointError(f"'{path}' is not a readable training checkpoint: {reason}.") from err
    if not isinstance(data, dict) or data.get("version") != VERSION:
        raise CheckpointError(f"'{path}' is not an alignsam training checkpoint (version {VERSION}).")
    return data


def resume_state(
    out: str | os.PathLike[str],
    resume: str | None,
    current: dict[str, Any],
    normalise: Callable[[dict[str, Any]], dict[str, Any]],
    invariant: Iterable[str],
    main: bool = True,
) -> tuple[Path, dict[str, Any]] | None:
    """The checkpoint to resume from ("auto": the newest readable one in `out`; a path; None: none) and its
    contents. Leftovers of a killed run are removed first (`clean_leftovers`).

    `current` is the run's configuration as a dict, `normalise` turns a saved one into the same form
    (`Config.from_dict(d).to_dict()`); the settings named in `invariant` must not have changed. With "auto",
    a checkpoint that does not read is set aside (renamed `.unreadable`) with a warning and the next older
    one is tried; a `CheckpointError` if there are checkpoints and none reads. Only the `main` process of a
    distributed run removes or renames files; the others skip what does not read.
    """
    if main:
        clean_leftovers(out)
    if resume is None:
        return None
    if resume == "auto":
        found = newest_readable(out, set_aside=main)
        if found is None:
            return None
        path, state = found
    else:
        path = Path(resume)
        state = load_checkpoint(path)
    saved = normalise(state["config"])
    changed = [k for k in invariant if saved[k] != current[k]]
    if changed:
        raise ConfigError(f"Cannot resume from '{path}': these settings differ from the checkpoint's: {changed}.")
    return path, state


def newest_readable(out: str | os.PathLike[str], set_aside: bool = True) -> tuple[Path, dict[str, Any]] | None:
    """The newest checkpoint of `out` that reads, and its contents; None when there are none. Unreadable
    newer ones are renamed `NAME.unreadable` (if `set_aside`) with a warning naming them."""
    found = list_checkpoints(out)
    failures: list[str] = []
    for path in reversed(found):
        try:
            state = load_checkpoint(path)
        except CheckpointError as err:
            failures.append(str(err))
            if not set_aside:
                continue
            aside = path.with_name(path.name + ".unreadable")
            with contextlib.suppress(FileNotFoundError):  # another run set it aside first
                os.replace(path, aside)
            warnings.warn(f"{err} Set aside as '{aside.name}'; trying the previous checkpoint.", stacklevel=2)
            continue
        return path, state
    if failures:
        raise CheckpointError(
            f"None of the {len(found)} checkpoints in '{checkpoint_dir(out)}' is readable: {failures[-1]}"
        )
    return None


def clean_leftovers(out: str | os.PathLike[str]) -> list[Path]:
    """Remove the temporary files a killed run left in `out`, its checkpoints and its model folders."""
    root = Path(out)
    removed: list[Path] = []
    for folder in (root, checkpoint_dir(root), root / "model", root / "processor"):
        removed += clean_partials(folder)
    return removed
