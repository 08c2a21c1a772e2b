"""Resolve a model reference to local files: a local path, or a Hugging Face hub id through its cache.

The cache is always tried first and without network, so a cached model loads offline and fast. Only when
a file is not cached is the hub asked, after a quick reachability check, so that a machine without network
gets one clear sentence instead of a minute of retries.
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from urllib.parse import urlparse

from alignsam.errors import ModelNotFoundError

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*(/[\w.\-]+)?$")
_PATH_HINTS = (os.sep, "/", "\\", "~")
CacheDir = str | Path | None
_FILE_SUFFIXES = (".pth", ".pt", ".bin", ".safetensors", ".json", ".ckpt")


def looks_like_hub_id(ref: str) -> bool:
    """True for 'org/name' or 'name' strings that are not obviously file-system paths."""
    if ref.startswith((".", *_PATH_HINTS)) or ref.endswith(_FILE_SUFFIXES):
        return False
    return bool(_HUB_ID.match(ref)) and ref.count("/") <= 1


def resolve_path(ref: str | os.PathLike[str]) -> Path | None:
    """The local file or directory `ref` names, or None when `ref` is a hub id.

    Raises `ModelNotFoundError` when `ref` can only be a path (it has a separator or a weight-file suffix)
    and nothing is there.
    """
    path = Path(ref).expanduser()
    if path.exists():
        return path
    if not looks_like_hub_id(str(ref)):
        raise ModelNotFoundError(f"No such file or directory: '{ref}'.")
    return None


def resolve_file(
    ref: str | os.PathLike[str],
    filename: str,
    *,
    required: bool = True,
    revision: str | None = None,
    cache_dir: CacheDir = None,
) -> Path | None:
    """Path of `filename` inside a local directory or a hub repository (downloaded into the cache).

    Returns None for a missing file when `required` is False.
    """
    return resolve_first(ref, [filename], required=required, revision=revision, cache_dir=cache_dir)


def resolve_first(
    ref: str | os.PathLike[str],
    candidates: Sequence[str],
    *,
    required: bool = True,
    revision: str | None = None,
    cache_dir: CacheDir = None,
) -> Path | None:
    """The first of `candidates` (file names, in order of preference) that `ref` holds.

    For a hub id every candidate is first looked up in the cache; the hub is asked only when none is cached.
    """
    local = resolve_path(ref)
    if local is not None:
        if local.is_file():
            if local.name in candidates or not required:
                return local
            raise ModelNotFoundError(f"'{ref}' is a file; expected a folder holding one of {list(candidates)}.")
        for name in candidates:
            if (local / name).is_file():
                return local / name
        if required:
            raise ModelNotFoundError(f"Folder '{ref}' holds none of {list(candidates)}.")
        return None

    repo_id = str(ref)
    for name in candidates:
        cached = from_cache(repo_id, name, revision, cache_dir)
        if cached is not None:
            return cached
    reason = _hub_unreachable_reason()
    if reason is not None:
        if not required:
            return None
        raise ModelNotFoundError(_offline_message(repo_id, reason))
    for name in candidates:
        downloaded = _download(repo_id, name, revision, cache_dir)
        if downloaded is not None:
            return downloaded
    if required:
        raise ModelNotFoundError(f"Hub repository '{repo_id}' holds none of {list(candidates)}.")
    return None


def from_cache(repo_id: str, filename: str, revision: str | None, cache_dir: CacheDir) -> Path | None:
    from huggingface_hub import try_to_load_from_cache

    hit = try_to_load_from_cache(repo_id, filename, cache_dir=cache_dir, revision=revision)
    return Path(hit) if isinstance(hit, str) else None


def _download(repo_id: str, filename: str, revision: str | None, cache_dir: CacheDir) -> Path | None:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, RepositoryNotFoundError

    try:
        return Path(hf_hub_download(repo_id, filename, revision=revision, cache_dir=cache_dir))
    except RepositoryNotFoundError as err:
        raise ModelNotFoundError(
            f"'{repo_id}' is neither a local path nor a repository on the Hugging Face hub "
            "(or it is private: log in with `hf auth login`)."
        ) from err
    except EntryNotFoundError:
        return None
    except OSError as err:  # connection dropped after the reachability check
        raise ModelNotFoundError(_offline_message(repo_id, str(err))) from err


def _offline_message(repo_id: str, reason: str) -> str:
    from huggingface_hub.constants import HF_HUB_CACHE

    return (
        f"Model '{repo_id}' is not a local path and is not in the Hugging Face cache ({HF_HUB_CACHE}), "
        f"and the hub cannot be reached ({reason}): run `hf download {repo_id}` on a machine with network "
        "access and copy the cache here (or point HF_HOME at it), or pass the path of a local folder or file."
    )


def _hub_unreachable_reason() -> str | None:
    """Why the hub cannot be asked, or None if it looks reachable. Cached for the process."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return "HF_HUB_OFFLINE is set"
    return _probe(constants.ENDPOINT)


@lru_cache(maxsize=4)
def _probe(endpoint: str) -> str | None:
    url = urlparse(endpoint)
    host = url.hostname or "huggingface.co"
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((host, port), timeout=3.0):
            return None
    except OSError as err:
        return f"no connection to {host}: {err.strerror or err}"
