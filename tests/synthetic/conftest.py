"""Helpers shared by the synthetic-data tests."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest

from alignsam.synthetic.captions import COLOUR_WORDS, SHAPE_WORDS

# "colour shape" pairs as captions can spell them, longest first so "crescent moon" wins over "crescent".
_COLOUR = {w: c for c, words in COLOUR_WORDS.items() for w in words}
_SHAPE = {w: s for s, pairs in SHAPE_WORDS.items() for pair in pairs for w in pair}
_PAIR = re.compile(
    r"\b({})\s+({})\b".format(
        "|".join(sorted(map(re.escape, _COLOUR), key=len, reverse=True)),
        "|".join(sorted(map(re.escape, _SHAPE), key=len, reverse=True)),
    ),
    re.IGNORECASE,
)


def _mentioned(caption: str) -> list[str]:
    return [f"{_COLOUR[c.lower()]} {_SHAPE[s.lower()]}" for c, s in _PAIR.findall(caption)]


@pytest.fixture(scope="session")
def mentioned() -> Callable[[str], list[str]]:
    """The "<colour> <shape>" classes a caption names, in order ("two violet moons" -> purple crescent)."""
    return _mentioned
