"""The advantage, loss-normaliser and re-masking registries: a new choice is one function plus
its ``register`` line, and the configuration, the maths and the trainer all accept it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import torch
from torch import Tensor

from maskgrpo import CharTokenizer, MaskGRPOConfig, MaskGRPOTrainer, TinyConfig, TinyDiffusionLM
from maskgrpo.grpo import ADVANTAGES, NORMALIZERS, group_advantages, grpo_loss
from maskgrpo.masking import REMASKERS, MaskedView, RemaskDraw, remask
from maskgrpo.registry import Registry

CALLS: dict[str, int] = {}


def centred_max(rewards: Tensor, eps: float) -> Tensor:
    CALLS["advantage"] = CALLS.get("advantage", 0) + 1
    centred = rewards - rewards.nanmean(dim=1, keepdim=True)
    return centred / (centred.abs().nan_to_num().amax(dim=1, keepdim=True) + eps)


def summed(per_token: Tensor, mask: Tensor, normalizer: float | None) -> Tensor:
    CALLS["loss"] = CALLS.get("loss", 0) + 1
    return -(per_token * mask.to(per_token.dtype)).sum()


def last_half(d: RemaskDraw) -> MaskedView:
    CALLS["strategy"] = CALLS.get("strategy", 0) + 1
    length = d.inside.sum(dim=1, keepdim=True)
    return d.single(d.inside & (2 * d.position >= length))


@pytest.fixture
def registered() -> Iterator[None]:
    """The three new choices: one ``register`` line each (removed again after the test)."""
    ADVANTAGES.register("centred_max")(centred_max)
    NORMALIZERS.register("summed", config_name="sum")(summed)
    REMASKERS.register("last_half")(last_half)
    CALLS.clear()
    yield
    ADVANTAGES.unregister("centred_max")
    NORMALIZERS.unregister("summed")
    REMASKERS.unregister("last_half")


def test_the_built_in_choices_and_their_configuration_names() -> None:
    assert ADVANTAGES.names() == ("zscore", "mean", "rank")
    assert ADVANTAGES.config_names() == ("group", "none", "rank")
    assert NORMALIZERS.names() == ("token", "sequence", "constant")
    assert NORMALIZERS.config_names() == ("dapo", "grpo", "dr_grpo")
    assert REMASKERS.names() == ("fading", "random", "d1", "coupled")
    cfg = MaskGRPOConfig(scale_rewards="none", loss_type="dr_grpo")
    assert (cfg.advantage_method, cfg.normalization) == ("mean", "constant")
    for bad in ({"scale_rewards": "batch"}, {"loss_type": "bnpo"}, {"strategy": "left"}):
        with pytest.raises(ValueError, match="is unknown; choose one of"):
            MaskGRPOConfig(**bad).validate()


def test_a_name_is_registered_once() -> None:
    registry: Registry[Any] = Registry("thing")
    registry.register("a", config_name="b")(len)
    with pytest.raises(ValueError, match="'a' is registered already"):
        registry.register("a")(len)
    with pytest.raises(ValueError, match="registered already"):
        registry.register("c", config_name="b")(len)  # the configuration name is taken
    with pytest.raises(ValueError, match=r"unknown thing 'z'; choose one of \('a',\)"):
        registry.get("z")
    registry.unregister("a")
    assert "a" not in registry and registry.config_names() == ()


def test_new_choices_reach_the_maths(registered: None) -> None:
    rewards = [1.0, 0.0, None, 3.0, 2.0, 2.0, 4.0, 0.0]
    adv = group_advantages(rewards, 4, "centred_max", eps=0.0)
    expected = torch.tensor([-1 / 3 / (5 / 3), -(4 / 3) / (5 / 3), 0.0, 1.0, 0.0, 0.0, 1.0, -1.0])
    torch.testing.assert_close(adv, expected)
    ids = torch.arange(24).view(2, 12)
    view = remask(ids, 4, 0.5, "last_half", mask_id=99, generator=torch.Generator())
    assert view.scored[0, 0].nonzero().flatten().tolist() == [8, 9, 10, 11]
    assert torch.equal(view.noisy_ids[0] == 99, view.scored[0])
    per_token = torch.ones(2, 3)
    mask = torch.tensor([[True, True, False], [True, False, False]])
    loss, _ = grpo_loss(per_token, per_token, torch.ones(2), mask, normalization="summed")
    assert float(loss) == -3.0  # ratio 1, advantage 1: minus the three scored tokens


def test_the_configuration_and_the_trainer_take_new_choices(registered: None, tmp_path) -> None:
    cfg = MaskGRPOConfig(
        output_dir=str(tmp_path / "run"),
        scale_rewards="centred_max",
        loss_type="sum",
        strategy="last_half",
        max_steps=1,
        per_device_train_batch_size=4,
        num_generations=4,
        num_iterations=2,
        max_completion_length=4,
        learning_rate=5e-2,
        beta=0.0,
        device="cpu",
        sample_every=0,
    )
    cfg.validate()
    assert (cfg.advantage_method, cfg.normalization) == ("centred_max", "summed")
    tok = CharTokenizer("0123456789+=?")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = TinyDiffusionLM(
            TinyConfig(vocab_size=len(tok), dim=32, n_layers=1, n_heads=2, max_length=16)
        )
    before = [p.detach().clone() for p in model.parameters()]

    def reward(prompts: list[str], completions: list[str], **kw: Any) -> list[float]:
        return [float(sum(ch.isdigit() for ch in c)) + 0.1 * len(c) for c in completions]

    rows = [{"prompt": "1+2=?"}, {"prompt": "3+4=?"}]
    MaskGRPOTrainer(model, reward, args=cfg, train_dataset=rows, processing_class=tok).train()
    assert CALLS["advantage"] >= 1 and CALLS["loss"] >= 2 and CALLS["strategy"] >= 2
    moved = [not torch.equal(a, b.detach()) for a, b in zip(before, model.parameters(), strict=True)]
    assert any(moved)
