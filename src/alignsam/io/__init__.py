"""Reading the outside world: hub ids and local checkpoints, weight files, images."""

from alignsam.io.hub import resolve_file, resolve_path
from alignsam.io.images import ImageInput, load_image, load_image_array
from alignsam.io.weights import build_on_meta, load_state_dict, load_weights_into, save_safetensors

__all__ = [
    "ImageInput",
    "build_on_meta",
    "load_image",
    "load_image_array",
    "load_state_dict",
    "load_weights_into",
    "resolve_file",
    "resolve_path",
    "save_safetensors",
]
