"""Declarative data filters: COYO-700M's metadata columns and the ALIGN paper's own rules.

`FilterConfig` is a frozen set of thresholds; `None` turns a rule off. Rules on metadata and captions are
checked as samples are read (before shuffling and decoding, so they cost nothing); the image-size rules
use the metadata's `original_width`/`original_height` (img2dataset) or `width`/`height` (COYO) when present,
and the decoded image otherwise. Each dropped sample is counted under `filtered:<rule>`; a sample whose
metadata lacks a column a rule needs is dropped and counted under `filtered:<rule>:missing`.

Presets: `FilterConfig.align_paper()` (ALIGN §3: shorter side > 200 px, aspect ratio < 3, 3..20 words,
captions shared by more than 10 images dropped) and `FilterConfig.coyo()` (the COYO-700M README's cuts).
The paper's rare-token rule and pHash de-duplication against test sets are not offered (they need external
unigram statistics and test-set hashes).
"""

from __future__ import annotations

import dataclasses
import math
import operator
import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from alignsam.errors import ConfigError

_OPS: dict[str, Callable[[float, float], bool]] = {
    "<=": operator.le,
    ">=": operator.ge,
    "==": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    ">": operator.gt,
}
_RULE = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(<=|>=|==|!=|<|>)\s*(-?[0-9.eE+-]+)\s*$")


@dataclasses.dataclass(frozen=True)
class Rule:
    """`column op value` on a numeric metadata column, e.g. `clip_similarity_vitb32 >= 0.3`."""

    column: str
    op: str
    value: float

    @classmethod
    def parse(cls, text: str) -> Rule:
        match = _RULE.match(text)
        if not match:
            raise ConfigError(f"Filter rule {text!r} is not 'column OP number' with OP one of {list(_OPS)}.")
        return cls(match.group(1), match.group(2), float(match.group(3)))

    def __str__(self) -> str:
        return f"{self.column}{self.op}{self.value:g}"


@dataclasses.dataclass(frozen=True)
class FilterConfig:
    """Which samples to keep. Every threshold is inclusive; `None` turns the rule off.

    Metadata (COYO-700M column names):
        min_clip_similarity: `clip_similarity_vitb32 >= x` (COYO's mean is 0.29).
        max_watermark: `watermark_score <= x`.
        min_aesthetic: `aesthetic_score_laion_v2 >= x`.
        max_nsfw: `nsfw_score_opennsfw2 <= x` (COYO removed > 0.5).
        max_faces: `num_faces <= n`.
        rules: further `column OP number` rules (strings or `Rule`s), e.g. "clip_similarity_vitl14>=0.25".
    Captions (measured on the caption itself):
        min_text_length, max_text_length: characters.
        min_words, max_words: whitespace-separated words (ALIGN: 3..20 unigrams).
        max_caption_repeats: drop captions shared by more than n samples of the whole data set (ALIGN: 10);
            needs one pass over the captions before training.
    Images:
        min_image_side: the shorter side in pixels (ALIGN: > 200; COYO: >= 200).
        max_aspect_ratio: longer side / shorter side (ALIGN: < 3; COYO: <= 3).
    """

    min_clip_similarity: float | None = None
    max_watermark: float | None = None
    min_aesthetic: float | None = None
    max_nsfw: float | None = None
    max_faces: int | None = None
    rules: tuple[Rule, ...] = ()
    min_text_length: int | None = None
    max_text_length: int | None = None
    min_words: int | None = None
    max_words: int | None = None
    max_caption_repeats: int | None = None
    min_image_side: int | None = None
    max_aspect_ratio: float | None = None

    def __post_init__(self) -> None:
        rules = tuple(r if isinstance(r, Rule) else Rule.parse(str(r)) for r in self.rules)
        object.__setattr__(self, "rules", rules)
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name != "rules" and value is not None and (not isinstance(value, int | float) or value < 0):
                raise ConfigError(f"FilterConfig.{f.name} must be a non-negative number or None, got {value!r}.")
        if self.max_aspect_ratio is not None and self.max_aspect_ratio < 1:
            raise ConfigError(f"max_aspect_ratio must be at least 1, got {self.max_aspect_ratio}.")

    @classmethod
    def align_paper(cls) -> FilterConfig:
        """The ALIGN paper's filters (§3) that need no external data."""
        return cls(min_image_side=201, max_aspect_ratio=3.0, min_words=3, max_words=20, max_caption_repeats=10)

    @classmethod
    def coyo(cls) -> FilterConfig:
        """The cuts the COYO-700M README lists (images >= 200 px, aspect <= 3, NSFW <= 0.5, 3..256 words,
        more than 5 and at most 1000 characters, captions repeated more than 10 times dropped)."""
        return cls(
            max_nsfw=0.5,
            min_image_side=200,
            max_aspect_ratio=3.0,
            min_text_length=6,
            max_text_length=1000,
            min_words=3,
            max_words=256,
            max_caption_repeats=10,
        )

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["rules"] = [str(r) for r in self.rules]
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FilterConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ConfigError(f"Unknown filter settings {unknown}; known: {sorted(names)}.")
        values: dict[str, Any] = {k: (tuple(v) if k == "rules" else v) for k, v in data.items()}
        return cls(**values)

    @property
    def active(self) -> bool:
        return any(getattr(self, f.name) not in (None, ()) for f in dataclasses.fields(self))

    def metadata_rules(self) -> list[tuple[str, Rule]]:
        """(counter name, rule) of every active rule on a metadata column."""
        named = [
            ("min_clip_similarity", "clip_similarity_vitb32", ">="),
            ("max_watermark", "watermark_score", "<="),
            ("min_aesthetic", "aesthetic_score_laion_v2", ">="),
            ("max_nsfw", "nsfw_score_opennsfw2", "<="),
            ("max_faces", "num_faces", "<="),
        ]
        out = [
            (field, Rule(column, op, float(getattr(self, field))))
            for field, column, op in named
            if getattr(self, field) is not None
        ]
        return out + [(rule.column, rule) for rule in self.rules]


