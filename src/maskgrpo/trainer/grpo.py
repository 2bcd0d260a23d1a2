"""The MaskGRPO training loop, written out once (MaskGRPO, arXiv 2510.02880, Alg. 1).

Per step (TRL's batch vocabulary: ``B = per_device_train_batch_size``,
``K = gradient_accumulation_steps``, ``G = num_generations``, ``mu = num_iterations``):
1. take ``B K W / G`` prompts (``W`` processes), roll out ``G`` completions each (no grad, eval
   mode); each process generates its contiguous slice of ``B K`` rollouts;
2. score them with the reward functions; group advantages over whole groups;
3. draw ``mu`` masked views, view ``j`` at ratio ``r_j`` from a generator seeded by
   ``(seed, step, j)``, and compute old-policy and reference log-probs on every view once;
4. ``mu`` inner updates, update ``j`` scoring only the positions masked in view ``j`` (the
   iteration index comes from the loop, never from a micro-batch counter): one optimizer step
   over all rollouts of the step, accumulated over ``K`` micro-batches of ``B`` rows per process,
   with the loss normalised over the whole global batch.

The policy stays in eval mode throughout (dropout off), so the ratio is exactly 1 at the first
inner update. An update whose view scores no token is skipped (no optimizer step), and so is one
whose loss or gradient norm is not finite (parameters and optimizer state untouched; too many in
a row abort the run). Groups whose every reward is unscorable get advantage 0 and no loss token;
a batch with no scorable group skips its inner updates.

The loop's position lives in one :class:`TrainState` (steps done, inner updates done, the current
rollout), so a run can be saved between any two inner updates and resumed exactly; every random
draw comes from generators derived from ``(seed, step, ...)``, so the position is all the
randomness a resumed run needs.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from ..config import MaskGRPOConfig, with_modality_defaults
from ..grpo import group_advantages, grpo_loss
from ..lora import is_lora, reference_policy
from ..masking import MaskedView, completion_span, mask_ratios, remask, upto_first_eos
from ..modalities.base import Modality, SamplerSettings
from ..rewards.combine import RewardResult, RewardSet
from ..rng import derive_generator
from . import dist_wrap
from . import distributed as dist
from .sft import lr_lambda

__all__ = [
    "Rollout",
    "StepStats",
    "TrainParts",
    "TrainState",
    "TrainingAborted",
    "build_parts",
    "make_rollout",
    "train_grpo",
]

log = logging.getLogger(__name__)


@dataclass
class Rollout:
    """One rollout batch and everything the inner updates need, computed once."""

    prompts: list[str]
    completions: list[Any]  # decoded: text, or images for the image modality
    sequences: Tensor  # (N, W + L)
    rewards: RewardResult
    advantages: Tensor  # (N,)
    base_mask: Tensor  # (N, W + L) completion positions eligible for the loss
    views: list[MaskedView]  # mu views
    old_logp: list[Tensor]  # mu x (N, W + L)
    ref_logp: list[Tensor | None]
    vocab_range: tuple[int, int] | None = None  # softmax restricted to these ids (image codes)
    prompt_width: int = 0  # W: the completion is sequences[:, W:]


@dataclass
class StepStats:
    loss: float
    kl: float
    clip_fraction: float
    tokens: int
    grad_norm: float
    skipped_updates: int
    nonfinite: int = 0  # 1 when the update was skipped for a non-finite loss or gradient norm


@dataclass
class TrainState:
    """Where the loop is: everything besides weights and optimizer a resumed run needs.

    ``step`` counts finished steps (the one in progress is ``step + 1`` in the metrics);
    ``inner`` counts the inner updates done on ``rollout``, which is ``None`` between steps.
    """

    step: int = 0
    inner: int = 0
    rollout: Rollout | None = None
    stats: list[StepStats] = field(default_factory=list)  # inner updates of the step in progress
    nonfinite_streak: int = 0  # consecutive non-finite updates, across steps

    @property
    def position(self) -> tuple[int, int]:
        return (self.step, self.inner)


@dataclass
class TrainParts:
    """The reference policy (``None`` when ``beta = 0``), the optimizer and its schedule."""

    ref_model: nn.Module | None
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR


class TrainingAborted(RuntimeError):
    """Training cannot go on (e.g. too many non-finite updates in a row)."""


def sampler_settings(
    cfg: MaskGRPOConfig, answer_tokens: int, *, greedy: bool = False
) -> SamplerSettings:
    """The config's sampler; by default the answer and its EOS."""
    return SamplerSettings.from_config(cfg, answer_tokens + 1, greedy=greedy)


