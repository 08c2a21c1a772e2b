"""The metadata filter of a search (`--where`): a small SQL-like grammar parsed here into a parameterised
SQLite `WHERE` clause on a fixed set of columns.

    filter  := or
    or      := and ("OR" and)*
    and     := not ("AND" not)*
    not     := "NOT" not | atom
    atom    := "(" or ")"
             | COLUMN ("=" | "!=" | "<>" | "<" | "<=" | ">" | ">=") VALUE
             | COLUMN ["NOT"] "LIKE" STRING
             | COLUMN ["NOT"] "IN" "(" VALUE ("," VALUE)* ")"
             | COLUMN "IS" ["NOT"] "NULL"
    VALUE   := NUMBER | STRING ('single' or "double" quoted; a doubled quote stands for itself)

Keywords are case-insensitive. The user's text never reaches SQL: columns come from `COLUMNS` (a fixed
table of SQL expressions), operators from a fixed set, and every value is a `?` parameter, so a filter
such as `path = ''; DROP TABLE images` is either a parse error or a harmless string comparison.
"""

from __future__ import annotations

import dataclasses
import os
import re
from typing import Any, Literal

from alignsam.errors import UsageError

Kind = Literal["number", "text", "path"]

COLUMNS: dict[str, tuple[str, Kind]] = {
    "id": ("id", "number"),
    "path": ("path", "path"),
    "size": ("size", "number"),
    "mtime": ("(mtime_ns / 1e9)", "number"),
    "width": ("width", "number"),
    "height": ("height", "number"),
    "caption": ("caption", "text"),
    "tags": ("tags", "text"),
    "hash": ("hash", "text"),
}
"""The columns a filter may name: SQL expression and kind. `mtime` is in seconds since the epoch; `path`
is stored as the file name's bytes, compared as bytes and matched by LIKE as text."""

MAX_LENGTH = 4000
MAX_DEPTH = 64
_COMPARISONS = {"=": "=", "!=": "!=", "<>": "!=", "<": "<", "<=": "<=", ">": ">", ">=": ">="}
_KEYWORDS = {"AND", "OR", "NOT", "LIKE", "IN", "IS", "NULL"}
_TOKEN = re.compile(
    r"""(?P<space>\s+)
      | (?P<number>-?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)
      | (?P<string>'(?:[^']|'')*'|"(?:[^"]|"")*")
      | (?P<op><=|>=|!=|<>|=|<|>)
      | (?P<punct>[(),])
      | (?P<word>[A-Za-z_][A-Za-z0-9_]*)""",
    re.X,
)


@dataclasses.dataclass(frozen=True)
class Token:
    kind: str  # number, string, op, punct, word, end
    text: str
    pos: int  # 1-based character position in the filter


@dataclasses.dataclass(frozen=True)
class Where:
    """A parsed filter: `sql` (with `?` placeholders, for `... WHERE {sql}`) and its `params`."""

    sql: str
    params: tuple[Any, ...]
    text: str


def parse_filter(text: str) -> Where:
    """The parameterised SQL of a filter; a `UsageError` naming the position where it stops parsing."""
    if not isinstance(text, str) or not text.strip():
        raise UsageError("The filter is empty; write e.g. \"width >= 512 AND path LIKE '%/beach/%'\".")
    if len(text) > MAX_LENGTH:
        raise UsageError(f"The filter is {len(text)} characters long; at most {MAX_LENGTH} are accepted.")
    parser = _Parser(text, _tokens(text))
    sql = parser.parse_or(0)
    parser.expect_end()
    return Where(sql, tuple(parser.params), text)


def _tokens(text: str) -> list[Token]:
    out: list[Token] = []
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            raise UsageError(f"The filter does not parse at position {pos + 1}: unexpected {text[pos]!r} in {text!r}.")
        kind = m.lastgroup or ""
        if kind != "space":
            out.append(Token(kind, m.group(), pos + 1))
        pos = m.end()
    out.append(Token("end", "", len(text) + 1))
    return out


