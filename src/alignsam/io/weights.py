"""Weight files in and out: safetensors first, pickles only with `weights_only=True`, strict key checks.

Large models are built on the meta device (no memory, no random init) and the checkpoint tensors are
assigned in place, memory-mapped where the format allows, so a 700 MB model starts in about a second.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import TypeVar

import torch
from torch import nn

from alignsam.errors import CheckpointError
from alignsam.io.files import write_atomic

M = TypeVar("M", bound=nn.Module)
StateDict = dict[str, torch.Tensor]

_CONTAINER_KEYS = ("state_dict", "model", "model_ema", "module", "model_state_dict")


# nn.init functions that modules call from their constructors (directly or through reset_parameters).
_INIT_FUNCTIONS = (
    "uniform_", "normal_", "trunc_normal_", "constant_", "ones_", "zeros_", "eye_", "dirac_", "xavier_uniform_",
    "xavier_normal_", "kaiming_uniform_", "kaiming_normal_", "orthogonal_", "sparse_",
)  # fmt: skip


def _keep(tensor: torch.Tensor, *args: object, **kwargs: object) -> torch.Tensor:
    return tensor


@contextlib.contextmanager
def _no_init() -> Iterator[None]:
    """Make `torch.nn.init` functions no-ops for the duration. On meta tensors they would do no work anyway,
    but random fills there run through torch's reference decompositions, whose first use imports
    `torch._dynamo` (seconds of start-up)."""
    saved = {name: getattr(nn.init, name) for name in _INIT_FUNCTIONS}
    try:
        for name in saved:
            setattr(nn.init, name, _keep)
        yield
    finally:
        for name, fn in saved.items():
            setattr(nn.init, name, fn)


def build_on_meta(factory: Callable[[], M]) -> M:
    """Run `factory` with the meta device as default and weight init skipped: parameters get shapes but
    no storage and no values (the checkpoint provides them)."""
    with torch.device("meta"), _no_init():
        return factory()


def load_state_dict(path: str | os.PathLike[str]) -> StateDict:
    """Read a `.safetensors` file, a sharded `*.index.json`, or a pickled `.bin`/`.pth` (weights only).

    Pickled checkpoints that wrap the weights (`{"state_dict": ...}`, `{"model": ...}`, an EMA-only
    `{"model_ema": ...}`) are unwrapped.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"Checkpoint '{path}' does not exist.")
    if path.stat().st_size == 0:
        raise CheckpointError(f"Checkpoint '{path}' is empty (0 bytes).")
    if path.name.endswith(".index.json"):
        return _load_sharded(path)
    if path.suffix == ".safetensors":
        return _load_safetensors(path)
    return _load_pickle(path)


def _load_safetensors(path: Path) -> StateDict:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(path, device="cpu")
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"Checkpoint '{path}' is not a readable safetensors file: {err}") from err


def _load_pickle(path: Path) -> StateDict:
    with open(path, "rb") as f:
        head = f.read(4)
    if head != b"PK\x03\x04" and head[:1] != b"\x80":  # torch.save's zip archive, or a legacy pickle
        raise CheckpointError(
            f"Checkpoint '{path}' is not a PyTorch weights file (neither torch.save's zip archive nor a pickle); "
            "is it the right file, and complete?"
        )
    try:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as err:
            if "mmap" not in str(err):  # legacy (non-zip) format cannot be memory-mapped
                raise
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(
            f"Checkpoint '{path}' could not be read as a PyTorch weights file (a truncated download, or pickled "
            f"code, which is refused: only tensors are loaded): {first_line}"
        ) from err
    return _as_state_dict(obj, path)


