"""Models that ship inside the package, so every tool works offline: `alignsam.presets.path(name)`."""

from __future__ import annotations

from pathlib import Path

from alignsam.errors import ModelNotFoundError

_ROOT = Path(__file__).parent

# name -> folder under this package
BUNDLED: dict[str, str] = {"align:demo": "align-demo", "sam:demo": "sam-demo"}

# How to get a bundled model that this version does not ship yet.
_NOT_YET = {
    "align:demo": "the demonstration ALIGN is not bundled in this version yet: train one with "
    "scripts/train_demo_align.sh and pass its folder (--model runs/.../model), or use --model kakaobrain/align-base",
}


def path(kind: str, name: str) -> Path | None:
    """The folder of bundled model `name` of `kind` ("align" or "sam"), or None if `name` is not bundled."""
    folder = BUNDLED.get(f"{kind}:{name}")
    if folder is None:
        return None
    out = _ROOT / folder
    if not (out / "config.json").is_file():
        if not out.exists() and f"{kind}:{name}" in _NOT_YET:
            raise ModelNotFoundError(f"Model '{name}': {_NOT_YET[f'{kind}:{name}']}.")
        raise ModelNotFoundError(
            f"The bundled {kind} preset '{name}' is missing from this installation ({out}); reinstall alignsam."
        )
    return out