def prompt_batch(
    rows: list[dict[str, Any]], step: int, count: int, seed: int
) -> list[dict[str, Any]]:
    """Rows of ``step``: consecutive slices of per-epoch permutations (a function of the step)."""
    out: list[dict[str, Any]] = []
    start = step * count
    while len(out) < count:
        epoch, offset = divmod(start + len(out), len(rows))
        order = torch.randperm(len(rows), generator=derive_generator(seed, "data", epoch)).tolist()
        out.extend(rows[i] for i in order[offset : offset + count - len(out)])
    return out


@torch.no_grad()
def make_rollout(
    cfg: MaskGRPOConfig,
    step: int,
    *,
    model: nn.Module,
    ref_model: nn.Module | None,
    modality: Modality,
    rows: list[dict[str, Any]],
    rewards: RewardSet,
    settings: SamplerSettings,
) -> Rollout:
    """Steps 1-3 of the loop: rollouts, rewards, advantages, views, old and reference log-probs."""
    device = next(model.parameters()).device
    group_size = cfg.num_generations
    group = [r for r in rows for _ in range(group_size)]  # prompt-major: groups are contiguous
    mine = dist.local_rows(len(group))  # this process's rows; all of them on one process
    group = group[mine]
    prompts = [r["prompt"] for r in group]
    prompt_ids = modality.encode_prompts(prompts, device)
    gen = dist.rollout_generator(
        cfg.seed, step, group_size=group_size, rows=mine, modality=modality, device=device
    )
    seqs = modality.rollout(dist_wrap.for_sampling(model), prompt_ids, settings, gen)
    width = modality.prompt_width
    completions = modality.decode(seqs[:, width:])
    columns = {k: [r[k] for r in group] for k in group[0] if k != "prompt"}
    result = dist.gather_rewards(rewards(prompts, completions, **columns))  # whole groups
    advantages = group_advantages(result.total, group_size, cfg.advantage_method)[mine].to(device)
    if cfg.score_after_eos:
        base_mask, _ = completion_span(seqs, width)
    else:
        base_mask = upto_first_eos(seqs, width, modality.spec.eos_id)
    scorable_all = scorable_rows(result.total, group_size)  # (N,) of every process
    scorable = scorable_all[mine].to(device)
    base_mask = base_mask & scorable[:, None]  # unscorable groups contribute no gradient (no KL)
    views: list[MaskedView] = []
    old: list[Tensor] = []
    ref: list[Tensor | None] = []
    if not bool(scorable_all.any()):  # nothing to learn from: the loop skips this step's updates
        return Rollout(
            prompts,
            completions,
            seqs,
            result,
            advantages,
            base_mask,
            [],
            [],
            [],
            modality.vocab_range,
            width,
        )
    micro = cfg.per_device_train_batch_size
    vocab = modality.vocab_range
    all_seqs = dist.gather_rows(seqs)  # masks drawn over the whole batch, as on one process
    masking = with_modality_defaults(cfg, getattr(modality, "name", "text"))
    for j, ratio in enumerate(mask_ratios(masking.gamma, cfg.num_iterations)):
        view = remask(
            all_seqs,
            width,
            ratio,
            masking.strategy,
            mask_id=modality.spec.mask_id,
            generator=derive_generator(cfg.seed, step, "mask", j, device=device),
            d1_prompt_prob=cfg.d1_prompt_prob,
        )
        view = dist.local_view(view, mine)
        views.append(view)
        old.append(
            dist_wrap.view_logprobs(model, view, seqs, micro_batch_size=micro, vocab_range=vocab)[0]
        )
        ref.append(
            dist_wrap.view_logprobs(
                ref_model, view, seqs, micro_batch_size=micro, vocab_range=vocab
            )[0]
            if ref_model
            else None
        )
    return Rollout(
        prompts, completions, seqs, result, advantages, base_mask, views, old, ref, vocab, width
    )


