"""A character-level tokenizer for the built-in tiny model and synthetic tasks.

Ids ``0..3`` hold the special tokens in a fixed order, then one id per character of the
alphabet. The special ids are attributes (``mask_token_id`` ...) read by :class:`TokenSpec`;
nothing else hard-codes them.
"""

from __future__ import annotations

import json
from pathlib import Path

from .tokens import TokenSpec

__all__ = ["CharTokenizer"]

_SPECIALS = ("<pad>", "<eos>", "<mask>", "<unk>")


class CharTokenizer:
    """Maps each character of ``alphabet`` to one id; unknown characters raise (or map to unk)."""

    def __init__(self, alphabet: str, *, strict: bool = True) -> None:
        chars = list(dict.fromkeys(alphabet))
        if len(chars) != len(alphabet):
            raise ValueError(f"alphabet {alphabet!r} has repeated characters")
        self.alphabet = alphabet
        self.strict = strict
        self.vocab = list(_SPECIALS) + chars
        self._index = {c: i for i, c in enumerate(self.vocab)}
        self.pad_token_id = self._index["<pad>"]
        self.eos_token_id = self._index["<eos>"]
        self.mask_token_id = self._index["<mask>"]
        self.unk_token_id = self._index["<unk>"]

    def __len__(self) -> int:
        return len(self.vocab)

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def token_spec(self) -> TokenSpec:
        return TokenSpec.from_objects(self)

    def encode(self, text: str) -> list[int]:
        out = []
        for ch in text:
            idx = self._index.get(ch) if len(ch) == 1 and ch not in _SPECIALS else None
            if idx is None:
                if self.strict:
                    raise ValueError(f"character {ch!r} is not in the tokenizer's alphabet")
                idx = self.unk_token_id
            out.append(idx)
        return out

    def decode(self, ids: list[int], *, stop_at_eos: bool = True) -> str:
        """Text of ``ids``; stops at the first EOS, drops pad/mask/unk."""
        chars = []
        for i in ids:
            if i == self.eos_token_id and stop_at_eos:
                break
            if i >= len(_SPECIALS):
                chars.append(self.vocab[i])
        return "".join(chars)

    def batch_decode(self, rows: list[list[int]]) -> list[str]:
        return [self.decode(r) for r in rows]

    def save_pretrained(self, path: str | Path) -> None:
        out = Path(path)
        out.mkdir(parents=True, exist_ok=True)
        (out / "tokenizer.json").write_text(json.dumps({"type": "char", "alphabet": self.alphabet}))

    @classmethod
    def from_pretrained(cls, path: str | Path) -> CharTokenizer:
        data = json.loads((Path(path) / "tokenizer.json").read_text())
        if data.get("type") != "char":
            raise ValueError(f"{path}/tokenizer.json is not a maskgrpo character tokenizer")
        return cls(data["alphabet"])
