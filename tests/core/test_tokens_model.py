"""Token spec validation, the character tokenizer, and the tiny model's save/load round trip."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch

from maskgrpo import CharTokenizer, TinyConfig, TinyDiffusionLM, TokenSpec

# ---------------------------------------------------------------------------- TokenSpec


def test_token_spec_valid_and_image_extension() -> None:
    spec = TokenSpec(mask_id=2, eos_id=1, pad_id=1, vocab_size=20)  # pad may equal eos
    assert spec.special_ids == (2,)
    img = spec.with_image(image_offset=8, codebook_size=10, soi_id=3, eoi_id=4)
    assert (img.image_offset, img.codebook_size, img.soi_id, img.eoi_id) == (8, 10, 3, 4)
    assert img.mask_id == 2 and spec.image_offset is None  # a copy, the original unchanged


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(mask_id=1, eos_id=1, pad_id=0), "mask_id=1 equals"),
        (dict(mask_id=0, eos_id=1, pad_id=0), "mask_id=0 equals"),
        (dict(mask_id=20, eos_id=1, pad_id=0), "mask_id=20 is outside"),
        (dict(mask_id=-1, eos_id=1, pad_id=0), "mask_id=-1 is outside"),
        (dict(mask_id=2, eos_id=25, pad_id=0), "eos_id=25"),
        (dict(mask_id=2, eos_id=1, pad_id=0, vocab_size=0), "vocab_size"),
        (dict(mask_id=2, eos_id=1, pad_id=0, soi_id=30), "soi_id=30"),
        (dict(mask_id=2, eos_id=1, pad_id=0, image_offset=4), "together"),
        (dict(mask_id=2, eos_id=1, pad_id=0, image_offset=12, codebook_size=10), "do not fit"),
        (dict(mask_id=2, eos_id=1, pad_id=0, image_offset=-1, codebook_size=3), "do not fit"),
        (dict(mask_id=5, eos_id=1, pad_id=0, image_offset=4, codebook_size=8), "inside the image"),
    ],
)
def test_token_spec_validation_errors(kwargs: dict, match: str) -> None:
    kwargs.setdefault("vocab_size", 20)
    with pytest.raises(ValueError, match=match):
        TokenSpec(**kwargs)


def test_with_image_is_validated() -> None:
    spec = TokenSpec(mask_id=2, eos_id=1, pad_id=0, vocab_size=20)
    with pytest.raises(ValueError, match="inside the image"):
        spec.with_image(image_offset=0, codebook_size=10, soi_id=11, eoi_id=12)


def test_from_objects_reads_tokenizer_and_config() -> None:
    tok = SimpleNamespace(mask_token_id=7, eos_token_id=[3, 4], pad_token_id=None)
    cfg = SimpleNamespace(vocab_size=50, pad_token_id=9)
    spec = TokenSpec.from_objects(tok, cfg)
    assert (spec.mask_id, spec.eos_id, spec.pad_id, spec.vocab_size) == (7, 3, 9, 50)
    # pad falls back to eos; the first source that has an id wins; vocab from len()
    only = TokenSpec.from_objects(None, SimpleNamespace(mask_id=5, eos_id=1), vocab_size=8)
    assert (only.mask_id, only.pad_id, only.vocab_size) == (5, 1, 8)
    first = TokenSpec.from_objects(
        SimpleNamespace(mask_token_id=4, eos_token_id=1, vocab_size=10),
        SimpleNamespace(mask_token_id=6, eos_token_id=2, vocab_size=99),
    )
    assert (first.mask_id, first.eos_id, first.vocab_size) == (4, 1, 10)
    # bool is not an id
    with pytest.raises(ValueError, match="mask token"):
        TokenSpec.from_objects(SimpleNamespace(mask_token_id=True, eos_token_id=1), vocab_size=4)


def test_from_objects_errors() -> None:
    with pytest.raises(ValueError, match="mask token id"):
        TokenSpec.from_objects(SimpleNamespace(eos_token_id=1, vocab_size=10))
    with pytest.raises(ValueError, match="eos_token_id"):
        TokenSpec.from_objects(SimpleNamespace(mask_token_id=2, vocab_size=10))
    with pytest.raises(ValueError, match="vocab_size"):
        TokenSpec.from_objects(SimpleNamespace(mask_token_id=2, eos_token_id=1))
    with pytest.raises(ValueError, match="outside"):
        TokenSpec.from_objects(SimpleNamespace(mask_token_id=12, eos_token_id=1, vocab_size=10))


# -------------------------------------------------------------------------- tokenizer


def test_char_tokenizer_round_trip_and_ids(tokenizer: CharTokenizer) -> None:
    text = "12+34=46"
    ids = tokenizer.encode(text)
    assert ids == [4 + "0123456789+=".index(c) for c in text]
    assert tokenizer.decode(ids) == text
    assert tokenizer.batch_decode([ids, tokenizer.encode("0")]) == [text, "0"]
    spec = tokenizer.token_spec()
    assert (spec.pad_id, spec.eos_id, spec.mask_id) == (0, 1, 2)
    assert spec.vocab_size == len(tokenizer) == 16


def test_char_tokenizer_decode_rules(tokenizer: CharTokenizer) -> None:
    ids = tokenizer.encode("12") + [tokenizer.eos_token_id] + tokenizer.encode("3")
    assert tokenizer.decode(ids) == "12"  # stops at the first EOS
    assert tokenizer.decode(ids, stop_at_eos=False) == "123"
    noisy = [tokenizer.pad_token_id, tokenizer.mask_token_id, *tokenizer.encode("7")]
    assert tokenizer.decode(noisy) == "7"  # pad/mask/unk dropped


def test_char_tokenizer_unknown_characters(tokenizer: CharTokenizer) -> None:
    with pytest.raises(ValueError, match="'x'"):
        tokenizer.encode("1x")
    lenient = CharTokenizer("ab", strict=False)
    assert lenient.encode("azb") == [4, lenient.unk_token_id, 5]
    with pytest.raises(ValueError, match="repeated"):
        CharTokenizer("aba")


def test_char_tokenizer_save_load(tokenizer: CharTokenizer, tmp_path) -> None:
    tokenizer.save_pretrained(tmp_path)
    loaded = CharTokenizer.from_pretrained(tmp_path)
    assert loaded.vocab == tokenizer.vocab
    assert loaded.encode("9=9") == tokenizer.encode("9=9")


# ------------------------------------------------------------------------- tiny model


def test_tiny_model_save_load_round_trip(make_tiny, tmp_path) -> None:
    model = make_tiny(seed=3, std=0.2, dropout=0.1)
    ids = torch.randint(0, 16, (3, 10), generator=torch.Generator().manual_seed(0))
    model.save_pretrained(tmp_path / "ckpt")
    assert (tmp_path / "ckpt" / "model.safetensors").is_file()
    loaded = TinyDiffusionLM.from_pretrained(tmp_path / "ckpt").eval()
    assert loaded.config == model.config
    with torch.no_grad():
        assert torch.equal(loaded(ids).logits, model(ids).logits)
    other = make_tiny(seed=4, std=0.2)
    with torch.no_grad():
        assert not torch.equal(other(ids).logits, model(ids).logits)
    with pytest.raises(FileNotFoundError, match="config.json"):
        TinyDiffusionLM.from_pretrained(tmp_path / "missing")


def test_tiny_model_is_bidirectional_and_checks_length(make_tiny) -> None:
    model = make_tiny(seed=5, std=0.2, max_length=8)
    ids = torch.tensor([[4, 5, 6, 7, 8, 9]])
    changed = ids.clone()
    changed[0, -1] = 10
    with torch.no_grad():
        a, b = model(ids).logits, model(changed).logits
    assert a.shape == (1, 6, 16)
    assert not torch.allclose(a[0, 0], b[0, 0])  # position 0 sees the last token
    with pytest.raises(ValueError, match="max_length"):
        model(torch.zeros((1, 9), dtype=torch.long))


def test_tiny_config_validation() -> None:
    with pytest.raises(ValueError, match="divisible"):
        TinyConfig(vocab_size=10, dim=30, n_heads=4)
    with pytest.raises(ValueError, match="vocab_size"):
        TinyConfig(vocab_size=0)
    with pytest.raises(ValueError, match="positions='absolute' is not one of learned, rotary"):
        TinyConfig(vocab_size=10, positions="absolute")
    with pytest.raises(ValueError, match="even head width"):
        TinyConfig(vocab_size=10, dim=12, n_heads=4, positions="rotary")


def test_rotary_attention_scores_depend_on_the_offset_only(make_tiny) -> None:
    """RoPE: q(i) . k(j) is a function of i - j; learned positions leave q and k as they are."""
    block = make_tiny(seed=1, positions="rotary").blocks[0]
    gen = torch.Generator().manual_seed(0)
    q, k = torch.randn(2, 1, 2, 1, 16, generator=gen)  # one vector each, (B, H, N, D)
    q, k = q.expand(1, 2, 6, 16), k.expand(1, 2, 6, 16)  # the same vector at every position

    def scores(start: int) -> torch.Tensor:
        rq, rk = block.rotate(q, k, torch.arange(start, start + 6))
        return rq @ rk.transpose(-1, -2)  # (1, 2, 6, 6)

    here, shifted = scores(0), scores(11)
    torch.testing.assert_close(shifted, here, rtol=0, atol=1e-5)
    assert not torch.allclose(here[..., 0, 1], here[..., 0, 3])  # the offset does matter
    per_row, _ = block.rotate(q, k, torch.arange(6).expand(3, 6))  # (B, N): the cache's form
    once, _ = block.rotate(q, k, torch.arange(6))
    assert per_row.shape == (3, 2, 6, 16)
    torch.testing.assert_close(per_row, once.expand(3, 2, 6, 16), rtol=0, atol=0)
    learned = make_tiny(seed=1).blocks[0]
    assert learned.rotate(q, k, torch.arange(6))[0] is q


def test_rotary_tiny_model_saves_and_old_folders_load_as_learned(make_tiny, tmp_path) -> None:
    rotary = make_tiny(seed=3, std=0.2, positions="rotary")
    assert rotary.pos is None and "pos.weight" not in rotary.state_dict()
    ids = torch.randint(0, 16, (2, 9), generator=torch.Generator().manual_seed(0))
    rotary.save_pretrained(tmp_path / "rotary")
    loaded = TinyDiffusionLM.from_pretrained(tmp_path / "rotary").eval()
    assert loaded.config.positions == "rotary"
    with torch.no_grad():
        assert torch.equal(loaded(ids).logits, rotary(ids).logits)
    # a folder saved before the option existed has no "positions" in its config
    make_tiny(seed=3, std=0.2).save_pretrained(tmp_path / "old")
    config = json.loads((tmp_path / "old" / "config.json").read_text())
    del config["positions"], config["rope_theta"]
    (tmp_path / "old" / "config.json").write_text(json.dumps(config))
    assert TinyDiffusionLM.from_pretrained(tmp_path / "old").config.positions == "learned"
