"""A WordPiece vocabulary learnt from the training captions (ALIGN built its own 100k vocabulary).

Uses the `tokenizers` library's WordPiece trainer with BERT's uncased normaliser and pre-tokeniser, then
builds the standard `AlignTokenizer` from the learnt vocabulary, so the result saves and loads like any
BERT tokenizer (`vocab.txt`, `tokenizer.json`).
"""

from __future__ import annotations

from collections.abc import Iterable

from alignsam.align.processing import AlignTokenizer
from alignsam.errors import InputError

SPECIAL_TOKENS: tuple[str, ...] = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")  # [PAD] = 0, as BERT's


def train_wordpiece(texts: Iterable[str], vocab_size: int, *, min_frequency: int = 2) -> AlignTokenizer:
    """An uncased WordPiece `AlignTokenizer` trained on `texts`, with at most `vocab_size` tokens.

    The vocabulary holds the special tokens (ids 0-4), every character seen, and the most useful merges.
    """
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

    if vocab_size < len(SPECIAL_TOKENS) + 26:
        raise InputError(f"vocab_size={vocab_size} is too small for a WordPiece vocabulary; use at least 100.")
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True, lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(
        vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=list(SPECIAL_TOKENS), show_progress=False
    )
    seen = 0

    def counted() -> Iterable[str]:
        nonlocal seen
        for text in texts:
            seen += 1
            yield text

    tok.train_from_iterator(counted(), trainer=trainer)
    if seen == 0:
        raise InputError("No captions to train a vocabulary on.")
    return AlignTokenizer.from_vocab(tok.get_vocab())
