"""A word-level tokenizer for the shapes world's prompts (GenEval phrasing, a few dozen words).

Same interface as :class:`maskgrpo.tokenizer.CharTokenizer` (special ids as attributes, read by
:class:`~maskgrpo.tokens.TokenSpec`), but one id per word, so a prompt is about 8 tokens instead
of about 40 characters: the tiny text-to-image model then spends its compute on image tokens.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["WordTokenizer"]

_SPECIALS = ("<pad>", "<eos>", "<mask>", "<unk>")


class WordTokenizer:
    """Whitespace-split words of a fixed vocabulary; specials first, then the sorted words."""

    def __init__(self, words: Iterable[str]) -> None:
        vocab = sorted(set(words) - set(_SPECIALS))
        if not vocab:
            raise ValueError("WordTokenizer needs at least one word; pass the prompts' words")
        self.vocab = list(_SPECIALS) + vocab
        self._index = {w: i for i, w in enumerate(self.vocab)}
        self.pad_token_id = self._index["<pad>"]
        self.eos_token_id = self._index["<eos>"]
        self.mask_token_id = self._index["<mask>"]
        self.unk_token_id = self._index["<unk>"]

    @classmethod
    def from_prompts(cls, prompts: Iterable[str]) -> WordTokenizer:
        return cls(w for p in prompts for w in p.split())

    def __len__(self) -> int:
        return len(self.vocab)

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def encode(self, text: str) -> list[int]:
        out = []
        for word in text.split():
            if word not in self._index or word in _SPECIALS:
                raise ValueError(
                    f"word {word!r} is not in the tokenizer's vocabulary; build the tokenizer "
                    "from prompts that include it"
                )
            out.append(self._index[word])
        return out

    def decode(self, ids: list[int]) -> str:
        return " ".join(self.vocab[i] for i in ids if i >= len(_SPECIALS))