def scorable_rows(total: list[float | None], group_size: int) -> Tensor:
    """``(N,)`` bool: rows of groups with at least one scorable reward."""
    valid = torch.tensor([r is not None for r in total], dtype=torch.bool)
    return valid.view(-1, group_size).any(dim=1).repeat_interleave(group_size)


def inner_update(
    cfg: MaskGRPOConfig,
    j: int,
    model: nn.Module,
    rollout: Rollout,
    *,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
) -> StepStats:
    """Step 4 for iteration ``j``: loss on view ``j`` only, one optimizer step accumulated over
    micro-batches of ``per_device_train_batch_size`` rows."""
    view = rollout.views[j]
    loss_mask = view.scored.any(dim=0) & rollout.base_mask  # (N, W + L), this view's positions only
    tokens = int(dist.all_sum(float(loss_mask.sum()))[0])  # over all processes
    n = rollout.sequences.shape[0]
    n_all = n * dist.rank_world()[1]
    if tokens == 0:
        return StepStats(0.0, 0.0, 0.0, 0, 0.0, skipped_updates=1)
    micro = cfg.per_device_train_batch_size
    vocab = rollout.vocab_range
    # dr_grpo (Dr.GRPO, TRL): a constant, rollouts x completion length; dapo: the scored tokens
    completion_length = rollout.sequences.shape[-1] - rollout.prompt_width
    normalizer = (
        float(n_all * completion_length) if cfg.normalization == "constant" else float(tokens)
    )
    optimizer.zero_grad(set_to_none=True)
    total_loss, kl, clip = 0.0, 0.0, 0.0
    for s in range(0, n, micro):
        rows, last = slice(s, s + micro), s + micro >= n
        dist.sync_gradients(model, last)  # gradients synchronised once, at the last micro-batch
        part = MaskedView(view.noisy_ids[:, rows], view.scored[:, rows])
        logp, _ = dist_wrap.view_logprobs(model, part, rollout.sequences[rows], vocab_range=vocab)
        ref = rollout.ref_logp[j]
        loss, st = grpo_loss(
            logp,
            rollout.old_logp[j][rows],
            rollout.advantages[rows],
            loss_mask[rows],
            ref_logp=None if ref is None else ref[rows],
            beta=cfg.beta,
            eps=cfg.epsilon,
            eps_high=cfg.epsilon_upper,
            normalization=cfg.normalization,
            normalizer=None if cfg.normalization == "sequence" else normalizer,
        )
        if cfg.normalization == "sequence":
            loss = loss * (logp.shape[0] / n_all)  # mean of per-sequence means over the batch
        dist.backward(model, loss, last=last)
        total_loss += float(loss.detach())
        kl += st.kl * st.tokens / tokens
        clip += st.clip_fraction * st.tokens / tokens
    total_loss, kl, clip = dist.all_sum(total_loss, kl, clip)
    clip_norm = cfg.max_grad_norm if cfg.max_grad_norm > 0 else float("inf")
    grad_norm = dist.clip_grad_norm(model, clip_norm)
    if not (math.isfinite(total_loss) and math.isfinite(grad_norm)):
        if dist.steps_in_backward():  # DeepSpeed has applied the update inside backward
            raise TrainingAborted(
                f"inner update {j}: loss={total_loss} grad_norm={grad_norm} is not finite and "
                "DeepSpeed steps inside backward, so the update could not be skipped"
            )
        optimizer.zero_grad(set_to_none=True)  # no step: parameters and optimizer state unchanged
        log.warning(
            "inner update %d: loss=%s grad_norm=%s is not finite; skipped", j, total_loss, grad_norm
        )
        return StepStats(total_loss, kl, clip, tokens, grad_norm, skipped_updates=1, nonfinite=1)
    optimizer.step()
    scheduler.step()
    return StepStats(total_loss, kl, clip, tokens, grad_norm, skipped_updates=0)


