"""Models that ship inside the package, so every tool works offline: `alignsam.presets.path(name)`."""

from __future__ import annotations

from pathlib import Path

from alignsam.errors import ModelNotFoundError

_ROOT = Path(__file__).parent

# name -> folder under this package
BUNDLED: dict[str, str] = {"align:demo": "align-demo", "sam:demo": "sam-demo"}


def path(kind: str, name: str) -> Path | None:
    """The folder of bundled model `name` of `kind` ("align" or "sam"), or None if `name` is not bundled."""
    folder = BUNDLED.get(f"{kind}:{name}")
    if folder is None:
        return None
    out = _ROOT / folder
    if not (out / "config.json").is_file():
        raise ModelNotFoundError(
            f"The bundled {kind} preset '{name}' is missing from this installation ({out}); reinstall alignsam."
        )
    return out
