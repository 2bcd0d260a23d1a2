"""Masked-diffusion SFT: the LLaDA/MDLM objective on prompt-completion pairs.

Per row draw ``t ~ U(min_mask_ratio, 1)``, mask each completion token with probability ``t``
(the prompt is never masked) and minimise ``-sum_masked log p(x_k | x_t) / t`` divided by the
completion length, averaged over rows (LLaDA, Nie et al. 2025, Eq. 5). The completion is the
answer followed by EOS up to ``gen_length``, so the model learns where answers end.

``weighting="uniform"`` drops the ``1/t`` factor and averages the cross-entropy over the
masked tokens (MaskGIT's image-token loss, Chang et al. 2022). With short completions (16
image tokens) a row with one masked token carries weight ``1/t`` up to 1000 and dominates the
clipped batch gradient; on the shapes world, after 800 steps at lr 1e-3, the uniform loss put
0.058 of the code mass on blue for "a blue square" (0.005 on red) where the ``1/t`` loss put
0.027 (0.010 on red).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from ..logprobs import token_logprobs
from ..modalities.text import TextModality
from ..rng import derive_generator

__all__ = ["SFTState", "TaskBatches", "sft_loop", "sft_loss", "sft_state", "train_sft"]

log = logging.getLogger(__name__)


def sft_loss(
    model: nn.Module,
    prompt_ids: Tensor,
    completion_ids: Tensor,
    *,
    mask_id: int,
    generator: torch.Generator,
    min_mask_ratio: float = 0.0,
    vocab_range: tuple[int, int] | None = None,
    weighting: str = "elbo",
) -> Tensor:
    """The MDLM/LLaDA loss of one batch. ``prompt_ids`` ``(B, P)``, ``completion_ids`` ``(B, L)``.

    ``weighting``: ``"elbo"`` (``1/t``, per completion token) or ``"uniform"`` (mean over
    masked tokens; see the module docstring).

    ``vocab_range=(lo, hi)`` restricts the softmax to ids ``lo <= id < hi`` (image codes), as
    in sampling and in the GRPO log-probs.
    """
    if weighting not in ("elbo", "uniform"):
        raise ValueError(f"weighting={weighting!r}; choose 'elbo' (LLaDA) or 'uniform' (MaskGIT)")
    batch, length = completion_ids.shape
    device = completion_ids.device
    t = min_mask_ratio + (1 - min_mask_ratio) * torch.rand(
        (batch, 1), device=device, generator=generator
    )
    t = t.clamp_min(1e-3)
    masked = torch.rand((batch, length), device=device, generator=generator) < t  # (B, L)
    targets = torch.cat([prompt_ids, completion_ids], dim=1)
    scored = torch.cat([torch.zeros_like(prompt_ids, dtype=torch.bool), masked], dim=1)
    noisy = targets.masked_fill(scored, mask_id)
    logp = token_logprobs(model, noisy, targets, scored, vocab_range=vocab_range)  # (B, P + L)
    if weighting == "uniform":
        return -logp.sum() / scored.sum().clamp_min(1)
    return -(logp / t).sum() / (batch * length)


def lr_lambda(warmup: int, total: int, schedule: str = "cosine") -> Callable[[int], float]:
    """Multiplier of the base learning rate at optimizer step ``i`` (linear warmup first)."""

    def fn(i: int) -> float:
        if warmup and i < warmup:
            return (i + 1) / warmup
        if schedule == "constant" or total <= warmup:
            return 1.0
        progress = min(1.0, (i - warmup) / max(1, total - warmup))
        if schedule == "linear":
            return 1.0 - progress
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return fn


class TaskBatches:
    """The batches of :func:`train_sft`: a fresh permutation of the rows per epoch, and one
    mask generator; :meth:`state_dict` holds where both are, so a resumed run draws the same."""

    def __init__(
        self,
        modality: TextModality,
        rows: list[dict[str, Any]],
        *,
        gen_length: int,
        batch_size: int,
        seed: int,
        device: torch.device,
        min_mask_ratio: float = 0.0,
    ) -> None:
        self.modality, self.rows, self.gen_length = modality, rows, gen_length
        self.batch_size, self.device, self.min_mask_ratio = batch_size, device, min_mask_ratio
        self.data_gen = derive_generator(seed, "sft-data")
        self.mask_gen = derive_generator(seed, "sft-mask", device=device)
        self.order = torch.randperm(len(rows), generator=self.data_gen).tolist()
        self.cursor = 0

    def loss(self, model: nn.Module) -> Tensor:
        """The loss of the next batch."""
        if self.cursor + self.batch_size > len(self.order):
            self.order = torch.randperm(len(self.rows), generator=self.data_gen).tolist()
            self.cursor = 0
        batch = [self.rows[i] for i in self.order[self.cursor : self.cursor + self.batch_size]]
        self.cursor += self.batch_size
        return sft_loss(
            model,
            self.modality.encode_prompts([r["prompt"] for r in batch], self.device),
            self.modality.encode_completions(
                [r["answer"] for r in batch], self.gen_length, self.device
            ),
            mask_id=self.modality.spec.mask_id,
            generator=self.mask_gen,
            min_mask_ratio=self.min_mask_ratio,
        )

    def state_dict(self) -> dict[str, Any]:
        return {
            "data_gen": self.data_gen.get_state(),
            "mask_gen": self.mask_gen.get_state(),
            "order": list(self.order),
            "cursor": self.cursor,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.data_gen.set_state(state["data_gen"].cpu())
        self.mask_gen.set_state(state["mask_gen"].cpu())
        self.order, self.cursor = [int(i) for i in state["order"]], int(state["cursor"])


def train_sft(
    model: nn.Module,
    modality: TextModality,
    rows: list[dict[str, Any]],
    *,
    gen_length: int,
    steps: int,
    batch_size: int,
    lr: float,
    seed: int,
    warmup_steps: int = 50,
    weight_decay: float = 0.01,
    min_mask_ratio: float = 0.0,
    log_every: int = 50,
    on_log: Callable[[int, float], None] | None = None,
    should_stop: Callable[[int], bool] | None = None,
    schedule: str = "cosine",
) -> list[float]:
    """Run SFT in place on ``model``; returns the loss of every step.

    ``should_stop(steps_done)`` is asked after every step; training ends early when it says yes.
    """
    batches = TaskBatches(
        modality, rows, gen_length=gen_length, batch_size=batch_size, seed=seed,
        device=next(model.parameters()).device, min_mask_ratio=min_mask_ratio,
    )  # fmt: skip
    return sft_loop(
        model, lambda step: batches.loss(model), steps=steps, lr=lr, warmup_steps=warmup_steps,
        weight_decay=weight_decay, schedule=schedule, log_every=log_every, on_log=on_log,
        should_stop=should_stop,
    )  # fmt: skip


@dataclass
class SFTState:
    """Where an SFT run is: optimizer, schedule, steps done and their losses."""

    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    step: int = 0
    losses: list[float] = field(default_factory=list)


def sft_state(
    model: nn.Module,
    *,
    steps: int,
    lr: float,
    warmup_steps: int = 50,
    weight_decay: float = 0.01,
    schedule: str = "cosine",
) -> SFTState:
    """A fresh :class:`SFTState`: AdamW and its warmup + schedule, no step done."""
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(warmup_steps, steps, schedule))
    return SFTState(opt, sched)


def sft_loop(
    model: nn.Module,
    step_loss: Callable[[int], Tensor],
    *,
    steps: int,
    lr: float,
    warmup_steps: int = 50,
    weight_decay: float = 0.01,
    schedule: str = "cosine",
    log_every: int = 50,
    on_log: Callable[[int, float], None] | None = None,
    should_stop: Callable[[int], bool] | None = None,
    state: SFTState | None = None,
) -> list[float]:
    """The optimisation loop shared by text and image SFT: AdamW, warmup + schedule, clip 1.0.

    ``step_loss(step)`` draws the step's batch and returns its loss. ``state`` (from
    :func:`sft_state`, possibly loaded from a checkpoint) continues a run from ``state.step``;
    it is updated in place. Returns every step's loss (of the whole run, with ``state``).
    """
    if state is None:
        state = sft_state(
            model, steps=steps, lr=lr, warmup_steps=warmup_steps, weight_decay=weight_decay,
            schedule=schedule,
        )  # fmt: skip
    model.train()
    for step in range(state.step, steps):
        loss = step_loss(step)
        state.optimizer.zero_grad(set_to_none=True)
        if loss.requires_grad:  # a small batch can draw no masked token: nothing to learn
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            state.optimizer.step()
        state.scheduler.step()
        state.losses.append(loss.item())
        state.step = step + 1
        if on_log is not None and state.step % log_every == 0:
            on_log(state.step, sum(state.losses[-log_every:]) / log_every)
        if should_stop is not None and should_stop(state.step):
            break
    model.eval()
    return state.losses
