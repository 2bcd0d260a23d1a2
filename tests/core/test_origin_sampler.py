"""Dream's default decoding rule ("origin") in the project's sampler, on the tiny model."""

from __future__ import annotations

import torch

from maskgrpo import generate
from maskgrpo.sampling.common import linear_transfer, reveal_masked

MASK = 2


def test_linear_transfer_is_dreams_schedule() -> None:
    steps = linear_transfer(4, eps=1e-3)
    t = torch.linspace(1, 1e-3, 5)
    assert steps[-1] == 1.0  # everything left unmasks at the last step
    for i in range(3):
        assert torch.equal(torch.as_tensor(steps[i]), 1 - t[i + 1] / t[i])


def test_reveal_draws_one_uniform_per_masked_position() -> None:
    masked = torch.tensor([[True, False, True, True], [False, True, False, False]])
    gen = torch.Generator().manual_seed(0)
    commit = reveal_masked(masked, 0.5, gen)
    u = torch.rand(4, generator=torch.Generator().manual_seed(0))  # 4 masked, row-major
    expected = torch.zeros_like(masked)
    expected[masked] = u < 0.5
    assert torch.equal(commit, expected)
    assert torch.equal(reveal_masked(masked, 1.0, gen), masked)
    assert not bool(reveal_masked(masked, 0.0, gen).any())
    # one generator per row: row b's draws come from generator b alone
    rows = [torch.Generator().manual_seed(5), torch.Generator().manual_seed(6)]
    per_row = reveal_masked(masked, 0.5, rows)
    alone = reveal_masked(masked[1:], 0.5, [torch.Generator().manual_seed(6)])
    assert torch.equal(per_row[1:], alone)


def test_origin_sampling_is_complete_seeded_and_batch_invariant(make_tiny) -> None:
    model = make_tiny(seed=1, head_std=1.0)
    prompts = torch.randint(4, 12, (3, 4), generator=torch.Generator().manual_seed(0))
    settings = {"mask_id": MASK, "gen_length": 6, "steps": 3, "block_length": 6}

    def gens() -> list[torch.Generator]:
        return [torch.Generator().manual_seed(10 + b) for b in range(3)]

    out = generate(
        model, prompts, remasking="origin", temperature=1.0, generator=gens(), **settings
    )
    again = generate(
        model, prompts, remasking="origin", temperature=1.0, generator=gens(), **settings
    )
    assert torch.equal(out.sequences, again.sequences)
    assert not bool((out.completions == MASK).any())
    alone = generate(
        model,
        prompts[2:],
        remasking="origin",
        temperature=1.0,
        generator=[torch.Generator().manual_seed(12)],
        **settings,
    )
    assert torch.equal(alone.sequences[0], out.sequences[2])
