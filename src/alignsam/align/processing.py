"""ALIGN's input side: image preprocessing, WordPiece tokenisation, and the processor combining them.

Image preprocessing equals transformers' `EfficientNetImageProcessor` (PIL backend) with align-base's
settings: resize to 346 x 346 with PIL bilinear (aspect ratio not kept), centre crop 289 x 289, then
`x / 127.5 - 1`; no mean/std normalisation. Inputs can be paths, bytes, PIL images or arrays in any mode
(see `alignsam.io.images`).

Tokenisation is uncased BERT WordPiece through the `tokenizers` library, built from the checkpoint's own
`tokenizer.json` or `vocab.txt`. By default texts are **truncated to 64 tokens** (ALIGN's training length;
transformers does not truncate by default and then fails to batch long texts) and padded to 64 like
transformers' processor; `padding="longest"` pads only to the longest text of the batch, which is faster.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image

from alignsam.errors import CheckpointError, InputError
from alignsam.io.files import read_json_object, write_atomic, write_text_atomic
from alignsam.io.hub import CacheDir
from alignsam.io.images import ImageInput, load_image
from alignsam.io.resolve import ModelSource, Ref, resolve_model
from alignsam.outputs import BatchFeature as BatchFeature

Padding = bool | Literal["longest", "max_length", "do_not_pad"]
TensorType = Literal["pt", "np"] | None

DEFAULT_MAX_LENGTH = 64

_SURROGATE = re.compile("[\ud800-\udfff]")


def _convert(arrays: dict[str, np.ndarray], return_tensors: TensorType) -> BatchFeature:
    if return_tensors == "pt":
        return BatchFeature({k: torch.from_numpy(v) for k, v in arrays.items()})
    if return_tensors == "np":
        return BatchFeature(arrays)
    if return_tensors is None:
        return BatchFeature({k: v.tolist() for k, v in arrays.items()})
    raise InputError(f"return_tensors must be 'pt', 'np' or None, not {return_tensors!r}.")


def _hw(value: Any, name: str) -> tuple[int, int]:
    if isinstance(value, int):
        return value, value
    if isinstance(value, Mapping) and {"height", "width"} <= set(value):
        return int(value["height"]), int(value["width"])
    if isinstance(value, Sequence) and len(value) == 2:
        return int(value[0]), int(value[1])
    raise CheckpointError(f"Unsupported image processor {name}: {value!r} (expected height and width).")


class AlignImageProcessor:
    """Resize, centre crop and rescale images into `pixel_values` (`B x 3 x H x W` float32)."""

    def __init__(
        self,
        size: int | tuple[int, int] | Mapping[str, int] = 346,
        crop_size: int | tuple[int, int] | Mapping[str, int] = 289,
        resample: int = Image.Resampling.BILINEAR,
        do_resize: bool = True,
        do_center_crop: bool = True,
        do_rescale: bool = True,
        rescale_factor: float = 1 / 127.5,
        rescale_offset: bool = True,
        do_normalize: bool = False,
        image_mean: Sequence[float] = (0.5, 0.5, 0.5),
        image_std: Sequence[float] = (0.5, 0.5, 0.5),
        include_top: bool = False,
    ) -> None:
        self.size = _hw(size, "size")
        self.crop_size = _hw(crop_size, "crop_size")
        self.resample = int(resample)
        self.do_resize = do_resize
        self.do_center_crop = do_center_crop
        self.do_rescale = do_rescale
        self.rescale_factor = float(rescale_factor)
        self.rescale_offset = rescale_offset
        self.do_normalize = do_normalize
        self.image_mean = tuple(float(v) for v in image_mean)
        self.image_std = tuple(float(v) for v in image_std)
        self.include_top = include_top

    @property
    def output_size(self) -> tuple[int, int]:
        """(height, width) of `pixel_values` when the input is resized (or cropped) to a fixed size."""
        return self.crop_size if self.do_center_crop else self.size

    def preprocess(self, image: ImageInput) -> np.ndarray:
        """One image -> `3 x H x W` float32 array."""
        pil = load_image(image)
        if self.do_resize:
            h, w = self.size
            pil = pil.resize((w, h), resample=self.resample)
        arr = np.asarray(pil)
        if self.do_center_crop:
            arr = _center_crop(arr, self.crop_size)
        x: np.ndarray = arr.astype(np.float32)
        if self.do_rescale:
            x = x * np.float32(self.rescale_factor)
            if self.rescale_offset:
                x = x - np.float32(1.0)
        if self.do_normalize:
            x = (x - np.asarray(self.image_mean, np.float32)) / np.asarray(self.image_std, np.float32)
        if self.include_top:  # transformers' "include_top": divide by std once more (classification head)
            x = x / np.asarray(self.image_std, np.float32)
        return np.ascontiguousarray(x.transpose(2, 0, 1))

    def __call__(self, images: ImageInput | Sequence[ImageInput], return_tensors: TensorType = "pt") -> BatchFeature:
        batch = _as_list(images, "images")
        pixels = np.stack([self.preprocess(im) for im in batch])
        return _convert({"pixel_values": pixels}, return_tensors)

    def to_dict(self) -> dict[str, Any]:
        """transformers' `preprocessor_config.json` content."""
        return {
            "image_processor_type": "EfficientNetImageProcessor",
            "size": {"height": self.size[0], "width": self.size[1]},
            "crop_size": {"height": self.crop_size[0], "width": self.crop_size[1]},
            "resample": self.resample,
            "do_resize": self.do_resize,
            "do_center_crop": self.do_center_crop,
            "do_rescale": self.do_rescale,
            "rescale_factor": self.rescale_factor,
            "rescale_offset": self.rescale_offset,
            "do_normalize": self.do_normalize,
            "image_mean": list(self.image_mean),
            "image_std": list(self.image_std),
            "include_top": self.include_top,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AlignImageProcessor:
        known = set(cls().to_dict()) - {"image_processor_type"}
        return cls(**{k: v for k, v in data.items() if k in known})

    @classmethod
    def from_pretrained(
        cls, ref: Ref | ModelSource, *, revision: str | None = None, cache_dir: CacheDir = None
    ) -> AlignImageProcessor:
        """From `preprocessor_config.json` (hub layout) or `processor_config.json` (transformers 5 layout)."""
        source = resolve_model(ref, "align", revision=revision, cache_dir=cache_dir)
        path = source.find(["preprocessor_config.json", "processor_config.json"])
        assert path is not None
        data = read_json_object(path)
        if path.name == "processor_config.json":
            data = data.get("image_processor", data)
        return cls.from_dict(data)


def _center_crop(arr: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Crop `H x W x C` to `size` around the centre; pad with zeros where the image is smaller."""
    ch, cw = size
    h, w = arr.shape[:2]
    if h >= ch and w >= cw:
        top, left = (h - ch) // 2, (w - cw) // 2
        return arr[top : top + ch, left : left + cw]
    out = np.zeros((max(h, ch), max(w, cw), arr.shape[2]), arr.dtype)
    top, left = (out.shape[0] - h) // 2, (out.shape[1] - w) // 2
    out[top : top + h, left : left + w] = arr
    return _center_crop(out, size)


class AlignTokenizer:
    """Uncased BERT WordPiece tokeniser (`tokenizers` library) with transformers' padding semantics."""

    def __init__(
        self,
        tokenizer: Any,
        *,
        model_max_length: int = 512,
        pad_token: str = "[PAD]",
        do_lower_case: bool = True,
    ) -> None:
        self._tokenizer = tokenizer
        self._tokenizer.no_padding()
        self._tokenizer.no_truncation()
        self._truncating: dict[int, Any] = {}
        self.model_max_length = int(model_max_length)
        self.pad_token = pad_token
        pad_id = tokenizer.token_to_id(pad_token)
        if pad_id is None:
            raise CheckpointError(f"The vocabulary has no padding token {pad_token!r}.")
        self.pad_token_id = int(pad_id)
        self.do_lower_case = do_lower_case

    @property
    def vocab_size(self) -> int:
        return int(self._tokenizer.get_vocab_size())

    def __len__(self) -> int:
        return self.vocab_size

    @classmethod
    def from_vocab(
        cls,
        vocab: str | os.PathLike[str] | Mapping[str, int],
        *,
        do_lower_case: bool = True,
        strip_accents: bool | None = None,
        tokenize_chinese_chars: bool = True,
        model_max_length: int = 512,
        unk_token: str = "[UNK]",
        cls_token: str = "[CLS]",
        sep_token: str = "[SEP]",
        pad_token: str = "[PAD]",
        mask_token: str = "[MASK]",
    ) -> AlignTokenizer:
        """Build BERT's pipeline (normaliser, pre-tokeniser, WordPiece, [CLS] ... [SEP]) from a vocabulary."""
        from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

        if not isinstance(vocab, Mapping):
            vocab = _read_vocab(Path(vocab))
        for token in (unk_token, cls_token, sep_token, pad_token):
            if token not in vocab:
                raise CheckpointError(f"The vocabulary has no special token {token!r}.")
        tok = Tokenizer(models.WordPiece(dict(vocab), unk_token=unk_token, max_input_chars_per_word=100))
        tok.normalizer = normalizers.BertNormalizer(
            clean_text=True,
            handle_chinese_chars=tokenize_chinese_chars,
            strip_accents=strip_accents,
            lowercase=do_lower_case,
        )
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tok.post_processor = processors.TemplateProcessing(
            single=f"{cls_token}:0 $A:0 {sep_token}:0",
            pair=f"{cls_token}:0 $A:0 {sep_token}:0 $B:1 {sep_token}:1",
            special_tokens=[(cls_token, vocab[cls_token]), (sep_token, vocab[sep_token])],
        )
        tok.decoder = decoders.WordPiece(prefix="##")
        tok.add_special_tokens([t for t in (pad_token, unk_token, cls_token, sep_token, mask_token) if t in vocab])
        return cls(tok, model_max_length=model_max_length, pad_token=pad_token, do_lower_case=do_lower_case)

    @classmethod
    def from_pretrained(
        cls, ref: Ref | ModelSource, *, revision: str | None = None, cache_dir: CacheDir = None
    ) -> AlignTokenizer:
        """From `tokenizer.json` (transformers 5 layout) or `vocab.txt` + `tokenizer_config.json` (hub layout)."""
        from tokenizers import Tokenizer

        source = resolve_model(ref, "align", revision=revision, cache_dir=cache_dir)
        cfg_path = source.find(["tokenizer_config.json"], required=False)
        cfg = read_json_object(cfg_path) if cfg_path is not None else {}
        max_len = cfg.get("model_max_length", 512)
        max_len = 512 if not isinstance(max_len, int) or max_len > 1_000_000 else max_len
        pad = cfg.get("pad_token", "[PAD]")
        pad = pad.get("content", "[PAD]") if isinstance(pad, dict) else pad
        lower = bool(cfg.get("do_lower_case", True))
        path = source.find(["tokenizer.json", "vocab.txt"])
        assert path is not None
        if path.name == "tokenizer.json":
            try:
                tok = Tokenizer.from_file(str(path))
            except Exception as err:
                raise CheckpointError(f"'{path}' is not a readable tokenizer: {err}") from err
            return cls(tok, model_max_length=max_len, pad_token=pad, do_lower_case=lower)
        return cls.from_vocab(
            path,
            do_lower_case=lower,
            strip_accents=cfg.get("strip_accents"),
            tokenize_chinese_chars=cfg.get("tokenize_chinese_chars", True),
            model_max_length=max_len,
            pad_token=pad,
        )

    def save_pretrained(self, directory: str | os.PathLike[str]) -> None:
        """Write `tokenizer.json`, `vocab.txt` and `tokenizer_config.json`."""
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        write_atomic(out / "tokenizer.json", lambda partial: self._tokenizer.save(str(partial)))
        vocab = sorted(self._tokenizer.get_vocab().items(), key=lambda kv: kv[1])
        write_text_atomic(out / "vocab.txt", "".join(t + "\n" for t, _ in vocab))
        config = {
            "tokenizer_class": "BertTokenizer",
            "do_lower_case": self.do_lower_case,
            "model_max_length": self.model_max_length,
            "pad_token": self.pad_token,
            "unk_token": "[UNK]",
            "cls_token": "[CLS]",
            "sep_token": "[SEP]",
            "mask_token": "[MASK]",
        }
        write_text_atomic(out / "tokenizer_config.json", json.dumps(config, indent=2) + "\n")

    def _engine(self, max_length: int | None) -> Any:
        """The tokenizer, or a private copy that truncates to `max_length` (the original stays untouched)."""
        if max_length is None:
            return self._tokenizer
        if max_length not in self._truncating:
            from tokenizers import Tokenizer

            copy = Tokenizer.from_str(self._tokenizer.to_str())
            copy.enable_truncation(max_length)
            self._truncating[max_length] = copy
        return self._truncating[max_length]

    def __call__(
        self,
        text: str | Sequence[str],
        *,
        padding: Padding = "max_length",
        max_length: int | None = DEFAULT_MAX_LENGTH,
        truncation: bool = True,
        return_tensors: TensorType = "pt",
    ) -> BatchFeature:
        """Tokenise a text or a list of texts into `input_ids`, `token_type_ids`, `attention_mask` (`B x L`).

        padding: "max_length" (to `max_length`), "longest"/True (to the longest text), False/"do_not_pad".
        truncation: cut texts to `max_length` tokens (default 64), keeping [CLS] and [SEP].
        """
        texts = _check_texts(text)
        if max_length is not None and max_length < 2:
            raise InputError(f"max_length must be at least 2 ([CLS] and [SEP]), got {max_length}.")
        limit = (max_length or self.model_max_length) if truncation else None
        encodings = self._encode(texts, limit)
        ids = [e.ids for e in encodings]
        types = [e.type_ids for e in encodings]
        longest = max(len(x) for x in ids)
        if padding in (True, "longest"):
            width = longest
        elif padding == "max_length":
            width = max(max_length or self.model_max_length, longest)
        elif padding in (False, "do_not_pad"):
            if return_tensors is None:
                masks = [[1] * len(x) for x in ids]
                return BatchFeature({"input_ids": ids, "token_type_ids": types, "attention_mask": masks})
            if len({len(x) for x in ids}) > 1:
                raise InputError("Texts of different lengths cannot be returned as tensors without padding.")
            width = longest
        else:
            raise InputError(f"padding must be 'max_length', 'longest', True or False, not {padding!r}.")
        arrays = self.pad(ids, width, types)
        return _convert(arrays, return_tensors)

    def token_ids(self, texts: Sequence[str], max_length: int | None = DEFAULT_MAX_LENGTH) -> list[list[int]]:
        """Token ids of each text with [CLS] and [SEP], truncated to `max_length` (None: no truncation)."""
        return [e.ids for e in self._encode(_check_texts(texts), max_length)]

    def _encode(self, texts: list[str], limit: int | None) -> list[Any]:
        """Encodings of `texts`, truncated to `limit` tokens, with work bounded by `limit`, not by the text.

        Why: the tokenizer holds every token and offset of a text before truncating it, so one 60 MB text
        cost 11 GB. A text longer than a few hundred characters per wanted token is tokenised from a prefix
        that grows until it holds `limit` tokens of complete words, which gives exactly the tokens of the
        whole text; only a text whose first `max_text_chars(limit)` characters hold fewer tokens (megabytes
        of whitespace or control characters) is read no further.
        """
        engine = self._engine(limit)
        if limit is None:
            return list(engine.encode_batch(texts))
        start = _prefix_start(limit)
        short = [i for i, t in enumerate(texts) if len(t) <= start]
        out: list[Any] = [None] * len(texts)
        for i, enc in zip(short, engine.encode_batch([texts[i] for i in short]), strict=True):
            out[i] = enc
        for i, text in enumerate(texts):
            if out[i] is None:
                out[i] = engine.encode(self._prefix(text, limit))
        return out

    def _prefix(self, text: str, limit: int) -> str:
        """The shortest tried prefix of `text` whose complete words give at least `limit` tokens."""
        size, cap = _prefix_start(limit), max_text_chars(limit)
        while True:
            prefix = _cut(text, size)
            if len(prefix) >= len(text):
                return text
            enc = self._tokenizer.encode(prefix)
            words = [w for w in enc.word_ids if w is not None]
            if words:  # tokens of the last (maybe cut) word do not count
                complete = sum(1 for w in words if w < words[-1])
            else:  # no word boundaries known: demand a margin instead
                complete = len(enc.ids) - 16
            if complete >= limit or size >= cap:
                return prefix
            size = min(size * 4, cap)

    def pad(
        self, ids: Sequence[Sequence[int]], width: int, type_ids: Sequence[Sequence[int]] | None = None
    ) -> dict[str, np.ndarray]:
        """Right-pad id lists to `width`: `input_ids`, `token_type_ids`, `attention_mask`, each `B x width`."""
        n = len(ids)
        input_ids = np.full((n, width), self.pad_token_id, np.int64)
        token_type_ids = np.zeros((n, width), np.int64)
        attention_mask = np.zeros((n, width), np.int64)
        for i, row in enumerate(ids):
            input_ids[i, : len(row)] = row
            attention_mask[i, : len(row)] = 1
            if type_ids is not None:
                token_type_ids[i, : len(row)] = type_ids[i]
        return {"input_ids": input_ids, "token_type_ids": token_type_ids, "attention_mask": attention_mask}

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = True) -> str:
        return str(self._tokenizer.decode(list(ids), skip_special_tokens=skip_special_tokens))

    def batch_decode(self, batch: Iterable[Iterable[int]], skip_special_tokens: bool = True) -> list[str]:
        return [self.decode(ids, skip_special_tokens) for ids in batch]

    def tokenize(self, text: str) -> list[str]:
        return list(self._tokenizer.encode(text, add_special_tokens=False).tokens)


class AlignProcessor:
    """Images and texts to model inputs: `processor(text=..., images=..., return_tensors="pt")`."""

    def __init__(self, image_processor: AlignImageProcessor | None = None, tokenizer: AlignTokenizer | None = None):
        self.image_processor = image_processor or AlignImageProcessor()
        self.tokenizer = tokenizer

    @classmethod
    def from_pretrained(
        cls, ref: Ref | ModelSource, *, revision: str | None = None, cache_dir: CacheDir = None
    ) -> AlignProcessor:
        """From a hub id or folder in either layout (see `AlignImageProcessor` and `AlignTokenizer`)."""
        source = resolve_model(ref, "align", revision=revision, cache_dir=cache_dir)
        return cls(AlignImageProcessor.from_pretrained(source), AlignTokenizer.from_pretrained(source))

    def save_pretrained(self, directory: str | os.PathLike[str]) -> None:
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        config = {**self.image_processor.to_dict(), "processor_class": "AlignProcessor"}
        write_text_atomic(out / "preprocessor_config.json", json.dumps(config, indent=2) + "\n")
        if self.tokenizer is not None:
            self.tokenizer.save_pretrained(out)

    def __call__(
        self,
        text: str | Sequence[str] | None = None,
        images: ImageInput | Sequence[ImageInput] | None = None,
        *,
        return_tensors: TensorType = "pt",
        padding: Padding = "max_length",
        max_length: int | None = DEFAULT_MAX_LENGTH,
        truncation: bool = True,
    ) -> BatchFeature:
        """`input_ids`, `token_type_ids`, `attention_mask` for `text`; `pixel_values` for `images`."""
        if text is None and images is None:
            raise InputError("Pass text, images, or both.")
        out = BatchFeature()
        if text is not None:
            if self.tokenizer is None:
                raise InputError("This processor has no tokenizer; load one with AlignProcessor.from_pretrained.")
            out.update(
                self.tokenizer(
                    text, padding=padding, max_length=max_length, truncation=truncation, return_tensors=return_tensors
                )
            )
        if images is not None:
            out.update(self.image_processor(images, return_tensors=return_tensors))
        return out

    def batch_decode(self, batch: Iterable[Iterable[int]], skip_special_tokens: bool = True) -> list[str]:
        if self.tokenizer is None:
            raise InputError("This processor has no tokenizer.")
        return self.tokenizer.batch_decode(batch, skip_special_tokens)


def max_text_chars(limit: int) -> int:
    """How many characters of a text tokenisation truncated to `limit` tokens reads at most."""
    return max(1 << 20, 4096 * limit)


def _prefix_start(limit: int) -> int:
    return max(4096, 64 * limit)


def _cut(text: str, size: int) -> str:
    """`text[:size]`, moved back to just before a whitespace when one is near (a word is not cut)."""
    if len(text) <= size:
        return text
    space = max(text.rfind(c, size - 256, size) for c in " \n\t")
    return text[:space] if space > 0 else text[:size]


def _check_texts(text: str | Sequence[str]) -> list[str]:
    texts = _as_list(text, "texts")
    bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
    if bad:
        raise InputError(f"Texts must be strings; item {bad[0]} is a {type(texts[bad[0]]).__name__}.")
    # Why: a lone surrogate (a file's undecodable byte read with surrogateescape, or "\ud800" in JSON) is no
    # character; the tokenizer refused the whole batch with a TypeError. It reads as U+FFFD, as a decoder would.
    return [_SURROGATE.sub("\ufffd", t) if _SURROGATE.search(t) else t for t in texts]


def _as_list(items: Any, what: str) -> list[Any]:
    if isinstance(items, str | bytes | os.PathLike | Image.Image | np.ndarray):
        return [items]
    try:
        out = list(items)
    except TypeError:
        return [items]
    if not out:
        raise InputError(f"The list of {what} is empty.")
    return out


def _read_vocab(path: Path) -> dict[str, int]:
    vocab: dict[str, int] = {}
    try:
        with open(path, encoding="utf-8") as f:
            for index, line in enumerate(f):
                vocab[line.rstrip("\n")] = index
    except UnicodeDecodeError as err:
        raise CheckpointError(f"Vocabulary '{path}' is not UTF-8 text ({err.reason} at byte {err.start}).") from None
    except OSError as err:
        raise CheckpointError(f"Vocabulary '{path}' cannot be read: {err}") from None
    if not vocab:
        raise CheckpointError(f"Vocabulary '{path}' is empty.")
    return vocab