def _number(value: Any) -> float | None:
    """A metadata value as a float (CSV cells are strings), or None when absent or not a finite number."""
    if value is None or isinstance(value, bool):
        return None
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


class SampleFilter:
    """Applies a `FilterConfig`. `reason(...)` returns None to keep a sample, else the counter to increment.

    Args:
        config: the thresholds.
        banned_captions: captions over `max_caption_repeats` (from `repeated_captions`), dropped as `repeats`.
    """

    def __init__(self, config: FilterConfig, banned_captions: frozenset[str] = frozenset()) -> None:
        self.config = config
        self.banned = banned_captions
        self._metadata_rules = config.metadata_rules()

    def reason(self, caption: str, meta: Mapping[str, Any] | None) -> str | None:
        """Rules on the caption and the metadata (everything but a decoded image's size)."""
        c = self.config
        meta = meta or {}
        for name, rule in self._metadata_rules:
            value = _number(meta.get(rule.column))
            if value is None:
                return f"filtered:{name}:missing"
            if not _OPS[rule.op](value, rule.value):
                return f"filtered:{name}"
        length = len(caption)
        if c.min_text_length is not None and length < c.min_text_length:
            return "filtered:min_text_length"
        if c.max_text_length is not None and length > c.max_text_length:
            return "filtered:max_text_length"
        if c.min_words is not None or c.max_words is not None:
            words = len(caption.split())
            if c.min_words is not None and words < c.min_words:
                return "filtered:min_words"
            if c.max_words is not None and words > c.max_words:
                return "filtered:max_words"
        if self.banned and caption.strip() in self.banned:
            return "filtered:max_caption_repeats"
        size = self.size_from_metadata(meta)
        return None if size is None else self.size_reason(*size)

    @property
    def checks_image_size(self) -> bool:
        return self.config.min_image_side is not None or self.config.max_aspect_ratio is not None

    def size_from_metadata(self, meta: Mapping[str, Any]) -> tuple[float, float] | None:
        """(width, height) of the original image from the metadata, when known and needed."""
        if not self.checks_image_size:
            return None
        for w_key, h_key in (("original_width", "original_height"), ("width", "height")):
            w, h = _number(meta.get(w_key)), _number(meta.get(h_key))
            if w is not None and h is not None:
                return w, h
        return None

    def size_reason(self, width: float, height: float) -> str | None:
        """The image-size rules on a (width, height)."""
        c = self.config
        short, long = min(width, height), max(width, height)
        if c.min_image_side is not None and short < c.min_image_side:
            return "filtered:min_image_side"
        if c.max_aspect_ratio is not None and (short <= 0 or long / short > c.max_aspect_ratio):
            return "filtered:max_aspect_ratio"
        return None


def repeated_captions(captions: Iterable[str], max_repeats: int) -> frozenset[str]:
    """The captions that occur more than `max_repeats` times (compared after stripping whitespace)."""
    counts = Counter(c.strip() for c in captions)
    return frozenset(text for text, n in counts.items() if n > max_repeats)


def merge_counts(*counters: Mapping[str, int]) -> dict[str, int]:
    """The sum of several counters, as a plain sorted dict (what logs and JSON reports show)."""
    total: Counter[str] = Counter()
    for c in counters:
        total.update(c)
    return dict(sorted((k, v) for k, v in total.items() if v))
