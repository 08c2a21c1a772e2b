"""Fast inference, chosen by the caller (the encoder, the predictor, the command line, the service).

Model code stays plain; these options transform a built model or wrap its calls:

- `fold_batchnorm`: fold each batch norm into the convolution before it (eval only).
- `channels_last`: NHWC memory layout for convolution networks, which oneDNN runs faster on CPUs.
- `inplace`: activations, squeeze-excite gates and residual sums write into the tensor they transform
  instead of a new one (eval only; the same numbers to the bit). A fresh buffer of a large feature map
  costs its page faults every time: an out-of-place SiLU of an align-base map took 25 ms, in place 3 ms.
- `precision="bf16"`: bfloat16 autocast for matrix multiplies and convolutions (outputs stay float32).
- `compile`: `torch.compile` the heavy tower (slow first call, faster afterwards).
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from typing import Literal

import torch

Precision = Literal["fp32", "bf16"]


@dataclasses.dataclass(frozen=True)
class FastPath:
    """Speed options; the defaults are exact to float32 rounding and on by default where they pay off."""

    precision: Precision = "fp32"
    fold_batchnorm: bool = True
    channels_last: bool = True
    inplace: bool = True
    compile: bool = False

    def __post_init__(self) -> None:
        if self.precision not in ("fp32", "bf16"):
            raise ValueError(f"precision must be 'fp32' or 'bf16', not {self.precision!r}")

    @contextlib.contextmanager
    def autocast(self, device: torch.device | str) -> Iterator[None]:
        """`torch.inference_mode`, plus bf16 autocast when asked for."""
        kind = torch.device(device).type
        with torch.inference_mode():
            if self.precision == "bf16":
                with torch.autocast(kind, dtype=torch.bfloat16):
                    yield
            else:
                yield


PLAIN = FastPath(fold_batchnorm=False, channels_last=False, inplace=False)
"""No transformation at all: the reference path the fast ones are tested against."""
