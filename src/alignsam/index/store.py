"""The index's metadata and vectors: one SQLite database in write-ahead-log mode.

Each row of `images` is one embedded file: its path (the file name's bytes, so that names that are not UTF-8
survive), size, modification time, content hash, pixel size, caption, tags and the generation that wrote it;
its L2-normalised float32 vector (`D` floats, a BLOB) is the row of the same id in `vectors`, a table of its
own so that a filter scans compact metadata pages, not pages full of vectors. A changed file is a new row (a
new id; ids are never reused) and the old id goes to `removed`, so an approximate index built earlier never
returns a stale vector: its hits are checked against the live rows. `info` holds the model, the dimension
and the counters (`generation`, the published ANN file and the generation it covers).

Every batch is one transaction (rows, removals and the new generation together); `synchronous=FULL` makes a
commit durable, so a process killed at any moment leaves the last committed batch and nothing of the next.
Readers read in a transaction of their own and see one generation, never half of one (WAL).
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from alignsam.errors import InputError, OutputError

FORMAT = 1
DB_NAME = "index.sqlite"
ENGINE = "alignsam-index/1 (SQLite WAL + usearch HNSW)"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS info (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS images (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    path BLOB NOT NULL UNIQUE,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    hash TEXT NOT NULL,
    width INTEGER,
    height INTEGER,
    caption TEXT,
    tags TEXT,
    gen INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS images_gen ON images (gen);
CREATE TABLE IF NOT EXISTS vectors (id INTEGER PRIMARY KEY, vector BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS removed (id INTEGER PRIMARY KEY, gen INTEGER NOT NULL);
"""

META_COLUMNS = ("id", "path", "size", "mtime_ns", "hash", "width", "height", "caption", "tags")


def display_path(raw: bytes) -> str:
    """A stored path as text: the file name's bytes decoded as the OS does (`os.fsdecode`), so that
    `os.fsencode` gives the bytes back, even for names that are not UTF-8."""
    return os.fsdecode(raw)


def printable(path: str) -> str:
    """A path safe to print or put in JSON: bytes that are not UTF-8 as `\\xNN`."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def connect(folder: Path, *, create: bool = False) -> sqlite3.Connection:
    """The index database of `folder`; an `InputError` in one line for a folder that is not an index or a
    database file that is not one (corrupt). `create` makes an empty index."""
    db = folder / DB_NAME
    fresh = not db.is_file() or db.stat().st_size == 0  # 0 bytes: a create killed before its first commit
    if fresh and not create:
        raise InputError(f"'{folder}' is not an image index (no {DB_NAME}); build it with `alignsam index`.")
    if not fresh and _head(db) != b"SQLite format 3\x00":
        # checked before SQLite opens it: a file that is not a database must not be touched, let alone rewritten
        raise InputError(f"'{db}' is not an SQLite database (corrupt index file); the index was left untouched.")
    folder.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(db, isolation_level=None, timeout=60, check_same_thread=False)
    try:
        if fresh:
            conn.execute("PRAGMA journal_mode=WAL")
            with transaction(conn):
                _create(conn)
        check_integrity_light(conn, db)  # before anything is written to a database found here
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("SELECT count(*) FROM images").fetchone()
    except sqlite3.DatabaseError as err:
        conn.close()
        raise InputError(f"'{db}' could not be read ({err}); the index is corrupt and was left untouched.") from err
    except InputError:
        conn.close()
        raise
    return conn


def _head(path: Path) -> bytes:
    with open(path, "rb") as f:
        return f.read(16)


def _create(conn: sqlite3.Connection) -> None:
    for statement in _SCHEMA.strip().split(";"):
        if statement.strip():
            conn.execute(statement)
    conn.execute("INSERT OR IGNORE INTO info VALUES ('format', ?)", (str(FORMAT),))
    conn.execute("INSERT OR IGNORE INTO info VALUES ('generation', '0')")
    conn.execute("INSERT OR IGNORE INTO info VALUES ('engine', ?)", (ENGINE,))


def check_integrity_light(conn: sqlite3.Connection, db: Path) -> None:
    """Refuse a database of another format or another program (cheap checks; a full `integrity_check`
    would read every page)."""
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    if not {"info", "images", "vectors", "removed"} <= tables:
        raise InputError(f"'{db}' is an SQLite database but not an alignsam image index.")
    fmt = conn.execute("SELECT value FROM info WHERE key='format'").fetchone()
    if fmt is None or fmt[0] != str(FORMAT):
        raise InputError(f"'{db}' has index format {fmt[0] if fmt else '?'}; this alignsam reads format {FORMAT}.")


@contextlib.contextmanager
def transaction(conn: sqlite3.Connection, write: bool = True) -> Iterator[sqlite3.Connection]:
    """One transaction: `BEGIN IMMEDIATE` for a writer (takes the write lock now, so a batch never fails
    half-way for a lock), a deferred one for a reader (a consistent snapshot in WAL mode). SQLite's own
    failures (a full disk, a damaged page) become one-line errors; the transaction is rolled back."""
    try:
        conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            raise
    except sqlite3.DatabaseError as err:
        if write:
            raise OutputError(f"The index could not be written ({err}); what was committed before is kept.") from err
        raise InputError(f"The index could not be read ({err}).") from err


def read_info(conn: sqlite3.Connection) -> dict[str, Any]:
    """The `info` table: strings, with `dim`, `generation`, `ann_generation`, `ann_count` as ints."""
    info: dict[str, Any] = dict(conn.execute("SELECT key, value FROM info").fetchall())
    for key in ("dim", "generation", "ann_generation", "ann_count", "format"):
        if key in info:
            info[key] = int(info[key])
    return info


def set_info(conn: sqlite3.Connection, **values: Any) -> None:
    for key, value in values.items():
        conn.execute("INSERT OR REPLACE INTO info VALUES (?, ?)", (key, str(value)))


def vectors_of(rows: Sequence[tuple[Any, ...]], dim: int, column: int = -1) -> np.ndarray:
    """The `N x D` float32 matrix of the vector BLOBs in `rows[i][column]`."""
    if not rows:
        return np.empty((0, dim), np.float32)
    flat = np.frombuffer(b"".join(r[column] for r in rows), dtype=np.float32)
    if flat.size != len(rows) * dim:
        raise InputError(f"The index holds vectors that are not {dim}-dimensional; it is corrupt.")
    return flat.reshape(len(rows), dim)


def metadata(row: Sequence[Any]) -> dict[str, Any]:
    """A result's metadata from a row of `META_COLUMNS`."""
    out = dict(zip(META_COLUMNS, row, strict=True))
    out["path"] = display_path(out["path"])
    out["mtime"] = out.pop("mtime_ns") / 1e9
    out["tags"] = json.loads(out["tags"]) if out["tags"] else []
    return out
