"""One resolver for every model reference: a bundled model, a short name, a local folder, a file, a hub id.

    source = resolve_model("demo", "sam")          # the SAM that ships with the package
    source = resolve_model("vit_b", "sam")         # facebook/sam-vit-base on the hub (its cache first)
    source = resolve_model("sam_vit_b.pth", "sam") # a file
    config = source.find(["config.json"])          # a file of the model, from its folder or the hub

Every `from_pretrained`, `sam_model_registry`, tool, command and the service go through `resolve_model`,
so `AlignModel.from_pretrained("demo")` and `alignsam classify --model demo` mean the same model. The names
come from one table, `alignsam.presets`. A local path always wins over a name: a folder called `demo` in
the working directory is that folder.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any, Literal

from alignsam import presets
from alignsam.errors import AlignSamError, ModelNotFoundError
from alignsam.io.hub import CacheDir, from_cache, looks_like_hub_id, resolve_first

Kind = Literal["bundled", "folder", "file", "hub"]
Ref = str | os.PathLike[str]


@dataclasses.dataclass(frozen=True)
class ModelSource:
    """A resolved model reference.

    Attributes:
        ref: the reference as the caller gave it (for messages).
        kind: "bundled" (ships with alignsam), "folder", "file" (a single weights file), or "hub".
        location: the local folder or file, or the hub repository id.
    """

    ref: str
    kind: Kind
    location: str
    revision: str | None = None
    cache_dir: CacheDir = None

    @property
    def path(self) -> Path | None:
        """The local folder or file; None for a hub repository."""
        return None if self.kind == "hub" else Path(self.location)

    @property
    def folder(self) -> Path | None:
        """The local folder that holds the model's files (a file's own folder); None for the hub."""
        path = self.path
        return path.parent if path is not None and path.is_file() else path

    def find(self, candidates: Sequence[str], *, required: bool = True) -> Path | None:
        """The first of `candidates` (file names, in order of preference) that the model holds.

        Local folders are read; a hub repository is read from its cache first and asked only when nothing
        is cached. A missing file is a `ModelNotFoundError` when `required`, else None.
        """
        return resolve_first(
            self.location, candidates, required=required, revision=self.revision, cache_dir=self.cache_dir
        )

    def settings(self, filename: str, allowed: Collection[str] | None = None) -> dict[str, Any]:
        """The settings the model recommends in `filename` (a JSON object beside its weights, such as the
        demo SAM's `amg.json`), keeping the keys in `allowed`; {} when it has none. Never downloads: a hub
        model's file is read from the cache only, because the file is optional."""
        from alignsam.io.files import read_json_object

        path = self.local_file(filename)
        if path is None:
            return {}
        data = read_json_object(path)
        return {k: v for k, v in data.items() if allowed is None or k in allowed}

    def local_file(self, filename: str) -> Path | None:
        """`filename` in the model's folder, or a hub model's copy of it in the cache; None when it is not on
        this machine. Never downloads (for files a model may or may not have); a single weights file has no
        files of its own."""
        if self.kind == "hub":
            path = from_cache(self.location, filename, self.revision, self.cache_dir)
        else:
            folder = self.path
            path = folder / filename if folder is not None and folder.is_dir() else None
        return path if path is not None and path.is_file() else None

    def recommended(self, names: Sequence[str]) -> dict[str, dict[str, Any]]:
        """The recommended-settings files among `names` that the model holds (file name -> JSON object)."""
        found = {name: self.settings(name) for name in names}
        return {name: settings for name, settings in found.items() if settings}

    def __str__(self) -> str:
        return self.ref


def resolve_model(
    ref: Ref | ModelSource,
    family: presets.Family,
    *,
    revision: str | None = None,
    cache_dir: CacheDir = None,
) -> ModelSource:
    """Resolve `ref` for a model of `family` ("align", "sam" or "internimage").

    In order: an existing local path (folder or file), a bundled model (`demo`), a short name of a published
    checkpoint (`align-base`, `vit_b`, `internimage-t`), a hub id (`org/name`). Raises `ModelNotFoundError`
    for something that can only be a path (it has a separator or a weights suffix) and does not exist.
    """
    if isinstance(ref, ModelSource):
        return ref
    text = os.fspath(ref)
    if not text.strip():
        raise ModelNotFoundError("The model reference is empty: give a hub id, a local path or a bundled name.")
    local = Path(text).expanduser()
    if local.exists():
        kind: Kind = "folder" if local.is_dir() else "file"
        return ModelSource(text, kind, str(local), revision, cache_dir)
    bundled = presets.bundled_folder(family, text)
    if bundled is not None:
        if not (bundled / "config.json").is_file():
            raise ModelNotFoundError(
                f"The bundled {family} model '{text}' is missing from this installation ({bundled}); "
                "reinstall alignsam."
            )
        return ModelSource(text, "bundled", str(bundled), revision, cache_dir)
    repo = presets.NAMES[family].get(text, text)
    if not looks_like_hub_id(repo):
        raise ModelNotFoundError(f"No such file or directory: '{text}'.")
    return ModelSource(text, "hub", repo, revision, cache_dir)


def default_model(family: presets.Family) -> str:
    """The reference a tool loads when none is given (`alignsam.presets.DEFAULT_MODELS`)."""
    return presets.DEFAULT_MODELS[family]


def recommended(
    ref: Ref | ModelSource, family: presets.Family, filename: str, allowed: Collection[str]
) -> dict[str, Any]:
    """`resolve_model(ref, family).settings(filename, allowed)`, or {} for a reference that does not resolve
    (the loader reports that one)."""
    try:
        return resolve_model(ref, family).settings(filename, allowed)
    except AlignSamError:
        return {}
