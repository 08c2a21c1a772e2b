"""Texts far longer than the 64 tokens kept: the same tokens as tokenising the whole text, bounded work.

The tokenizer used to tokenise a whole text before truncating it (a 60 MB text took 11 GB); now it reads a
prefix that grows until it holds enough tokens of complete words. Memory is checked in a subprocess with an
address-space limit 600 MB above what it holds after loading (the old code needs ~1.5 GB for the 8 MB text).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from alignsam.align import AlignTokenizer
from alignsam.align.processing import max_text_chars

from .conftest import write_hub_processor

PIECES = ["word", "Café", "東京", " ", "  ", "\t", "\n", "!!", ",", "supercalifragilistic", "\u200b", "😀", "x" * 120]


@pytest.fixture(scope="module")
def tokenizers(tmp_path_factory):
    hub = write_hub_processor(tmp_path_factory.mktemp("hub"))
    return [AlignTokenizer.from_pretrained("demo"), AlignTokenizer.from_pretrained(hub)]


def _full(tok: AlignTokenizer, text: str, limit: int) -> list[int]:
    return list(tok._engine(limit).encode(text).ids)


@settings(max_examples=40, deadline=None)
@given(
    pieces=st.lists(st.sampled_from(PIECES), min_size=1, max_size=30),
    lead=st.integers(0, 9000),
    repeat=st.integers(1, 800),
    limit=st.sampled_from([2, 16, 64, 77]),
)
def test_long_text_tokens_equal_whole_text(tokenizers, pieces, lead, repeat, limit):
    text = " " * lead + "".join(pieces) * repeat
    for tok in tokenizers:
        assert tok.token_ids([text, "a cat"], limit)[0] == _full(tok, text, limit)


@pytest.mark.parametrize(
    "text",
    [
        "caption words here. " * 50_000,
        "a" * 300_000,  # one word, no space to cut at
        "東京タワー" * 60_000,
        " " * 20_000 + "late start " * 1000,
        "\x00\x01\x02 " * 30_000 + "words at last",
    ],
)
def test_shapes_of_long_texts(tokenizers, text):
    for tok in tokenizers:
        assert tok.token_ids([text])[0] == _full(tok, text, 64)
        batch = tok([text, "short"], return_tensors="np")
        assert batch["input_ids"].shape == (2, 64)


def test_reads_no_further_than_the_bound(tokenizers):
    """Megabytes of whitespace before the words: only `max_text_chars` characters are read."""
    tok = tokenizers[0]
    text = " " * (max_text_chars(64) + 10) + "hidden words"
    assert tok.token_ids([text])[0] == [tok._tokenizer.token_to_id("[CLS]"), tok._tokenizer.token_to_id("[SEP]")]


SCRIPT = textwrap.dedent(
    """
    import json, resource, sys, time
    from alignsam.align import AlignTokenizer
    from alignsam.tools import Encoder
    tok = AlignTokenizer.from_pretrained("demo")
    enc = Encoder.from_pretrained("demo", device="cpu")
    tok.token_ids(["warm up"])
    enc.encode_texts(["warm up"])
    vm = int(next(l for l in open("/proc/self/status") if l.startswith("VmSize")).split()[1]) * 1024
    resource.setrlimit(resource.RLIMIT_AS, (vm + 600 * 2**20, resource.RLIM_INFINITY))
    text = "a caption of many words, and some punctuation! " * (8 * 2**20 // 48)
    start = time.perf_counter()
    ids = tok.token_ids([text])[0]
    vectors = enc.encode_texts([text, "short"])
    print(json.dumps([len(ids), list(vectors.shape), time.perf_counter() - start]))
    """
)


def test_eight_megabyte_text_bounded_memory_and_time():
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    count, shape, seconds = json.loads(out.stdout.strip().splitlines()[-1])
    assert count == 64 and shape[0] == 2
    assert seconds < 10.0, seconds  # milliseconds of work; the whole text took ~10 s and gigabytes
