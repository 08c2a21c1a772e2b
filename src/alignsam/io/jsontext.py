"""JSON text for results that carry file names of any bytes.

A file name that is not UTF-8 (`b'\\xff.png'`) reaches Python as a string with lone surrogates (PEP 383:
`os.fsdecode`), which no UTF-8 writer accepts. `json_text` writes those code points as `\\udcff` escapes, which
JSON allows: `json.loads` gives the same string back and `os.fsencode` of it the original bytes, and every
other character stays as it is.
"""

from __future__ import annotations

import json
import re
from typing import Any

_SURROGATE = re.compile("[\ud800-\udfff]")


def json_text(value: Any, indent: int | None = 2) -> str:
    """`json.dumps(value, ensure_ascii=False)` with lone surrogates escaped, so the text encodes as UTF-8."""
    text = json.dumps(value, indent=indent, ensure_ascii=False)
    return _SURROGATE.sub(lambda m: f"\\u{ord(m[0]):04x}", text)  # only inside strings: JSON escapes them


def display_name(name: str) -> str:
    """A file name for a message or a table that needs valid text: undecodable bytes as `\\xff`."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
