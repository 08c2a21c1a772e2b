"""ONNX Runtime as a backend: SAM's prompt decoder and ALIGN's towers, with the PyTorch paths' call signatures.

    predictor = SamPredictor(sam, backend="onnxruntime")           # predict() decodes on ONNX Runtime
    encoder = Encoder.from_pretrained("demo", backend="onnxruntime")  # encode_images / encode_texts too

Each part is exported on first use into `$ALIGNSAM_CACHE/onnx/<part>-<key>/` (default
`~/.cache/alignsam`), the key a fingerprint of the part's weights and configuration, the export options and
the torch and alignsam versions, and loaded from there afterwards; with the cache off (`ALIGNSAM_CACHE=off`)
or unwritable, into a temporary folder for the process. Sessions run on the CPU provider with PyTorch's
thread count (`torch.get_num_threads()`, what `--threads` sets).

What runs where: `OnnxSamDecoder` runs the prompt encoder and mask decoder (the "prompts" contract: every
mask token's low-resolution logits); the predictor picks the masks and post-processes them as on the
PyTorch path. `OnnxAlignTowers` runs the padded text grid (no packing) and the image tower in float32.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from alignsam import __version__
from alignsam.errors import InputError, OutputError
from alignsam.export.common import require
from alignsam.export.parts import to_onnx

Backend = Literal["torch", "onnxruntime"]
BACKENDS: tuple[Backend, ...] = ("torch", "onnxruntime")
CACHE_FORMAT = 1
"""Part of every cache key: raise it when the exported graphs change."""

_TEMPORARY: list[Path] = []
_SESSIONS: dict[Path, Any] = {}  # loaded models by file: a predictor made per request loads nothing again


def check_backend(backend: str, fast: Any = None) -> Backend:
    """`backend` if known (and, for onnxruntime, its packages installed and no PyTorch-only speed option
    asked for in `fast`, a `FastPath`); a one-line error otherwise."""
    if backend not in BACKENDS:
        raise InputError(f"backend must be one of {list(BACKENDS)}, got {backend!r}.")
    if backend == "onnxruntime":
        if fast is not None and (fast.precision != "fp32" or fast.compile):
            raise InputError(
                "The onnxruntime backend runs the float32 export; precision bf16 and compile are options of the "
                "torch backend: choose one."
            )
        require("onnxruntime", "onnx", "onnxscript", purpose="The onnxruntime backend")
    return backend


def fingerprint(*modules: nn.Module, extra: object = None) -> str:
    """Identifies the weights of `modules`: every tensor's name, shape, dtype, float64 sum and absolute sum
    and its first and last values (any fine-tuning step changes the sums), plus `extra` (a configuration)."""
    h = hashlib.sha256(repr(extra).encode())
    for module in modules:
        for name, t in module.state_dict().items():
            flat = t.detach().reshape(-1)
            flat = flat.to(torch.uint8) if flat.dtype == torch.bool else flat
            h.update(f"{name}{tuple(t.shape)}{t.dtype}".encode())
            if flat.numel():
                ends = flat if flat.numel() <= 16 else torch.cat([flat[:8], flat[-8:]])
                sums = torch.stack([flat.sum(dtype=torch.float64), flat.abs().sum(dtype=torch.float64)])
                h.update(ends.double().cpu().numpy().tobytes())
                h.update(sums.cpu().numpy().tobytes())
    return h.hexdigest()


def _cache_root() -> Path | None:
    from alignsam.io.files import cache_dir

    root = cache_dir()
    return None if root is None else root / "onnx"


def _temporary_root() -> Path:
    if not _TEMPORARY:
        _TEMPORARY.append(Path(tempfile.mkdtemp(prefix="alignsam-onnx-")))
        atexit.register(shutil.rmtree, _TEMPORARY[0], True)
    return _TEMPORARY[0]


def exported_model(part: str, model: Any, weights: Sequence[nn.Module], **options: Any) -> Path:
    """The ONNX file of `part` of `model` with `options`: from the cache, or exported there first."""
    key = hashlib.sha256(
        json.dumps(
            {
                "part": part,
                "options": options,
                "weights": fingerprint(*weights, extra=model.config),
                "torch": torch.__version__,
                "alignsam": __version__,
                "format": CACHE_FORMAT,
            },
            sort_keys=True,
        ).encode()
    ).hexdigest()[:24]
    root = _cache_root()
    if root is not None:
        path = root / f"{part}-{key}" / f"{part}.onnx"
        if path.is_file():
            return path
        try:
            return to_onnx(part, model, path.parent, **options).model
        except OutputError:
            pass  # an unwritable cache is not an error: export for this process only
    path = _temporary_root() / f"{part}-{key}" / f"{part}.onnx"
    if path.is_file():
        return path
    return to_onnx(part, model, path.parent, **options).model


def session(path: Path) -> Any:
    """An ONNX Runtime session on the CPU with PyTorch's thread count (one per file and process)."""
    require("onnxruntime", purpose="The onnxruntime backend")
    import onnxruntime as ort

    key = path.resolve()
    if key in _SESSIONS:
        return _SESSIONS[key]

    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only
    # No busy-waiting between runs: the backend alternates with PyTorch (SAM's encoder, the tools' own
    # work), and spinning ORT threads would take the cores PyTorch's threads need.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    _SESSIONS[key] = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return _SESSIONS[key]


