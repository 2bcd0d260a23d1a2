"""The image modality: sequence layout from the spec, decode -> reward, guidance w=0."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from maskgrpo.modalities.base import SamplerSettings
from maskgrpo.modalities.image import ImageModality, ImageSampling, image_token_spec
from maskgrpo.models import TinyConfig, TinyDiffusionLM
from maskgrpo.rewards.geneval import make_geneval_reward
from maskgrpo.tasks.shapes.quantizer import fit_quantizer
from maskgrpo.tasks.shapes.world import WorldConfig, render, split_specs
from maskgrpo.tokenizer import WordTokenizer

WORLD = WorldConfig(image_size=24)
K = 64


@pytest.fixture(scope="module")
def parts() -> tuple[WordTokenizer, list[dict], object]:
    split = split_specs(0, WORLD)
    specs = split.train["colors"] + split.train["single_object"]
    tok = WordTokenizer.from_prompts(s["prompt"] for s in specs)
    return tok, specs, fit_quantizer(K, seed=0, config=WORLD, num_images=100)


def make_modality(parts: tuple, sampler: str = "emerge", w: float = 0.0) -> ImageModality:
    tok, _, quant = parts
    spec = image_token_spec(tok, K)
    return ImageModality(
        tok, spec, quant, prompt_tokens=8, num_tokens=36, sampling=ImageSampling(sampler, w)
    )


def tiny(mod: ImageModality, seed: int = 0) -> TinyDiffusionLM:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        cfg = TinyConfig(
            vocab_size=mod.spec.vocab_size,
            dim=32,
            n_layers=1,
            n_heads=2,
            max_length=mod.prompt_width + mod.num_tokens,
        )
        return TinyDiffusionLM(cfg).eval()


def test_spec_lays_out_a_unified_vocabulary(parts: tuple) -> None:
    tok = parts[0]
    spec = image_token_spec(tok, K)
    assert spec.soi_id == len(tok) and spec.eoi_id == len(tok) + 1
    assert spec.image_offset == len(tok) + 2 and spec.vocab_size == len(tok) + 2 + K
    assert spec.mask_id not in range(spec.image_offset, spec.image_offset + K)


def test_sequences_use_ids_from_the_spec(parts: tuple) -> None:
    mod = make_modality(parts)
    spec, specs = mod.spec, parts[1]
    ids = mod.encode_prompts([specs[0]["prompt"], ""], torch.device("cpu"))
    assert ids.shape == (2, mod.prompt_width)
    assert bool((ids[:, -1] == spec.soi_id).all())
    assert bool((ids[1, :-1] == spec.pad_id).all())  # the unconditional prompt
    settings = SamplerSettings(36, 4, 36, 1.0, "emerge")
    seqs = mod.rollout(tiny(mod), ids, settings, torch.Generator().manual_seed(0))
    assert seqs.shape == (2, mod.prompt_width + 36)
    assert torch.equal(seqs[:, : mod.prompt_width], ids)
    image = seqs[:, mod.prompt_width :]
    lo, hi = mod.vocab_range or (0, 0)
    assert bool(((image >= lo) & (image < hi)).all())
    assert spec.eoi_id not in seqs and spec.mask_id not in seqs


def test_decode_reward_round_trip(parts: tuple) -> None:
    mod = make_modality(parts)
    specs = parts[1][:6]
    rng = np.random.default_rng(0)
    images = np.stack([render(s, rng, WORLD) for s in specs])
    ids = mod.encode_images(images, torch.device("cpu"))  # (B, 36)
    decoded = mod.decode(ids)
    assert decoded[0].dtype == np.uint8 and decoded[0].shape == (24, 24, 3)
    assert np.array_equal(np.stack(decoded), parts[2].decode(parts[2].encode(images)).numpy())
    # decoded pixels re-encode to the same ids, so the reward of a rollout is a function of its ids
    again = mod.decode(mod.encode_images(np.stack(decoded), torch.device("cpu")))
    reward = make_geneval_reward(WORLD)
    prompts = [s["prompt"] for s in specs]
    scores = reward(prompts, decoded, spec=specs)
    assert scores == reward(prompts, again, spec=specs)
    assert all(r in (0.0, 1.0) for r in scores) and sum(r or 0.0 for r in scores) >= 1
    with pytest.raises(ValueError, match="image-code range"):
        mod.decode(ids.masked_fill(ids > 0, mod.spec.mask_id))


def test_guidance_zero_equals_conditional(parts: tuple) -> None:
    ids_prompts = [s["prompt"] for s in parts[1][:3]]
    settings = SamplerSettings(36, 6, 36, 1.0, "emerge")
    out = []
    for w in (0.0, 0.0):
        mod = make_modality(parts, w=w)
        model = tiny(mod)
        ids = mod.encode_prompts(ids_prompts, torch.device("cpu"))
        out.append(mod.rollout(model, ids, settings, torch.Generator().manual_seed(3)))
    assert torch.equal(out[0], out[1])
    # w = 0 never evaluates the unconditional branch: the sample equals the plain sampler's
    from maskgrpo.sampling import emerge

    mod = make_modality(parts, w=0.0)
    model = tiny(mod)
    ids = mod.encode_prompts(ids_prompts, torch.device("cpu"))
    plain = emerge.sample(
        mod.logits_fn(model, ids),
        3,
        36,
        mask_id=mod.mask_code,
        steps=6,
        temperature=1.0,
        guidance_scale=0.0,
        generator=torch.Generator().manual_seed(3),
    )
    assert torch.equal(out[0][:, mod.prompt_width :] - mod.offset, plain.codes)
    guided = make_modality(parts, w=3.0).rollout(
        model, ids, settings, torch.Generator().manual_seed(3)
    )
    assert not torch.equal(guided, out[0])


def test_maskgit_rollout_and_bad_settings(parts: tuple) -> None:
    mod = make_modality(parts, sampler="maskgit", w=1.0)
    ids = mod.encode_prompts(["", ""], torch.device("cpu"))
    seqs = mod.rollout(tiny(mod), ids, SamplerSettings(36, 4, 36, 1.0, ""), torch.Generator())
    assert seqs.shape == (2, mod.prompt_width + 36)
    with pytest.raises(ValueError, match="gen_length"):
        mod.rollout(tiny(mod), ids, SamplerSettings(30, 4, 30, 1.0, ""), torch.Generator())
    with pytest.raises(ValueError, match="sampler"):
        ImageSampling("llada")
