"""The character and word tokenizers are one class: the ids of both stay what they were.

The expected ids below were produced by the separate ``CharTokenizer`` and ``WordTokenizer``
classes before they were merged; a model folder saved with the old ``tokenizer.json`` format
(``{"type": "char", "alphabet": ...}``) loads and encodes to the same ids and logits.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from maskgrpo import CharTokenizer, TinyConfig, TinyDiffusionLM
from maskgrpo.policy import load_policy, save_policy
from maskgrpo.tokenizer import SPECIALS, VocabTokenizer, WordTokenizer

PROMPTS = ["a photo of a red circle", "a photo of two blue squares"]


def test_char_ids_are_the_ones_before_the_merge() -> None:
    tok = CharTokenizer("0123456789+=?")
    assert tok.encode("12+7=?") == [5, 6, 14, 11, 15, 16]
    assert tok.decode([5, 6, 1, 7]) == "12" and tok.decode([5, 6, 1, 7], stop_at_eos=False) == "123"
    assert len(tok) == 17 and tok.vocab[: len(SPECIALS)] == list(SPECIALS)
    assert CharTokenizer("ab", strict=False).encode("abz") == [4, 5, 3]


def test_word_ids_are_the_ones_before_the_merge() -> None:
    tok = WordTokenizer.from_prompts(PROMPTS)
    assert tok.vocab == [*SPECIALS, "a", "blue", "circle", "of", "photo", "red", "squares", "two"]
    assert tok.encode("a red circle") == [4, 9, 6]
    assert tok.decode([0, 4, 1, 5, 2, 6]) == "a blue circle"  # word prompts: EOS does not stop
    assert len(tok) == 12
    with pytest.raises(ValueError, match="word 'green' is not in the tokenizer's vocabulary"):
        tok.encode("a green circle")
    with pytest.raises(ValueError, match="at least one word"):
        WordTokenizer(["<pad>"])


def test_both_kinds_save_and_load(tmp_path: Path) -> None:
    char, word = CharTokenizer("ab="), WordTokenizer.from_prompts(PROMPTS)
    for tok in (char, word):
        folder = tmp_path / tok.kind
        tok.save_pretrained(folder)
        loaded = type(tok).from_pretrained(folder)
        assert isinstance(loaded, VocabTokenizer) and loaded.vocab == tok.vocab
    assert json.loads((tmp_path / "char" / "tokenizer.json").read_text()) == {
        "type": "char",
        "alphabet": "ab=",
    }
    with pytest.raises(ValueError, match="not a maskgrpo CharTokenizer"):
        CharTokenizer.from_pretrained(tmp_path / "word")


def test_a_model_saved_before_the_merge_loads_with_the_same_ids(tmp_path: Path) -> None:
    alphabet = "0123456789+="
    folder = tmp_path / "saved"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = TinyDiffusionLM(TinyConfig(vocab_size=16, dim=16, n_layers=1, n_heads=2))
    model.save_pretrained(folder)
    (folder / "tokenizer.json").write_text(json.dumps({"type": "char", "alphabet": alphabet}))
    policy = load_policy(str(folder), alphabet=alphabet, max_length=16)
    ids = policy.tokenizer.encode("12+34=46")
    assert ids == [5, 6, 14, 7, 8, 15, 8, 10]  # as the pre-merge CharTokenizer encoded it
    assert (policy.spec.pad_id, policy.spec.eos_id, policy.spec.mask_id) == (0, 1, 2)
    x = torch.tensor([ids])
    with torch.no_grad():
        assert torch.equal(policy.model.eval()(x).logits, model.eval()(x).logits)
    save_policy(policy, tmp_path / "again")
    again = load_policy(str(tmp_path / "again"), alphabet=alphabet, max_length=16)
    assert again.tokenizer.encode("12+34=46") == ids
