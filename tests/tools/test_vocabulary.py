"""The packaged tag vocabulary (`alignsam/tools/tags.txt`) and the tag-file readers."""

from __future__ import annotations

import re
import subprocess
import sys
from importlib import resources
from pathlib import Path

import pytest

from alignsam.errors import InputError
from alignsam.tools.vocabulary import TAG_FILE, load_tags, read_tag_file, tag_groups


def _singular(word: str) -> str:
    """A deliberately simple plural rule: enough to catch "dog"/"dogs", "box"/"boxes", "berry"/"berries"."""
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if word.endswith(("ches", "shes", "sses", "xes", "zes")):
        return word[:-2]
    if word.endswith("s") and not word.endswith("ss"):
        return word[:-1]
    return word


def _key(tag: str) -> str:
    """Tags that differ only by case, spacing, hyphens or a plural share a key."""
    return "".join(_singular(word) for word in re.split(r"[\s\-]+", tag.lower()) if word)


@pytest.fixture(scope="module")
def tags() -> list[str]:
    return load_tags()


@pytest.fixture(scope="module")
def groups() -> dict[str, list[str]]:
    return tag_groups()


def test_packaged_file_is_utf8_and_parses(groups: dict[str, list[str]]) -> None:
    raw = resources.files("alignsam.tools").joinpath(TAG_FILE).read_bytes()
    text = raw.decode("utf-8")
    assert not text.startswith("\ufeff")
    assert text.endswith("\n")
    tag_lines = [line for line in text.splitlines() if line.strip() and not line.startswith("#")]
    assert tag_lines == [line.strip() for line in tag_lines], "no stray whitespace around tags"
    assert sum(len(v) for v in groups.values()) == len(tag_lines)


def test_at_least_3000_unique_tags(tags: list[str]) -> None:
    assert len(tags) >= 3000
    assert len(set(tags)) == len(tags)


def test_tags_are_lowercase_plain_and_short(tags: list[str]) -> None:
    for tag in tags:
        assert tag == tag.lower(), tag
        assert re.fullmatch(r"[a-z0-9][a-z0-9 \-]*[a-z0-9]|[a-z0-9]", tag), tag
        assert 1 <= len(tag.split()) <= 3, tag
        assert len(tag) <= 40, tag


def test_no_near_duplicates(tags: list[str]) -> None:
    first: dict[str, str] = {}
    clashes = []
    for tag in tags:
        key = _key(tag)
        if key in first:
            clashes.append((first[key], tag))
        else:
            first[key] = tag
    assert not clashes


def test_groups(groups: dict[str, list[str]], tags: list[str]) -> None:
    assert len(groups) >= 10
    for name, members in groups.items():
        assert members, name
        assert re.fullmatch(r"[a-z][a-z0-9\-]*", name), name
    assert [t for members in groups.values() for t in members] == tags
    for expected in ("animals", "food", "vehicles", "colours", "weather", "photography"):
        assert expected in groups


def test_load_tags_by_group(groups: dict[str, list[str]], tags: list[str]) -> None:
    animals = load_tags(["animals"])
    assert animals == groups["animals"]
    assert set(animals) < set(tags)
    # Case-insensitive, repeated names count once, result in file order whatever the order asked.
    both = load_tags(["Food", "animals", "ANIMALS"])
    assert both == groups["animals"] + groups["food"]
    assert load_tags("weather") == groups["weather"]


def test_load_tags_unknown_group_names_the_known_ones() -> None:
    with pytest.raises(InputError) as info:
        load_tags(["animals", "spaceships"])
    message = str(info.value)
    assert "spaceships" in message
    assert "animals" in message and "food" in message
    with pytest.raises(InputError):
        load_tags([])


def test_results_are_copies() -> None:
    load_tags().append("not a tag")
    tag_groups()["animals"].clear()
    assert "not a tag" not in load_tags()
    assert load_tags(["animals"])


@pytest.mark.parametrize(
    "tag", ["dog", "cat", "car", "beach", "mountain", "pizza", "bicycle", "sunset", "kitchen", "red"]
)
def test_common_tags_present(tags: list[str], tag: str) -> None:
    assert tag in tags


def test_no_sensitive_attribute_tags(tags: list[str]) -> None:
    # A smoke test only: the vocabulary names visible things, never who someone is ("race car" is fine).
    words = {word for tag in tags for word in tag.split()}
    banned = {"ethnicity", "racial", "religion", "religious", "gay", "lesbian", "disabled", "disability", "disease"}
    assert not words & (banned | {"illness", "sick", "ugly", "fat", "obese"})


def test_read_tag_file(tmp_path: Path) -> None:
    path = tmp_path / "vocab.txt"
    path.write_text(
        "# my tags\n\n  dog  \ncat\n# another comment\n\nred   car\ndog\n\tcat\t\nhot dog\n",
        encoding="utf-8",
    )
    assert read_tag_file(path) == ["dog", "cat", "red car", "hot dog"]
    assert read_tag_file(str(path)) == ["dog", "cat", "red car", "hot dog"]


def test_read_tag_file_bom_and_crlf(tmp_path: Path) -> None:
    path = tmp_path / "vocab.txt"
    path.write_bytes("\ufeffcafé\r\nbeach\r\n".encode())
    assert read_tag_file(path) == ["café", "beach"]


def test_read_tag_file_empty(tmp_path: Path) -> None:
    path = tmp_path / "empty.txt"
    path.write_text("# only comments\n\n   \n", encoding="utf-8")
    with pytest.raises(InputError, match="no tags") as info:
        read_tag_file(path)
    assert str(path) in str(info.value)
    path.write_text("", encoding="utf-8")
    with pytest.raises(InputError, match="no tags"):
        read_tag_file(path)


def test_read_tag_file_missing_or_unreadable(tmp_path: Path) -> None:
    missing = tmp_path / "nope.txt"
    with pytest.raises(InputError) as info:
        read_tag_file(missing)
    assert str(missing) in str(info.value)
    with pytest.raises(InputError) as info:
        read_tag_file(tmp_path)  # a folder, not a file
    assert str(tmp_path) in str(info.value)
    binary = tmp_path / "binary.txt"
    binary.write_bytes(b"\xff\xfe\x00dog")
    with pytest.raises(InputError, match="UTF-8"):
        read_tag_file(binary)


def test_packaged_file_reads_as_a_user_file() -> None:
    with resources.as_file(resources.files("alignsam.tools").joinpath(TAG_FILE)) as path:
        assert read_tag_file(path) == load_tags()


def test_import_is_light() -> None:
    code = "import sys, alignsam.tools.vocabulary; assert 'torch' not in sys.modules and 'numpy' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
