"""CUDA checks (skipped without a GPU): device paths agree with the CPU and stay seeded."""

from __future__ import annotations

import pytest
import torch

from maskgrpo import generate, remask, token_logprobs

pytestmark = pytest.mark.gpu
MASK = 2


def test_logprobs_on_cuda_match_cpu(make_tiny) -> None:
    model = make_tiny(seed=0, std=0.2)
    ids = torch.randint(4, 16, (4, 12), generator=torch.Generator().manual_seed(0))
    view = remask(ids, 3, 0.7, "fading", mask_id=MASK, generator=torch.Generator().manual_seed(1))
    noisy, scored = view.noisy_ids[0], view.scored[0]
    with torch.no_grad():
        cpu = token_logprobs(model, noisy, ids, scored, chunk_size=5)
        gpu = token_logprobs(
            model.cuda(), noisy.cuda(), ids.cuda(), scored.cuda(), chunk_size=5
        ).cpu()
    torch.testing.assert_close(gpu, cpu, rtol=0, atol=1e-4)


def test_cuda_generators_make_masks_and_samples_reproducible(make_tiny) -> None:
    model = make_tiny(seed=1, std=0.3, head_std=1.0).cuda()
    ids = torch.randint(4, 16, (8, 12), generator=torch.Generator().manual_seed(2)).cuda()

    def masks(seed: int) -> torch.Tensor:
        gen = torch.Generator(device="cuda").manual_seed(seed)
        return remask(ids, 4, 0.8, "fading", mask_id=MASK, generator=gen).scored

    assert torch.equal(masks(5), masks(5))
    assert not masks(5)[:, :, :4].any()

    def sample(seed: int) -> torch.Tensor:
        gen = torch.Generator(device="cuda").manual_seed(seed)
        return generate(
            model,
            ids[:, :4],
            mask_id=MASK,
            gen_length=8,
            steps=4,
            block_length=4,
            temperature=1.0,
            remasking="emerge",
            generator=gen,
        ).completions

    first = sample(3)
    assert torch.equal(first, sample(3))
    assert not (first == MASK).any()
