"""Module copies that share their tensors: how fast twins stand in for plain modules without copying weights."""

from __future__ import annotations

import copy
from typing import Any, TypeVar

from torch import nn

M = TypeVar("M", bound=nn.Module)


def shallow_copy(module: nn.Module, as_type: type[M] | None = None) -> Any:
    """A copy of `module` that shares its parameters, buffers and submodules but has its own tables of them,
    so that submodules swapped on the copy leave the original as it is. With `as_type` (a subclass of
    `module`'s class) the copy becomes an instance of it: a fast twin with the original's weights and the
    subclass's methods."""
    twin = copy.copy(module)
    for table in ("_modules", "_parameters", "_buffers"):
        twin.__dict__[table] = dict(module.__dict__[table])
    twin.__dict__.pop("_twin_cache", None)  # a cache of the original's, never the copy's
    if as_type is not None:
        if not isinstance(module, as_type.__mro__[1]):
            raise TypeError(f"{as_type.__name__} is not a twin of {type(module).__name__}")
        twin.__class__ = as_type
    return twin
