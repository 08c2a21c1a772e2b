"""Small file helpers."""

from __future__ import annotations

import json
import os
from typing import Any

from alignsam.errors import CheckpointError


def read_json_object(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A JSON file that must hold an object; `CheckpointError` naming the file otherwise."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError) as err:
        raise CheckpointError(f"'{path}' is not readable JSON: {err}") from err
    if not isinstance(data, dict):
        raise CheckpointError(f"'{path}' does not hold a JSON object.")
    return data
