"""aMUSEd through the one training loop: samplers, and MaskGRPO steps of ``train_grpo`` on tiny
random ``UVit2DModel`` + ``VQModel`` models."""

from __future__ import annotations

import pytest
import torch

diffusers = pytest.importorskip(
    "diffusers", reason="diffusers is not installed; pip install -c constraints.txt diffusers"
)

import numpy as np  # noqa: E402

from maskgrpo.config import TrainConfig  # noqa: E402
from maskgrpo.modalities.image import ImageSampling  # noqa: E402
from maskgrpo.models.amused import (  # noqa: E402
    AmusedConditioning,
    amused_logits_fn,
    amused_policy,
    decode_codes,
)
from maskgrpo.rewards.combine import RewardSet  # noqa: E402
from maskgrpo.sampling import emerge  # noqa: E402
from maskgrpo.trainer.grpo import make_rollout, train_grpo  # noqa: E402

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


def tiny_vq() -> torch.nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return diffusers.VQModel(
            block_out_channels=(8,),
            norm_num_groups=4,
            latent_channels=4,
            num_vq_embeddings=K,
            lookup_from_codebook=True,
            sample_size=H,
        ).eval()


def brightness(prompts: list, completions: list, **_: object) -> list[float | None]:
    """A reward that differs between images, so advantages are non-zero."""
    return [float(np.asarray(img, dtype=np.float64).mean() / 255.0) for img in completions]


PROMPTS = ["a red cube", "a blue ball", "a green cone"]


def amused_parts(guidance: float = 1.0) -> tuple:
    cond = {p: conditioning(1, seed=i + 1) for i, p in enumerate(PROMPTS)}
    return amused_policy(
        tiny_transformer(), tiny_vq(), cond, conditioning(1, seed=0), height=H, width=W,
        sampling=ImageSampling("emerge", guidance),
    )  # fmt: skip


def amused_config(**kw: object) -> TrainConfig:
    args: dict = dict(
        max_steps=1, per_device_train_batch_size=6, num_generations=3, num_iterations=2,
        beta=0.01, learning_rate=1e-2, temperature=1.0, diffusion_steps=4, sample_every=0,
        max_completion_length=H * W,
    )  # fmt: skip
    args.update(kw)
    return TrainConfig(**args)


def test_amused_takes_a_maskgrpo_step_through_train_grpo() -> None:
    policy, modality = amused_parts()
    settings = modality.sampler_settings(amused_config())
    rows = [{"prompt": p} for p in PROMPTS]
    rewards = RewardSet([brightness])
    ro = make_rollout(
        amused_config(), 0, model=policy, ref_model=None, modality=modality, rows=rows[:2],
        rewards=rewards, settings=settings,
    )  # fmt: skip
    assert ro.vocab_range == modality.vocab_range and ro.prompt_width == 2
    assert bool(ro.advantages.abs().sum() > 0)  # the rollouts differ: a learning signal
    assert all(isinstance(c, np.ndarray) and c.dtype == np.uint8 for c in ro.completions)
    for view in ro.views:  # only image codes are re-masked (random, truncation 0.8)
        assert not bool(view.scored[0][:, :2].any()) and bool(view.scored[0].any())
    before = [p.detach().clone() for p in policy.transformer.parameters()]
    history = train_grpo(
        amused_config(), policy, modality=modality, rows=rows, rewards=rewards, settings=settings
    )
    assert len(history) == 1 and history[0]["tokens_scored"] > 0
    after = list(policy.transformer.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, after, strict=True))


def test_amused_policy_scores_codes_only_and_reads_each_rows_conditioning() -> None:
    policy, modality = amused_parts(guidance=0.0)
    ids = modality.encode_prompts(["a red cube", "a blue ball"], torch.device("cpu"))  # (2, 2)
    codes = torch.randint(0, K, (2, H * W), generator=torch.Generator().manual_seed(0))
    seq = torch.cat([ids, codes + modality.offset], dim=1)
    logits = policy(seq).logits  # (2, 2 + N, V)
    lo, hi = modality.vocab_range
    assert logits.shape == (2, 2 + H * W, modality.spec.vocab_size)
    assert bool((logits[:, :2] == 0).all()) and bool((logits[:, 2:, :lo] == 0).all())
    same = torch.cat([ids[:1], codes[:1] + modality.offset], dim=1).repeat(2, 1)
    swapped = torch.cat([ids.flip(0), codes[:1].repeat(2, 1) + modality.offset], dim=1)
    # the prompt changes the logits of the same codes: each row reads its own conditioning
    assert not torch.allclose(policy(same).logits[0], policy(swapped).logits[0])
    direct = amused_logits_fn(policy.transformer, conditioning(1, seed=1), H, W)(codes[:1])
    assert torch.allclose(policy(same).logits[0, 2:, lo:hi], direct[0], atol=1e-5)


def test_decode_codes_gives_uint8_pixels() -> None:
    images = decode_codes(tiny_vq(), torch.randint(0, K, (2, H * W)), H, W)
    assert len(images) == 2 and images[0].dtype.name == "uint8" and images[0].shape[-1] == 3
