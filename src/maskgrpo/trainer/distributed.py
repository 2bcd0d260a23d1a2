"""Multi-process training through accelerate: DDP, FSDP2 or DeepSpeed ZeRO, equal to one process.

Launch with ``accelerate launch --config_file configs/accelerate/<ddp|fsdp|zero2|zero3>.yaml
-m maskgrpo.cli train ...``; a plain ``python``/``maskgrpo`` run is one process and every
helper here is then the identity (accelerate is not even imported). No process management and
no gradient engine live here: accelerate starts the processes, creates the process group and
wraps the model (``DistributedDataParallel``, ``fully_shard`` or a DeepSpeed engine).

Layout of one step with ``W`` processes. The ``N`` rollouts of a step are split into ``W``
contiguous slices (``N`` must divide by ``W``), so a group may span processes:
- rollouts: row ``(p, g)`` draws its noise from a generator seeded by
  ``(seed, step, "rollout", p, g)`` -- the tokens do not depend on ``W``;
- rewards: every process scores its slice; the reward lists are gathered so the group
  advantage uses the whole group (MaskGRPO Eq. 3);
- masks: the ``mu`` views are drawn over the gathered batch from ``(seed, step, "mask", j)``
  and each process keeps its slice -- the same masks as on one process;
- loss: normalised by the token count over all processes; the wrapper averages gradients over
  processes, so the local loss is scaled by ``W`` before backward, and the gradient is
  synchronised once per inner update (``no_sync`` on all but the last micro-batch).

Every pass through the policy goes through one prepared module (:mod:`.dist_wrap`:
``prepare``, ``view_logprobs``, ``for_sampling``, ``prepared``); checkpoints gather their
state with :mod:`.dist_state`. The collectives are accelerate's (``gather``, ``gather_object``,
``broadcast_object_list``, ``reduce``).
"""

from __future__ import annotations

import logging
import os
import weakref
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from ..masking import MaskedView
from ..rewards.combine import RewardResult
from ..rng import derive_generator

__all__ = [
    "accelerator",
    "agree",
    "agreed_stop",
    "all_sum",
    "backward",
    "broadcast",
    "clip_grad_norm",
    "describe",
    "gather_lists",
    "gather_rewards",
    "gather_rows",
    "is_main",
    "kind",
    "local_rows",
    "local_view",
    "mark_prepared",
    "prepared",
    "rank_world",
    "rollout_generator",
    "shutdown",
    "steps_in_backward",
    "sync_gradients",
]

log = logging.getLogger(__name__)

_ACCELERATOR: Any = None  # created once, on the first call of accelerator() in a launch
_SINGLE = object()

# The module each prepared policy is called through (DDP/FSDP/DeepSpeed wrapper), by policy.
_PREPARED: weakref.WeakKeyDictionary[nn.Module, nn.Module] = weakref.WeakKeyDictionary()


def prepared(policy: nn.Module) -> nn.Module:
    """The prepared module of ``policy``; ``policy`` itself when it was not prepared."""
    return _PREPARED.get(policy, policy)


def mark_prepared(policy: nn.Module, wrapped: nn.Module) -> None:
    """Record ``wrapped`` as the module ``policy`` is called through from now on."""
    _PREPARED[policy] = wrapped


# ---- the launch ----------------------------------------------------------------------------


def _launched_processes() -> int:
    """Processes of the launch as the launcher announced them (``WORLD_SIZE``), 1 without one."""
    return int(os.environ.get("WORLD_SIZE", "1") or 1)


def _flag(name: str) -> bool:
    return os.environ.get(name, "").lower() in ("1", "true", "yes")


def accelerator() -> Any:
    """The run's ``accelerate.Accelerator`` under a multi-process launch, else None.

    Created once. Fails loudly when the launch has several processes but accelerate would not
    synchronise them (the silent alternative is processes that each train their own model).
    """
    global _ACCELERATOR
    if _ACCELERATOR is None:
        processes = _launched_processes()
        if processes <= 1:
            _ACCELERATOR = _SINGLE  # a single process needs no accelerate
        else:
            _ACCELERATOR = _make_accelerator(processes)
    return None if _ACCELERATOR is _SINGLE else _ACCELERATOR