def reference_model(cfg: MaskGRPOConfig, model: nn.Module) -> nn.Module | None:
    """A frozen copy of the initial policy, kept only when the KL term is on (``beta > 0``).

    With LoRA the reference is the same model with the adapter disabled (no copy).
    """
    if cfg.beta <= 0:
        return None
    if is_lora(model):
        return reference_policy(model)
    ref = copy.deepcopy(model).eval()
    for p in ref.parameters():
        p.requires_grad_(False)
    return ref


def build_parts(cfg: MaskGRPOConfig, model: nn.Module) -> TrainParts:
    """Reference copy of ``model`` as it is now (call before loading a checkpoint), AdamW, schedule."""
    optimizer = torch.optim.AdamW(
        model.parameters(),
        lr=cfg.learning_rate,
        betas=(cfg.adam_beta1, cfg.adam_beta2),
        weight_decay=cfg.weight_decay,
    )
    total_updates = cfg.max_steps * cfg.num_iterations
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lr_lambda(cfg.warmup_steps, total_updates, cfg.lr_scheduler_type)
    )
    return TrainParts(reference_model(cfg, model), optimizer, scheduler)


def rollout_hash(sequences: Tensor) -> str:
    """A short digest of the rollout tokens, to compare runs (e.g. straight vs resumed)."""
    data = sequences.detach().to("cpu", torch.int64).contiguous().numpy().tobytes()
    return hashlib.sha256(data).hexdigest()[:16]


def _spread(values: Tensor) -> float:
    """Standard deviation, 0 for fewer than two values (an unscorable group has none)."""
    return float(values.std()) if values.numel() > 1 else 0.0


def _is_empty(completion: Any) -> bool:
    return isinstance(completion, str) and not completion.strip()


def _step_metrics(
    step: int, rollout: Rollout, stats: list[StepStats], *, group_size: int, lr: float
) -> dict[str, Any]:
    total = [r for r in rollout.rewards.total if r is not None]
    rewards = torch.tensor([float("nan") if r is None else r for r in rollout.rewards.total])
    grouped = rewards.view(-1, group_size)
    zero_std = [_spread(g[~g.isnan()]) < 1e-8 for g in grouped]
    done = [s for s in stats if not s.skipped_updates] or [StepStats(0.0, 0.0, 0.0, 0, 0.0, 0)]
    metrics: dict[str, Any] = {
        "step": step,
        "reward_mean": sum(total) / max(1, len(total)),
        "reward_std": float(torch.tensor(total).std()) if len(total) > 1 else 0.0,
        "unscorable": len(rollout.rewards.total) - len(total),
        "unscorable_groups": int(grouped.isnan().all(dim=1).sum()),
        "empty_completions": int(dist.all_sum(sum(_is_empty(c) for c in rollout.completions))[0]),
        "skipped_step": int(not rollout.views),
        "loss": sum(s.loss for s in done) / len(done),
        "kl": sum(s.kl for s in done) / len(done),
        "clip_fraction": sum(s.clip_fraction for s in done) / len(done),
        "grad_norm": sum(s.grad_norm for s in done) / len(done),
        "zero_std_frac": sum(zero_std) / len(zero_std),
        "tokens_scored": sum(s.tokens for s in stats),
        "skipped_updates": sum(s.skipped_updates for s in stats),
        "nonfinite_skips": sum(s.nonfinite for s in stats),
        "rollout_hash": rollout_hash(dist.gather_rows(rollout.sequences)),  # all processes
        "lr": lr,
    }
    for name, values in rollout.rewards.per_function.items():
        vals = [v for v in values if v is not None]
        metrics[f"rewards/{name}"] = sum(vals) / max(1, len(vals))
    return metrics


