"""The filter grammar: what it accepts, what it refuses (with the position), and that no user text ever
reaches SQL (hostile strings are values or parse errors, and the table survives them)."""

from __future__ import annotations

import sqlite3

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from alignsam.errors import AlignSamError, UsageError
from alignsam.index.filters import parse_filter

ROWS = [
    # id, path, size, mtime_ns, hash, width, height, caption, tags
    (1, b"/data/beach/a.jpg", 100, 1_700_000_000 * 10**9, "h1", 640, 480, "a dog on sand", '["dog"]'),
    (2, b"/data/city/b.jpg", 200, 1_600_000_000 * 10**9, "h2", 320, 240, None, None),
    (3, b"/data/beach/c.png", 300, 1_650_000_000 * 10**9, "h3", 1024, 768, "sunset; DROP TABLE images", '["sky"]'),
    (4, "/data/caf\udce9/d.png".encode("utf-8", "surrogateescape"), 400, 0, "h4", 512, 512, "it's", None),
]


@pytest.fixture()
def db():
    conn = sqlite3.connect(":memory:")
    conn.execute(
        "CREATE TABLE images (id INTEGER PRIMARY KEY, path BLOB, size INT, mtime_ns INT, hash TEXT, width INT, "
        "height INT, caption TEXT, tags TEXT)"
    )
    conn.executemany("INSERT INTO images VALUES (?,?,?,?,?,?,?,?,?)", ROWS)
    yield conn
    conn.close()


def ids(db, text: str) -> list[int]:
    where = parse_filter(text)
    return [r[0] for r in db.execute(f"SELECT id FROM images WHERE {where.sql} ORDER BY id", where.params)]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("width >= 512", [1, 3, 4]),
        ("width >= 512 AND path LIKE '%/beach/%'", [1, 3]),
        ("path LIKE '%/beach/%' OR height < 300", [1, 2, 3]),
        ("NOT (width >= 512) ", [2]),
        ("not width>=512 or size=400", [2, 4]),
        ("width IN (320, 1024)", [2, 3]),
        ("width NOT IN (320, 1024) AND id != 4", [1]),
        ("caption IS NULL", [2]),
        ("caption IS NOT NULL AND caption LIKE '%dog%'", [1]),
        ("caption = 'it''s'", [4]),
        ('caption = "sunset; DROP TABLE images"', [3]),
        ("path = '/data/city/b.jpg'", [2]),
        ("path = '/data/caf\udce9/d.png'", [4]),  # a name that is not UTF-8, as Python holds it
        ("path NOT LIKE '%.jpg'", [3, 4]),
        ("tags LIKE '%\"sky\"%'", [3]),
        ("mtime >= 1.65e9 AND mtime < 1700000001", [1, 3]),
        ("((width > 100) AND (height > 100)) AND size <= 200.5", [1, 2]),
        ("hash IN ('h1','h4')", [1, 4]),
    ],
)
def test_filters_select_what_they_say(db, text, expected):
    assert ids(db, text) == expected


@pytest.mark.parametrize(
    ("text", "position", "words"),
    [
        ("width >=", 9, "expected a number or a quoted string"),
        ("width >= 512 AND", 17, "expected a column"),
        ("width >= 512 width", 14, "expected AND, OR or the end"),
        ("(width >= 512", 14, "expected ')'"),
        ("width = 'a'", 9, "holds numbers"),
        ("caption = 5", 11, "holds text"),
        ("colour = 'red'", 1, "unknown column 'colour'"),
        ("path = ''; DROP TABLE images", 10, "unexpected ';'"),
        ("1 = 1", 1, "expected a column"),
        ("width >= 512 -- comment", 14, "unexpected '-'"),
        ("id = 1 UNION SELECT path FROM images", 8, "expected AND, OR or the end"),
        ("caption LIKE 5", 14, "a quoted pattern"),
        ("width IN 5", 10, "'(' after IN"),
        ("caption = 'unterminated", 11, "unexpected"),
        ("sqlite_master = 1", 1, "unknown column"),
    ],
)
def test_a_filter_that_does_not_parse_is_refused_naming_the_position(text, position, words):
    with pytest.raises(UsageError) as info:
        parse_filter(text)
    message = str(info.value)
    assert f"position {position}" in message and words in message and "\n" not in message
    assert info.value.exit_code == 2


def test_values_are_parameters_never_sql(db):
    hostile = "x'); DROP TABLE images; --"
    where = parse_filter(f"caption = '{hostile.replace(chr(39), chr(39) * 2)}' OR path LIKE '%'' OR 1=1 --'")
    assert hostile in where.params and "DROP" not in where.sql and "1=1" not in where.sql
    assert set(where.sql) <= set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_()?=!<>., 0123456789/")
    db.execute(f"SELECT id FROM images WHERE {where.sql}", where.params).fetchall()
    assert db.execute("SELECT count(*) FROM images").fetchone()[0] == 4


def test_limits():
    with pytest.raises(UsageError, match="empty"):
        parse_filter("  ")
    with pytest.raises(UsageError, match="at most"):
        parse_filter("width > 1 AND " * 400 + "width > 1")
    with pytest.raises(UsageError, match="nested"):
        parse_filter("(" * 100 + "width > 1" + ")" * 100)
    with pytest.raises(UsageError, match="nested"):
        parse_filter("NOT " * 100 + "width > 1")


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("wdth pa()'\"=<>!,;-%*ANDORNOTLIKEIN0123456789.")), max_size=60))
def test_any_text_parses_or_is_refused_in_one_line(text):
    conn = sqlite3.connect(":memory:")
    conn.execute(
        "CREATE TABLE images (id INTEGER PRIMARY KEY, path BLOB, size INT, mtime_ns INT, hash TEXT, width INT, "
        "height INT, caption TEXT, tags TEXT)"
    )
    try:
        where = parse_filter(text)
    except AlignSamError as err:
        assert isinstance(err, UsageError) and "\n" not in str(err)
        return
    conn.execute(f"SELECT id FROM images WHERE {where.sql}", where.params).fetchall()  # valid SQL, always
