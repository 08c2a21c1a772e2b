"""Model inputs and outputs that read like Hugging Face's: attributes, string keys, and tuple positions."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import torch


@dataclasses.dataclass
class ModelOutput:
    """Base of the output dataclasses.

    `out.field`, `out["field"]` and `out[i]` all work. As in transformers, positions skip fields that are
    None and iteration yields the names of the fields that are set.
    """

    def _present(self) -> list[tuple[str, Any]]:
        return [(f.name, getattr(self, f.name)) for f in dataclasses.fields(self) if getattr(self, f.name) is not None]

    def keys(self) -> list[str]:
        return [k for k, _ in self._present()]

    def values(self) -> list[Any]:
        return [v for _, v in self._present()]

    def items(self) -> list[tuple[str, Any]]:
        return self._present()

    def to_tuple(self) -> tuple[Any, ...]:
        return tuple(self.values())

    def __getitem__(self, key: str | int | slice) -> Any:
        if isinstance(key, str):
            if key not in self.keys():
                raise KeyError(key)
            return getattr(self, key)
        return self.to_tuple()[key]

    def __contains__(self, key: object) -> bool:
        return key in self.keys()

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())

    def __len__(self) -> int:
        return len(self._present())


class BatchFeature(dict[str, Any]):
    """A processor's model inputs: a dict that also reads as attributes and moves with `.to(device)`.

    As transformers' `BatchFeature`, so `model(**processor(...).to(device))` works.
    """

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def to(self, device: str | torch.device) -> BatchFeature:
        return BatchFeature({k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in self.items()})