def _make_accelerator(processes: int) -> Any:
    try:
        from accelerate import Accelerator
        from accelerate.utils import DistributedType, InitProcessGroupKwargs
    except ImportError:
        raise ImportError("a multi-process launch needs accelerate: pip install accelerate") from None
    deepspeed = _flag("ACCELERATE_USE_DEEPSPEED")
    fsdp = _flag("ACCELERATE_USE_FSDP")
    handlers = []
    cpu = _flag("ACCELERATE_USE_CPU")
    if deepspeed and cpu:
        raise ValueError(
            "a DeepSpeed launch with ACCELERATE_USE_CPU=1: accelerate would drop DeepSpeed and "
            "run plain DDP; on a CPU-only machine launch without ACCELERATE_USE_CPU (maskgrpo "
            "then uses gloo and DeepSpeed's CPU accelerator)"
        )
    if not torch.cuda.is_available():
        # CPU processes talk over gloo. Without cpu=True accelerate would see no device type
        # with a backend and report one process while torch.distributed has several.
        handlers.append(InitProcessGroupKwargs(backend="gloo"))
        cpu = cpu or not deepspeed  # DeepSpeed runs on its own CPU accelerator instead
    acc = Accelerator(cpu=cpu, kwargs_handlers=handlers)
    if fsdp and acc.distributed_type == DistributedType.MULTI_CPU:
        _enable_cpu_fsdp(acc)
    expected = DistributedType.DEEPSPEED if deepspeed else DistributedType.FSDP if fsdp else None
    problem = ""
    if acc.num_processes != processes or acc.distributed_type == DistributedType.NO:
        problem = f"accelerate set up {acc.num_processes} process(es) ({acc.distributed_type})"
    elif expected is not None and acc.distributed_type != expected:
        problem = f"the launch asked for {expected} but accelerate set up {acc.distributed_type}"
    if problem:
        raise RuntimeError(
            f"{problem} while the launcher started {processes} processes; gradients would not "
            "be synchronised. Launch with `accelerate launch` and a config from "
            "configs/accelerate/ (add ACCELERATE_USE_CPU=1 for CPU processes)"
        )
    log.info("process %d of %d: %s", acc.process_index, acc.num_processes, describe_accelerator(acc))
    return acc


def _enable_cpu_fsdp(acc: Any) -> None:
    """Run accelerate's FSDP2 path on CPU processes (gloo), for tests and debugging.

    accelerate turns FSDP on only for GPU-like devices; on CPU it would silently run DDP
    instead. The plugin comes from the launch's ``FSDP_*`` variables as on GPUs.
    """
    from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

    plugin = FullyShardedDataParallelPlugin()
    if plugin.fsdp_version != 2:
        raise ValueError(
            f"fsdp_version={plugin.fsdp_version} on CPU processes: only FSDP2 runs on CPU; set "
            "fsdp_version: 2 in the accelerate config (configs/accelerate/fsdp.yaml)"
        )
    if acc.mixed_precision != "no":
        plugin.set_mixed_precision(acc.mixed_precision)
    from accelerate.state import PartialState

    acc.state.fsdp_plugin = plugin
    # accelerate re-reads the process state into AcceleratorState() on every instantiation
    PartialState().distributed_type = DistributedType.FSDP
    acc.state.distributed_type = DistributedType.FSDP
    log.warning("CPU processes: accelerate's FSDP2 path enabled on gloo (a test configuration)")


def rank_world() -> tuple[int, int]:
    """``(rank, world_size)`` of this process; ``(0, 1)`` outside a distributed launch."""
    group = torch.distributed
    if group.is_available() and group.is_initialized():
        return group.get_rank(), group.get_world_size()
    return 0, 1


def shutdown() -> None:
    """Leave the process group, if any (gloo can abort at interpreter exit otherwise)."""
    group = torch.distributed
    if group.is_available() and group.is_initialized():
        group.destroy_process_group()


def is_main() -> bool:
    return rank_world()[0] == 0


def describe_accelerator(acc: Any) -> dict[str, Any]:
    from accelerate.utils import DistributedType

    kind = acc.distributed_type
    sharding = "replicated"  # DDP: every process holds the whole model and optimizer
    if kind == DistributedType.FSDP:
        plugin = acc.state.fsdp_plugin
        if plugin.fsdp_version == 2:
            sharding = "fsdp2_" + ("full_shard" if plugin.reshard_after_forward else "shard_grad_op")
        else:
            sharding = "fsdp1_" + str(getattr(plugin.sharding_strategy, "name", "")).lower()
    elif kind == DistributedType.DEEPSPEED:
        sharding = f"zero{acc.state.deepspeed_plugin.zero_stage}"
    return {
        "world_size": acc.num_processes,
        "distributed_type": str(kind.value),
        "sharding": sharding,
    }


def describe() -> dict[str, Any]:
    """``world_size``, ``distributed_type`` (accelerate's name; ``NO`` alone) and ``sharding``."""
    acc = accelerator()
    if acc is None:
        return {"world_size": 1, "distributed_type": "NO", "sharding": "none"}
    return describe_accelerator(acc)


def kind() -> str:
    """accelerate's distributed type of the run (``NO`` on one process)."""
    acc = accelerator()
    return "NO" if acc is None else str(acc.distributed_type.value)


