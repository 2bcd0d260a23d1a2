"""aMUSEd adapter: samplers, masked-view log-probs and one MaskGRPO update on tiny random models."""

from __future__ import annotations

import copy

import pytest
import torch

diffusers = pytest.importorskip(
    "diffusers", reason="diffusers is not installed; pip install -c constraints.txt diffusers"
)

from maskgrpo.grpo import group_advantages  # noqa: E402
from maskgrpo.models.amused import (  # noqa: E402
    AmusedConditioning,
    amused_grpo_update,
    amused_logits_fn,
    amused_logprobs,
    decode_codes,
)
from maskgrpo.sampling import emerge  # noqa: E402

K, H, W = 16, 4, 4  # codebook size, latent grid


def tiny_transformer() -> torch.nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return diffusers.UVit2DModel(
            hidden_size=32,
            cond_embed_dim=8,
            micro_cond_encode_dim=2,
            micro_cond_embed_dim=10,
            encoder_hidden_size=8,
            vocab_size=K + 1,
            codebook_size=K,
            in_channels=16,
            block_out_channels=16,
            num_res_blocks=1,
            block_num_heads=2,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=32,
            sample_size=H,
        ).eval()


def conditioning(batch: int, seed: int = 0) -> AmusedConditioning:
    gen = torch.Generator().manual_seed(seed)
    micro = torch.tensor([[64.0, 64.0, 0.0, 0.0, 6.0]]).repeat(batch, 1)
    return AmusedConditioning(
        torch.randn(batch, 3, 8, generator=gen), torch.randn(batch, 8, generator=gen), micro
    )


def test_logits_fn_feeds_the_emerge_sampler() -> None:
    model = tiny_transformer()
    cond, uncond = conditioning(4), conditioning(4, seed=1)
    res = emerge.sample(
        amused_logits_fn(model, cond, H, W),
        4,
        H * W,
        mask_id=K,
        steps=4,
        temperature=1.0,
        guidance_scale=2.0,
        generator=torch.Generator().manual_seed(0),
        uncond_logits_fn=amused_logits_fn(model, uncond, H, W),
    )
    assert res.codes.shape == (4, H * W)
    assert int(res.codes.max()) < K and int(res.codes.min()) >= 0


def test_logprobs_only_at_scored_cells() -> None:
    model = tiny_transformer()
    codes = torch.randint(0, K, (2, H * W), generator=torch.Generator().manual_seed(0))
    scored = torch.zeros_like(codes, dtype=torch.bool)
    scored[:, :5] = True
    noisy = codes.masked_fill(scored, K)
    logp = amused_logprobs(model, conditioning(2), noisy, codes, scored, H, W)
    assert logp.shape == (2, H * W)
    assert bool((logp[:, 5:] == 0).all()) and bool((logp[:, :5] < 0).all())


def test_one_grpo_update_changes_parameters() -> None:
    model = tiny_transformer()
    ref = copy.deepcopy(model)
    before = [p.detach().clone() for p in model.parameters()]
    codes = torch.randint(0, K, (4, H * W), generator=torch.Generator().manual_seed(1))
    adv = group_advantages([1.0, 0.0, 0.5, 0.2], group_size=4)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    stats = amused_grpo_update(
        model,
        opt,
        conditioning(4),
        codes,
        adv,
        mask_id=K,
        height=H,
        width=W,
        seed=0,
        step=0,
        mu=2,
        beta=0.01,
        ref_model=ref,
    )
    assert stats and all(s.tokens > 0 for s in stats)
    assert stats[0].clip_fraction == 0.0  # ratio exactly 1 before the first update
    changed = any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    assert changed


def test_decode_codes_gives_uint8_pixels() -> None:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        vq = diffusers.VQModel(
            block_out_channels=(8,),
            norm_num_groups=4,
            latent_channels=4,
            num_vq_embeddings=K,
            lookup_from_codebook=True,
            sample_size=H,
        ).eval()
    images = decode_codes(vq, torch.randint(0, K, (2, H * W)), H, W)
    assert len(images) == 2 and images[0].dtype.name == "uint8" and images[0].shape[-1] == 3