class _Parser:
    def __init__(self, text: str, tokens: list[Token]) -> None:
        self.text = text
        self.tokens = tokens
        self.i = 0
        self.params: list[Any] = []

    # --- tokens ---------------------------------------------------------------------------------------

    @property
    def tok(self) -> Token:
        return self.tokens[self.i]

    def keyword(self, word: str) -> bool:
        """Consume the keyword `word` if it comes next."""
        if self.tok.kind == "word" and self.tok.text.upper() == word:
            self.i += 1
            return True
        return False

    def fail(self, expected: str) -> UsageError:
        found = "the end" if self.tok.kind == "end" else repr(self.tok.text)
        return UsageError(
            f"The filter does not parse at position {self.tok.pos}: expected {expected}, found {found} in "
            f"{self.text!r}."
        )

    def expect_end(self) -> None:
        if self.tok.kind != "end":
            raise self.fail("AND, OR or the end of the filter")

    # --- grammar --------------------------------------------------------------------------------------

    def parse_or(self, depth: int) -> str:
        if depth > MAX_DEPTH:
            raise self.fail(f"at most {MAX_DEPTH} nested parentheses or NOTs")
        parts = [self.parse_and(depth)]
        while self.keyword("OR"):
            parts.append(self.parse_and(depth))
        return parts[0] if len(parts) == 1 else "(" + " OR ".join(parts) + ")"

    def parse_and(self, depth: int) -> str:
        parts = [self.parse_not(depth)]
        while self.keyword("AND"):
            parts.append(self.parse_not(depth))
        return parts[0] if len(parts) == 1 else "(" + " AND ".join(parts) + ")"

    def parse_not(self, depth: int) -> str:
        if self.keyword("NOT"):
            if depth > MAX_DEPTH:
                raise self.fail(f"at most {MAX_DEPTH} nested parentheses or NOTs")
            return f"(NOT {self.parse_not(depth + 1)})"
        return self.parse_atom(depth)

    def parse_atom(self, depth: int) -> str:
        if self.tok.kind == "punct" and self.tok.text == "(":
            self.i += 1
            inner = self.parse_or(depth + 1)
            if not (self.tok.kind == "punct" and self.tok.text == ")"):
                raise self.fail("')'")
            self.i += 1
            return f"({inner})"
        if self.tok.kind != "word" or self.tok.text.upper() in _KEYWORDS:
            raise self.fail(f"a column ({', '.join(COLUMNS)}) or '('")
        name = self.tok.text.lower()
        if name not in COLUMNS:
            raise UsageError(
                f"The filter names an unknown column '{self.tok.text}' at position {self.tok.pos}; the columns "
                f"are {', '.join(COLUMNS)}."
            )
        self.i += 1
        expr, kind = COLUMNS[name]
        if self.tok.kind == "op":
            op = _COMPARISONS[self.tok.text]
            self.i += 1
            self.params.append(self.value(name, kind))
            return f"{expr} {op} ?"
        if self.keyword("IS"):
            negate = self.keyword("NOT")
            if not self.keyword("NULL"):
                raise self.fail("NULL")
            return f"{expr} IS {'NOT ' if negate else ''}NULL"
        negate = self.keyword("NOT")
        if self.keyword("LIKE"):
            if self.tok.kind != "string":
                raise self.fail("a quoted pattern after LIKE")
            self.params.append(_unquote(self.tok.text))
            self.i += 1
            # the path's bytes are matched as text (SQLite reads a BLOB's bytes as UTF-8 for LIKE)
            target = "CAST(path AS TEXT)" if kind == "path" else expr
            return f"{target} {'NOT ' if negate else ''}LIKE ?"
        if self.keyword("IN"):
            if not (self.tok.kind == "punct" and self.tok.text == "("):
                raise self.fail("'(' after IN")
            self.i += 1
            count = 0
            while True:
                self.params.append(self.value(name, kind))
                count += 1
                if self.tok.kind == "punct" and self.tok.text == ",":
                    self.i += 1
                    continue
                if self.tok.kind == "punct" and self.tok.text == ")":
                    self.i += 1
                    break
                raise self.fail("',' or ')'")
            return f"{expr} {'NOT ' if negate else ''}IN ({', '.join('?' * count)})"
        raise self.fail("a comparison (=, !=, <, <=, >, >=), LIKE, IN or IS")

    def value(self, column: str, kind: Kind) -> Any:
        tok = self.tok
        if tok.kind == "number":
            if kind != "number":
                raise UsageError(
                    f"The filter compares '{column}' with the number {tok.text} at position {tok.pos}; "
                    f"'{column}' holds text: quote the value."
                )
            self.i += 1
            return float(tok.text) if any(c in tok.text for c in ".eE") else int(tok.text)
        if tok.kind == "string":
            if kind == "number":
                raise UsageError(
                    f"The filter compares '{column}' with the text {tok.text} at position {tok.pos}; "
                    f"'{column}' holds numbers."
                )
            self.i += 1
            text = _unquote(tok.text)
            return os.fsencode(text) if kind == "path" else text  # paths are stored as their bytes
        raise self.fail("a number or a quoted string")


def _unquote(token: str) -> str:
    quote = token[0]
    return token[1:-1].replace(quote * 2, quote)