def record_update(cfg: MaskGRPOConfig, state: TrainState, stats: StepStats) -> None:
    """Advance ``state`` past one inner update; abort after too many non-finite ones in a row."""
    state.stats.append(stats)
    state.inner += 1
    if stats.nonfinite:
        state.nonfinite_streak += 1
    elif not stats.skipped_updates:
        state.nonfinite_streak = 0
    if state.nonfinite_streak >= cfg.max_nonfinite_skips:
        raise TrainingAborted(
            f"{state.nonfinite_streak} consecutive inner updates had a non-finite loss or "
            f"gradient norm (max_nonfinite_skips={cfg.max_nonfinite_skips}), the last at step "
            f"{state.step + 1}, inner update {state.inner}; lower learning_rate or max_grad_norm, check the "
            "rewards, then resume from the last good checkpoint"
        )


def train_grpo(
    cfg: MaskGRPOConfig,
    model: nn.Module,
    *,
    modality: Modality,
    rows: list[dict[str, Any]],
    rewards: RewardSet,
    settings: SamplerSettings,
    on_step: Callable[[dict[str, Any], Rollout], None] | None = None,
    parts: TrainParts | None = None,
    state: TrainState | None = None,
    should_stop: Callable[[TrainState], bool] | None = None,
) -> list[dict[str, Any]]:
    """Run MaskGRPO on ``model`` in place from ``state`` (mutated); returns this call's metrics.

    ``parts`` defaults to :func:`build_parts` of ``model``. ``should_stop(state)`` is asked after
    each rollout, inner update and step; when it says yes the loop returns at once, leaving
    ``state`` where a checkpoint can resume it.
    """
    model.eval()  # dropout off for rollouts, old/ref and current passes alike
    parts = parts or build_parts(cfg, model)
    model = dist_wrap.prepare(model, parts, cfg.max_grad_norm)  # DDP/FSDP/DeepSpeed wrap
    state = state if state is not None else TrainState()
    stop = dist.agreed_stop(should_stop)  # every process stops at the same point
    history: list[dict[str, Any]] = []
    started = time.time()
    processes = dist.rank_world()[1]
    cfg.validate_batch(processes)
    while state.step < cfg.max_steps:
        t0 = time.time()
        if state.rollout is None:
            batch = prompt_batch(rows, state.step, cfg.prompts_per_step(processes), cfg.seed)
            state.rollout = make_rollout(
                cfg,
                state.step,
                model=model,
                ref_model=parts.ref_model,
                modality=modality,
                rows=batch,
                rewards=rewards,
                settings=settings,
            )
            if stop(state):
                return history
        rollout = state.rollout
        while state.inner < cfg.num_iterations and rollout.views:
            stats = inner_update(
                cfg,
                state.inner,
                model,
                rollout,
                optimizer=parts.optimizer,
                scheduler=parts.scheduler,
            )
            record_update(cfg, state, stats)
            if stop(state):
                return history
        lr = float(parts.scheduler.get_last_lr()[0])
        metrics = _step_metrics(
            state.step + 1, rollout, state.stats, group_size=cfg.num_generations, lr=lr
        )
        metrics["seconds"] = time.time() - t0
        state.step, state.inner, state.rollout, state.stats = state.step + 1, 0, None, []
        history.append(metrics)
        if on_step is not None:
            on_step(metrics, rollout)
        if stop(state):
            return history
        if cfg.max_seconds and dist.agree(time.time() - started > cfg.max_seconds):
            log.info(
                "stopping after %.0f s (max_seconds=%s) at step %d",
                time.time() - started,
                cfg.max_seconds,
                state.step,
            )
            break
    return history