def _load_sharded(index: Path) -> StateDict:
    try:
        weight_map = json.loads(index.read_text())["weight_map"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise CheckpointError(f"Shard index '{index}' is not a valid weight index: {err}") from err
    out: StateDict = {}
    for shard in sorted(set(weight_map.values())):
        out.update(load_state_dict(index.parent / shard))
    return out


def _as_state_dict(obj: object, path: Path) -> StateDict:
    while isinstance(obj, Mapping):
        inner = [k for k in _CONTAINER_KEYS if isinstance(obj.get(k), Mapping)]
        if not inner or all(isinstance(v, torch.Tensor) for v in obj.values()):
            break
        obj = obj[inner[0]]
    if not isinstance(obj, Mapping) or not obj:
        raise CheckpointError(f"Checkpoint '{path}' holds no state dict (found {type(obj).__name__}).")
    bad = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"Checkpoint '{path}' has non-tensor entries: {_few(bad)}.")
    return {str(k): v for k, v in obj.items()}


def _kind(dtype: torch.dtype) -> str:
    """'float', 'complex', 'bool' or 'int': tensors of one kind may be cast to another dtype of that kind."""
    if dtype.is_floating_point:
        return "float"
    if dtype.is_complex:
        return "complex"
    return "bool" if dtype == torch.bool else "int"


def load_weights_into(
    model: nn.Module,
    state_dict: Mapping[str, torch.Tensor],
    *,
    ignore_unexpected: Iterable[str] = (),
    source: str = "checkpoint",
) -> nn.Module:
    """Assign `state_dict` to `model` strictly; works on a model built on the meta device.

    Keys matching a regex in `ignore_unexpected` (harmless buffers such as `position_ids`) are dropped.
    Any other missing or unexpected key, or a shape mismatch, raises `CheckpointError` naming them.
    Floating tensors are cast to the dtype the model was built with.
    """
    ignore = [re.compile(p) for p in ignore_unexpected]
    expected = model.state_dict(keep_vars=True)
    given = {k: v for k, v in state_dict.items() if k in expected or not any(p.search(k) for p in ignore)}
    missing = sorted(set(expected) - set(given))
    unexpected = sorted(set(given) - set(expected))
    wrong_shape = [
        f"{k} {tuple(given[k].shape)} (model {tuple(expected[k].shape)})"
        for k in sorted(set(given) & set(expected))
        if given[k].shape != expected[k].shape
    ]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing: {_few(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected: {_few(unexpected)}")
    if wrong_shape:
        problems.append(f"{len(wrong_shape)} of the wrong shape: {_few(wrong_shape)}")
    # Why: integer weights where the model holds floats (an int32 checkpoint) failed inside PyTorch's
    # load_state_dict with a multi-line RuntimeError.
    wrong_kind = [
        f"{k} {str(given[k].dtype).removeprefix('torch.')} (model {str(expected[k].dtype).removeprefix('torch.')})"
        for k in sorted(set(given) & set(expected))
        if _kind(given[k].dtype) != _kind(expected[k].dtype)
    ]
    if wrong_kind:
        problems.append(f"{len(wrong_kind)} of the wrong kind of number: {_few(wrong_kind)}")
    if problems:
        raise CheckpointError(f"The {source} does not fit the model; keys " + "; ".join(problems) + ".")

    cast = {}
    for k, v in given.items():
        target = expected[k]
        if v.is_floating_point() and target.is_floating_point() and v.dtype != target.dtype:
            v = v.to(target.dtype)
        cast[k] = v
    model.load_state_dict(cast, strict=True, assign=True)
    left = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if left:
        raise CheckpointError(f"Tensors left without values after loading the {source}: {_few(left)}.")
    return model


def save_safetensors(
    state_dict: Mapping[str, torch.Tensor], path: str | os.PathLike[str], metadata: dict[str, str] | None = None
) -> None:
    """Write tensors as safetensors (contiguous copies, shared storage untied), atomically (`write_atomic`):
    a full disk or a kill leaves any earlier weights file whole."""
    from safetensors.torch import save_file

    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in state_dict.items()}

    def write(partial: Path) -> None:
        try:
            save_file(tensors, os.fspath(partial), metadata=metadata or {"format": "pt"})
        except Exception as err:  # safetensors' own SafetensorError, for I/O failures (a full disk) too
            raise OSError(str(err)) from err

    write_atomic(path, write)


def _few(items: list[str], n: int = 8) -> str:
    shown = ", ".join(items[:n])
    return shown + (f", ... ({len(items) - n} more)" if len(items) > n else "")