def steps_in_backward() -> bool:
    """True under DeepSpeed, whose engine clips and steps inside the last backward."""
    return kind() == "DEEPSPEED"


# ---- rows and collectives ------------------------------------------------------------------


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
    seed: int, step: int, *, group_size: int, rows: slice, modality: Any, device: torch.device
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


def gather_rows(t: Tensor, dim: int = 0) -> Tensor:
    """Concatenate equal-shaped ``t`` of all processes along ``dim``, in rank order."""
    if rank_world()[1] == 1:
        return t
    from accelerate.utils import gather

    gathered: Tensor = gather(t.movedim(dim, 0))  # accelerate joins along dim 0
    return gathered.movedim(0, dim).contiguous()


def gather_lists(values: Sequence[Any]) -> list[Any]:
    """The lists of all processes, concatenated in rank order."""
    if rank_world()[1] == 1:
        return list(values)
    from accelerate.utils import gather_object

    return list(gather_object(list(values)))


def broadcast(value: Any) -> Any:
    """The main process's ``value`` on every process (a picklable object; no tensors)."""
    if rank_world()[1] == 1:
        return value
    from accelerate.utils import broadcast_object_list

    return broadcast_object_list([value], from_process=0)[0]


def gather_rewards(result: RewardResult) -> RewardResult:
    """The rewards of all processes' rows, in global row order (error counts summed)."""
    if rank_world()[1] == 1:
        return result
    names = sorted(result.per_function)
    errors = gather_lists([result.errors])
    summed: dict[str, int] = {}
    for part in errors:
        for k, v in part.items():
            summed[k] = summed.get(k, 0) + v
    return RewardResult(
        gather_lists(result.total),
        {n: gather_lists(result.per_function[n]) for n in names},
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
    from accelerate.utils import reduce

    summed = reduce(torch.tensor(values, dtype=torch.float64, device=_device()), reduction="sum")
    return tuple(float(v) for v in summed)


def _max(value: int) -> int:
    """The largest ``value`` over processes (the gathered values' maximum)."""
    if rank_world()[1] == 1:
        return value
    from accelerate.utils import gather

    return int(gather(torch.tensor([value], dtype=torch.int64, device=_device())).max())


def _device() -> torch.device:
    """Where collectives take their tensors: accelerate's device (CPU under gloo)."""
    from accelerate.state import PartialState

    device: torch.device = PartialState().device
    return device


def agree(flag: bool) -> bool:
    """True on every process when it is true on any (time budgets, stop requests)."""
    return bool(_max(1 if flag else 0))


def agreed_stop(should_stop: Callable[[Any], bool] | None) -> Callable[[Any], bool]:
    """``should_stop`` asked on every process, answered for all: a signal that reached one
    process stops every process at the same inner update (its ``signum`` is shared too)."""
    if should_stop is None:
        return lambda _: False
    asked = should_stop

    def stop(state: Any) -> bool:
        local = bool(asked(state))
        code = _max(int(getattr(asked, "signum", 0) or 0) or int(local))
        if code > 1 and hasattr(asked, "signum") and not asked.signum:
            asked.signum = code  # type: ignore[attr-defined]
        return code > 0

    return stop


# ---- backward, accumulation, clipping -----------------------------------------------------


def sync_gradients(model: nn.Module, last: bool) -> None:
    """Before a micro-batch's forward: its backward synchronises gradients only when ``last``.

    The flag DDP's ``no_sync()`` sets, or FSDP2's ``set_requires_gradient_sync``; DeepSpeed is
    told at backward. The last micro-batch of every update turns synchronisation back on.
    """
    acc = accelerator()
    if acc is None or steps_in_backward():
        return
    wrapper: Any = model
    if acc.is_fsdp2:
        wrapper.set_requires_gradient_sync(last)
    elif hasattr(wrapper, "require_backward_grad_sync"):
        wrapper.require_backward_grad_sync = last


def backward(model: nn.Module, loss: Tensor, *, last: bool = True) -> None:
    """Backward of a loss normalised over all processes (the wrapper averages gradients)."""
    acc = accelerator()
    if acc is None:
        loss.backward()
        return
    scaled = loss * acc.num_processes
    if steps_in_backward():  # the engine clips and steps at the last micro-batch
        acc.deepspeed_engine_wrapped.backward(scaled, sync_gradients=last, scale_wrt_gas=False)
        return
    acc.backward(scaled)


def clip_grad_norm(model: nn.Module, max_norm: float) -> float:
    """The gradient norm over all processes before clipping; clips to ``max_norm``.

    Under DeepSpeed the engine has clipped and stepped already; this reads its norm.
    """
    acc = accelerator()
    if acc is None:
        return float(torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm))
    norm = acc.clip_grad_norm_(model.parameters(), max_norm)
    return float("nan") if norm is None else float(norm)