def _numpy(t: torch.Tensor, dtype: type = np.float32) -> np.ndarray:
    return np.ascontiguousarray(t.detach().cpu().numpy(), dtype=dtype)


class OnnxSamDecoder:
    """SAM's prompt encoder and mask decoder on ONNX Runtime, called as `SamPredictor` calls the model.

    `decoder(image_embeddings, point_coords=..., point_labels=..., boxes=..., mask_inputs=...,
    multimask_output=...)` returns what `SamModel(...)` does: low-resolution logits `B x M x 4h x 4w` and IoU
    predictions `B x M` (M = 3 with `multimask_output`, else 1), prompts in the model's input frame.
    """

    def __init__(self, session: Any, *, mask_input_size: int, device: torch.device) -> None:
        self.session = session
        self.mask_input_size = mask_input_size
        self.device = device

    @classmethod
    def from_model(cls, model: Any) -> OnnxSamDecoder:
        """Export (once, cached) and load the "prompts" contract of `model`'s decoder."""
        weights = [model.prompt_encoder, model.mask_decoder]
        path = exported_model("sam-decoder", model, weights, contract="prompts")
        return cls(session(path), mask_input_size=model.config.mask_input_size, device=model.device)

    def __call__(
        self,
        image_embeddings: torch.Tensor,
        *,
        point_coords: torch.Tensor | None = None,
        point_labels: torch.Tensor | None = None,
        boxes: torch.Tensor | None = None,
        mask_inputs: torch.Tensor | None = None,
        multimask_output: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """
        Args:
            image_embeddings: `1 x C x h x w` (shared by every prompt set) or `B x C x h x w`.
            point_coords: `B x N x 2`; point_labels: `B x N`; boxes: `B x 4`; mask_inputs: `B x 1 x 4h x 4w`.
        """
        coords, labels = self.prompt_points(point_coords, point_labels, boxes, mask_inputs)
        b, low = coords.shape[0], self.mask_input_size
        if mask_inputs is None:
            masks, has_mask = np.zeros((b, 1, low, low), np.float32), np.zeros(1, np.float32)
        else:
            masks, has_mask = _numpy(mask_inputs), np.ones(1, np.float32)
        embeddings = _numpy(image_embeddings)
        if embeddings.shape[0] not in (1, b):
            raise InputError(f"{embeddings.shape[0]} image embeddings for {b} prompt sets; pass 1 or {b}.")
        # One run for a shared embedding; one per prompt set when each has its own image.
        runs = [slice(0, b)] if embeddings.shape[0] == 1 else [slice(i, i + 1) for i in range(b)]
        ious, logits = [], []
        for rows in runs:
            feed = {
                "image_embeddings": embeddings[:1] if embeddings.shape[0] == 1 else embeddings[rows],
                "point_coords": coords[rows],
                "point_labels": labels[rows],
                "mask_input": masks[rows],
                "has_mask_input": has_mask,
            }
            iou, low_res = self.session.run(["iou_predictions", "low_res_masks"], feed)
            ious.append(iou)
            logits.append(low_res)
        tokens = slice(1, None) if multimask_output else slice(0, 1)
        low_res_all = torch.from_numpy(np.concatenate(logits))[:, tokens]
        iou_all = torch.from_numpy(np.concatenate(ious))[:, tokens]
        return low_res_all.to(self.device), iou_all.to(self.device)

    @staticmethod
    def prompt_points(
        point_coords: torch.Tensor | None,
        point_labels: torch.Tensor | None,
        boxes: torch.Tensor | None,
        mask_inputs: torch.Tensor | None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Prompts as the decoder's points (what `PromptEncoder` embeds): the points, then a box's corners
        with labels 2 and 3, or without a box the padding point (0, 0) with label -1; `B x T x 2`, `B x T`."""
        coords: list[np.ndarray] = []
        labels: list[np.ndarray] = []
        if point_coords is not None and point_labels is not None:
            coords.append(_numpy(point_coords))
            labels.append(_numpy(point_labels))
        if boxes is not None:
            corners = _numpy(boxes).reshape(-1, 2, 2)
            coords.append(corners)
            labels.append(np.tile(np.array([[2, 3]], np.float32), (len(corners), 1)))
        elif coords:
            b = coords[0].shape[0]
            coords.append(np.zeros((b, 1, 2), np.float32))
            labels.append(np.full((b, 1), -1, np.float32))
        if not coords:  # a mask alone: no sparse tokens
            if mask_inputs is None:
                raise InputError("Give at least one prompt: points, boxes or mask_inputs.")
            b = mask_inputs.shape[0]
            return np.zeros((b, 0, 2), np.float32), np.zeros((b, 0), np.float32)
        return np.concatenate(coords, axis=1), np.concatenate(labels, axis=1)


class OnnxAlignTowers:
    """ALIGN's towers on ONNX Runtime with `AlignModel.encode_image` / `encode_text`'s signatures (what
    `alignsam.tools.Encoder` calls); each tower is exported and loaded on its first use."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self._sessions: dict[str, Any] = {}

    @classmethod
    def from_model(cls, model: Any) -> OnnxAlignTowers:
        return cls(model)

    def _session(self, part: str) -> Any:
        if part not in self._sessions:
            model = self.model
            if part == "align-image":
                weights: list[nn.Module] = [model.vision_model]
            else:
                weights = [model.text_model, model.text_projection]
            self._sessions[part] = session(exported_model(part, model, weights))
        return self._sessions[part]

    def encode_image(self, pixel_values: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        """Image embeddings `B x D` of `B x 3 x H x W` pixels (L2-normalised if `normalize`)."""
        name = "image_embeds" if normalize else "image_features"
        (out,) = self._session("align-image").run([name], {"pixel_values": _numpy(pixel_values)})
        return torch.from_numpy(out)

    def encode_text(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        normalize: bool = False,
    ) -> torch.Tensor:
        """Text embeddings `B x D` of `B x L` token ids (L2-normalised if `normalize`)."""
        if position_ids is not None:
            raise InputError("The onnxruntime backend takes no position_ids (positions are 0 .. L-1).")
        ids = _numpy(input_ids, np.int64)
        feed = {
            "input_ids": ids,
            "attention_mask": np.ones_like(ids) if attention_mask is None else _numpy(attention_mask, np.int64),
            "token_type_ids": np.zeros_like(ids) if token_type_ids is None else _numpy(token_type_ids, np.int64),
        }
        name = "text_embeds" if normalize else "text_features"
        (out,) = self._session("align-text").run([name], feed)
        return torch.from_numpy(out)

    def get_image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.encode_image(pixel_values)

    def get_text_features(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        return self.encode_text(input_ids, attention_mask, token_type_ids, position_ids)
