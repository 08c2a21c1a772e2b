"""A WordPiece vocabulary learnt from the training captions (ALIGN built its own 100k vocabulary).

Learnt as the `tokenizers` library's WordPiece trainer learns it (BERT's uncased normaliser and
pre-tokeniser, the characters seen, then byte-pair merges of the most frequent neighbouring pieces, `##`
marking a piece inside a word), but deterministically: that trainer breaks ties between equally frequent
pairs, and orders the characters, by a hash map's per-process order, so two identical runs learnt different
vocabularies. Here every choice is by (-count, pieces): the same captions always give the same vocabulary,
ids included. The result is the standard `AlignTokenizer`, which saves and loads like any BERT tokenizer
(`vocab.txt`, `tokenizer.json`).
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Iterable
from itertools import pairwise

from alignsam.align.processing import AlignTokenizer
from alignsam.errors import InputError

SPECIAL_TOKENS: tuple[str, ...] = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")  # [PAD] = 0, as BERT's
PREFIX = "##"


def train_wordpiece(texts: Iterable[str], vocab_size: int, *, min_frequency: int = 2) -> AlignTokenizer:
    """An uncased WordPiece `AlignTokenizer` trained on `texts`, with at most `vocab_size` tokens.

    The vocabulary holds the special tokens (ids 0-4), every character seen (sorted), and the most frequent
    merges seen at least `min_frequency` times, in the order learnt. Deterministic: see the module docstring.
    """
    if vocab_size < len(SPECIAL_TOKENS) + 26:
        raise InputError(f"vocab_size={vocab_size} is too small for a WordPiece vocabulary; use at least 100.")
    words = count_words(texts)
    if not words:
        raise InputError("No captions to train a vocabulary on.")
    vocab = learn_pieces(words, vocab_size, min_frequency)
    return AlignTokenizer.from_vocab({token: i for i, token in enumerate(vocab)})


def count_words(texts: Iterable[str]) -> Counter[str]:
    """How often each word occurs, words as BERT's uncased normaliser and pre-tokeniser split them."""
    from tokenizers import normalizers, pre_tokenizers

    normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True, lowercase=True)
    splitter = pre_tokenizers.BertPreTokenizer()
    words: Counter[str] = Counter()
    seen = 0
    for text in texts:
        seen += 1
        words.update(word for word, _ in splitter.pre_tokenize_str(normalizer.normalize_str(text)))
    if seen and not words:
        words[""] = 0  # captions, all empty: a vocabulary of the special tokens
    return Counter({w: n for w, n in words.items() if w})


def learn_pieces(words: Counter[str], vocab_size: int, min_frequency: int) -> list[str]:
    """The vocabulary, in id order: special tokens, the sorted characters (each also as `##c` where it
    occurs inside a word), then merges of the pair with the highest count (ties: the smaller pair of pieces)
    until `vocab_size` tokens or no pair occurs `min_frequency` times."""
    entries = sorted(words.items())  # a fixed order of words, whatever order the counter holds them in
    pieces = [[w[0]] + [PREFIX + ch for ch in w[1:]] for w, _ in entries]
    counts = [n for _, n in entries]
    vocab = list(SPECIAL_TOKENS) + sorted({p for word in pieces for p in word} - set(SPECIAL_TOKENS))
    known = set(vocab)
    pair_count: Counter[tuple[str, str]] = Counter()
    where: dict[tuple[str, str], set[int]] = {}
    for i, word in enumerate(pieces):
        for pair in pairwise(word):
            pair_count[pair] += counts[i]
            where.setdefault(pair, set()).add(i)
    heap = [(-n, pair) for pair, n in pair_count.items()]
    heapq.heapify(heap)
    while len(vocab) < vocab_size and heap:
        negative, pair = heapq.heappop(heap)
        if pair_count.get(pair, 0) != -negative:  # a stale entry: its count changed since it was pushed
            continue
        if -negative < min_frequency:
            break
        merged = pair[0] + pair[1].removeprefix(PREFIX)
        if merged not in known:
            vocab.append(merged)
            known.add(merged)
        changed: set[tuple[str, str]] = set()
        for i in sorted(where.pop(pair, ())):
            word, n = pieces[i], counts[i]
            for old in pairwise(word):
                pair_count[old] -= n
                changed.add(old)
            joined: list[str] = []
            k = 0
            while k < len(word):
                if k + 1 < len(word) and (word[k], word[k + 1]) == pair:
                    joined.append(merged)
                    k += 2
                else:
                    joined.append(word[k])
                    k += 1
            pieces[i] = joined
            for new in pairwise(joined):
                pair_count[new] += n
                where.setdefault(new, set()).add(i)
                changed.add(new)
        pair_count.pop(pair, None)
        for p in changed:
            if pair_count.get(p, 0) > 0 and p != pair:
                heapq.heappush(heap, (-pair_count[p], p))
    return vocab
