"""Optional packages: imported where a feature needs them, with one line naming what to install if missing.

The library's own dependencies are those of `pip install alignsam`; the rest come with extras (README):
`data` (pyarrow: parquet tables), `train` (pyarrow, tensorboard), `serve` (fastapi, uvicorn), `index`,
`ray`, `onnx`.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from alignsam.errors import MissingDependencyError


def require(module: str, extra: str, feature: str) -> ModuleType:
    """`import module`, or a `MissingDependencyError` saying that `feature` needs `pip install "alignsam[extra]"`."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        package = module.split(".")[0]
        raise MissingDependencyError(
            f"{feature} needs the '{package}' package, which is not installed: pip install \"alignsam[{extra}]\"."
        ) from err
