"""Vocabulary tokenizers for the built-in tiny models: one id per character or per word.

Ids ``0..3`` hold the special tokens in a fixed order (:data:`SPECIALS`), then one id per unit
of the vocabulary. The special ids are attributes (``mask_token_id`` ...) read by
:class:`TokenSpec`; nothing else hard-codes them.

- :class:`CharTokenizer`: one id per character of an alphabet, in the alphabet's order (the
  synthetic text tasks, the tiny model saved by ``maskgrpo sft``/``train``).
- :class:`WordTokenizer`: one id per whitespace-separated word, words sorted (the shapes world's
  prompts: about 8 tokens instead of about 40 characters, so a tiny text-to-image model spends
  its compute on the image tokens).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from .tokens import TokenSpec

__all__ = ["SPECIALS", "CharTokenizer", "VocabTokenizer", "WordTokenizer"]

SPECIALS = ("<pad>", "<eos>", "<mask>", "<unk>")

T = TypeVar("T", bound="VocabTokenizer")


class VocabTokenizer:
    """The specials, then one id per unit of ``units``; subclasses say how text splits into units.

    ``strict``: an unknown unit raises (else it maps to ``<unk>``). ``decode`` drops the
    specials and, when ``stop_at_eos`` (default: the class's ``stops_at_eos``), stops at EOS.
    """

    kind: ClassVar[str]  # "type" in tokenizer.json
    separator: ClassVar[str]  # joins decoded units
    stops_at_eos: ClassVar[bool]

    def __init__(self, units: Sequence[str], *, strict: bool = True) -> None:
        self.strict = strict
        self.vocab = list(SPECIALS) + list(units)
        self._index = {u: i for i, u in enumerate(self.vocab)}
        self.pad_token_id = self._index["<pad>"]
        self.eos_token_id = self._index["<eos>"]
        self.mask_token_id = self._index["<mask>"]
        self.unk_token_id = self._index["<unk>"]

    def split(self, text: str) -> list[str]:
        raise NotImplementedError

    def unknown(self, unit: str) -> str:
        """The error message for a unit outside the vocabulary."""
        raise NotImplementedError

    def __len__(self) -> int:
        return len(self.vocab)

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def token_spec(self) -> TokenSpec:
        return TokenSpec.from_objects(self)

    def encode(self, text: str) -> list[int]:
        out = []
        for unit in self.split(text):
            idx = self._index.get(unit) if unit not in SPECIALS else None
            if idx is None:
                if self.strict:
                    raise ValueError(self.unknown(unit))
                idx = self.unk_token_id
            out.append(idx)
        return out

    def decode(self, ids: Sequence[int], *, stop_at_eos: bool | None = None) -> str:
        """Text of ``ids`` without the specials; stops at the first EOS if ``stop_at_eos``."""
        stop = self.stops_at_eos if stop_at_eos is None else stop_at_eos
        units = []
        for i in ids:
            if i == self.eos_token_id and stop:
                break
            if i >= len(SPECIALS):
                units.append(self.vocab[i])
        return self.separator.join(units)

    def batch_decode(self, rows: list[list[int]]) -> list[str]:
        return [self.decode(r) for r in rows]

    def config(self) -> dict[str, Any]:
        """What ``tokenizer.json`` holds besides the type (enough to rebuild the same ids)."""
        raise NotImplementedError

    def save_pretrained(self, path: str | Path) -> None:
        out = Path(path)
        out.mkdir(parents=True, exist_ok=True)
        (out / "tokenizer.json").write_text(json.dumps({"type": self.kind, **self.config()}))

    @classmethod
    def from_pretrained(cls: type[T], path: str | Path) -> T:
        data = json.loads((Path(path) / "tokenizer.json").read_text())
        if data.get("type") != cls.kind:
            raise ValueError(
                f"{path}/tokenizer.json is not a maskgrpo {cls.__name__} (type "
                f"{data.get('type')!r}, expected {cls.kind!r})"
            )
        return cls.from_config(data)

    @classmethod
    def from_config(cls: type[T], data: dict[str, Any]) -> T:
        raise NotImplementedError


class CharTokenizer(VocabTokenizer):
    """Maps each character of ``alphabet`` to one id, in the alphabet's order."""

    kind = "char"
    separator = ""
    stops_at_eos = True

    def __init__(self, alphabet: str, *, strict: bool = True) -> None:
        chars = list(dict.fromkeys(alphabet))
        if len(chars) != len(alphabet):
            raise ValueError(f"alphabet {alphabet!r} has repeated characters")
        self.alphabet = alphabet
        super().__init__(chars, strict=strict)

    def split(self, text: str) -> list[str]:
        return list(text)

    def unknown(self, unit: str) -> str:
        return f"character {unit!r} is not in the tokenizer's alphabet"

    def config(self) -> dict[str, Any]:
        return {"alphabet": self.alphabet}

    @classmethod
    def from_config(cls, data: dict[str, Any]) -> CharTokenizer:
        return cls(data["alphabet"])


class WordTokenizer(VocabTokenizer):
    """Whitespace-split words of a fixed vocabulary: the distinct ``words``, sorted."""

    kind = "word"
    separator = " "
    stops_at_eos = False

    def __init__(self, words: Iterable[str], *, strict: bool = True) -> None:
        vocab = sorted(set(words) - set(SPECIALS))
        if not vocab:
            raise ValueError("WordTokenizer needs at least one word; pass the prompts' words")
        super().__init__(vocab, strict=strict)

    @classmethod
    def from_prompts(cls, prompts: Iterable[str]) -> WordTokenizer:
        return cls(w for p in prompts for w in p.split())

    def split(self, text: str) -> list[str]:
        return text.split()

    def unknown(self, unit: str) -> str:
        return (
            f"word {unit!r} is not in the tokenizer's vocabulary; build the tokenizer from "
            "prompts that include it"
        )

    def config(self) -> dict[str, Any]:
        return {"words": self.vocab[len(SPECIALS) :]}

    @classmethod
    def from_config(cls, data: dict[str, Any]) -> WordTokenizer:
        return cls(data["words"])
