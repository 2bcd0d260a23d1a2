"""Multi-process training through accelerate: row sharding, gathers, process-invariant rollouts.

Launch with ``accelerate launch --config_file configs/accelerate/<ddp|fsdp|zero2|zero3>.yaml
-m maskgrpo.cli train ...``; a plain ``python``/``maskgrpo`` run is one process and every
helper here is then the identity. No process management lives here: accelerate starts the
processes and sets up ``torch.distributed``.

Layout of one step with ``W`` processes. The ``N = prompts x G`` rollouts of a step are split
into ``W`` contiguous slices (``N`` must divide by ``W``), so a group may span processes:
- rollouts: row ``(p, g)`` draws its noise from a generator seeded by
  ``(seed, step, "rollout", p, g)`` -- the tokens do not depend on ``W``;
- rewards: every process scores its slice; the reward lists are gathered so the group
  advantage uses the whole group (MaskGRPO Eq. 3);
- masks: the ``mu`` views are drawn over the gathered batch from ``(seed, step, "mask", j)``
  and each process keeps its slice -- the same masks as on one process;
- loss: normalised by the token count over all processes; gradients are averaged by the
  wrapper (DDP/FSDP/DeepSpeed), so the local loss is scaled by ``W`` before backward.

Simplified: every micro-batch backward all-reduces (no ``no_sync``); under a wrapper the
log-probs come from the full logits (the wrapper hides the trunk/head split).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from ..masking import MaskedView
from ..rewards.combine import RewardResult
from ..rng import derive_generator

__all__ = [
    "accelerator",
    "all_sum",
    "backward",
    "clip_grad_norm",
    "gather_rewards",
    "gather_rows",
    "is_main",
    "local_rows",
    "local_view",
    "prepare",
    "rank_world",
    "rollout_generator",
]

log = logging.getLogger(__name__)

_ACCELERATOR: Any = None  # created once, on the first call of accelerator() in a launch
_SINGLE = object()


def rank_world() -> tuple[int, int]:
    """``(rank, world_size)`` of this process; ``(0, 1)`` outside a distributed launch."""
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def shutdown() -> None:
    """Leave the process group, if any (gloo can abort at interpreter exit otherwise)."""
    group = torch.distributed
    if group.is_available() and group.is_initialized():
        group.destroy_process_group()


def is_main() -> bool:
    return rank_world()[0] == 0


def accelerator() -> Any:
    """The run's ``accelerate.Accelerator`` when launched on several processes, else None."""
    global _ACCELERATOR
    if _ACCELERATOR is None:
        try:
            from accelerate import PartialState
        except ImportError:
            if int(os.environ.get("WORLD_SIZE", "1")) > 1:
                raise ImportError(
                    "a multi-process launch needs accelerate: pip install accelerate"
                ) from None
            _ACCELERATOR = _SINGLE  # a single process needs no accelerate
            return None

        _ACCELERATOR = _SINGLE
        if PartialState().num_processes > 1:
            from accelerate import Accelerator

            _ACCELERATOR = Accelerator()
    return None if _ACCELERATOR is _SINGLE else _ACCELERATOR


def local_rows(total: int) -> slice:
    """This process's contiguous slice of ``total`` rows."""
    rank, world = rank_world()
    if total % world:
        raise ValueError(
            f"{total} rollouts per step do not split over {world} processes; make "
            f"the rollouts per step a multiple of {world}"
        )
    size = total // world
    return slice(rank * size, (rank + 1) * size)


def rollout_generator(
    seed: int, step: int, group_size: int, rows: slice, modality: Any, device: torch.device
) -> Any:
    """One generator per row ``(p, g)`` when ``modality.per_row_generators``, else one generator.

    Per-row generators make the tokens independent of the number of processes. A modality
    without them gets one generator per step (and process, when there are several).
    """
    if getattr(modality, "per_row_generators", False):
        return [
            derive_generator(seed, step, "rollout", *divmod(i, group_size), device=device)
            for i in range(rows.start, rows.stop)
        ]
    rank, world = rank_world()
    if world == 1:
        return derive_generator(seed, step, "rollout", device=device)
    return derive_generator(seed, step, "rollout", "rank", rank, device=device)


def gather_rows(t: Tensor) -> Tensor:
    """Concatenate equal-shaped ``t`` of all processes along dim 0, in rank order."""
    _, world = rank_world()
    if world == 1:
        return t
    parts = [torch.empty_like(t) for _ in range(world)]
    torch.distributed.all_gather(parts, t.contiguous())
    return torch.cat(parts)


def _gather_lists(values: Sequence[Any]) -> list[Any]:
    _, world = rank_world()
    if world == 1:
        return list(values)
    parts: list[Any] = [None] * world
    torch.distributed.all_gather_object(parts, list(values))
    return [v for part in parts for v in part]


def gather_rewards(result: RewardResult) -> RewardResult:
    """The rewards of all processes' rows, in global row order (error counts summed)."""
    if rank_world()[1] == 1:
        return result
    names = sorted(result.per_function)
    errors = _gather_lists([result.errors])
    summed: dict[str, int] = {}
    for part in errors:
        for k, v in part.items():
            summed[k] = summed.get(k, 0) + v
    return RewardResult(
        _gather_lists(result.total),
        {n: _gather_lists(result.per_function[n]) for n in names},
        summed,
    )


def local_view(view: MaskedView, rows: slice) -> MaskedView:
    """This process's rows of a view drawn over the gathered batch."""
    if rank_world()[1] == 1:
        return view
    return MaskedView(view.noisy_ids[:, rows], view.scored[:, rows])


def all_sum(*values: float) -> tuple[float, ...]:
    """Sums over processes of each value (float64 all-reduce)."""
    if rank_world()[1] == 1:
        return tuple(values)
    t = torch.tensor(values, dtype=torch.float64)
    torch.distributed.all_reduce(t)
    return tuple(float(v) for v in t)


def backward(loss: Tensor) -> None:
    """Backward of a loss normalised over all processes (the wrapper averages gradients)."""
    acc = accelerator()
    if acc is None:
        loss.backward()
        return
    acc.backward(loss * acc.num_processes)


def clip_grad_norm(model: nn.Module, max_norm: float) -> float:
    acc = accelerator()
    if acc is None:
        return float(torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm))
    return float(acc.clip_grad_norm_(model.parameters(), max_norm))


def prepare(model: nn.Module, optimizer: torch.optim.Optimizer) -> tuple[nn.Module, Any]:
    """Wrap model and optimizer for the launch's strategy (DDP/FSDP/DeepSpeed); identity alone."""
    acc = accelerator()
    if acc is None:
        return model, optimizer
    rank, world = rank_world()
    log.info("process %d of %d: %s", rank, world, acc.distributed_type)
    wrapped, opt = acc.prepare(model, optimizer)
    return wrapped, opt
