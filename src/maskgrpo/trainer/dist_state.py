"""Checkpoint state under several processes: one format whatever the launch.

A checkpoint written by ``W`` processes is the checkpoint one process would write: the rollout
batch with every process's rows, the whole model state dict and the optimizer state keyed by
parameter index (``torch.optim.Optimizer.state_dict``). So a run saved under FSDP2 resumes under
DDP, DeepSpeed or on one process, and the other way round.

- DDP: every process holds the whole model and optimizer; only the rollout rows are gathered.
- FSDP2: the sharded state is gathered to the main process with torch's distributed state-dict
  helpers (``get_model_state_dict`` / ``get_optimizer_state_dict`` with ``full_state_dict``);
  a loaded optimizer state is sharded back with ``set_optimizer_state_dict``.
- DeepSpeed ZeRO-2/3: the weights are gathered with ``accelerator.get_state_dict`` and the Adam
  moments with DeepSpeed's ``safe_get_full_optimizer_state`` (and set back with
  ``safe_set_full_optimizer_state``).

Nothing here pickles tensors: :mod:`maskgrpo.trainer.checkpoint` writes what this module hands it
with safetensors and JSON. Gathering needs every process; the main process alone writes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from ..masking import MaskedView
from . import distributed as dist

__all__ = [
    "full_state",
    "global_rollout",
    "local_rollout",
    "optimizer_snapshot",
    "restore_optimizer",
]

log = logging.getLogger(__name__)

_PREFIX = "policy."  # the policy's parameters inside dist_wrap.PolicyScorer


# ---- the rollout batch: gathered to save, sliced on load ---------------------------------


def global_rollout(rollout: Any) -> Any:
    """``rollout`` with the rows of every process (in rank order); itself on one process."""
    if rollout is None or dist.rank_world()[1] == 1:
        return rollout
    rows = dist.gather_rows
    return dataclasses.replace(
        rollout,
        prompts=dist.gather_lists(rollout.prompts),
        completions=dist.gather_lists(rollout.completions),
        sequences=rows(rollout.sequences),
        advantages=rows(rollout.advantages),
        base_mask=rows(rollout.base_mask),
        views=[MaskedView(rows(v.noisy_ids, 1), rows(v.scored, 1)) for v in rollout.views],
        old_logp=[rows(t) for t in rollout.old_logp],
        ref_logp=[None if t is None else rows(t) for t in rollout.ref_logp],
    )


def local_rollout(rollout: Any) -> Any:
    """This process's rows of a rollout saved with every process's rows."""
    if rollout is None or dist.rank_world()[1] == 1:
        return rollout
    mine = dist.local_rows(rollout.sequences.shape[0])
    return dataclasses.replace(
        rollout,
        prompts=rollout.prompts[mine],
        completions=rollout.completions[mine],
        sequences=rollout.sequences[mine],
        advantages=rollout.advantages[mine],
        base_mask=rollout.base_mask[mine],
        views=[dist.local_view(v, mine) for v in rollout.views],
        old_logp=[t[mine] for t in rollout.old_logp],
        ref_logp=[None if t is None else t[mine] for t in rollout.ref_logp],
    )


# ---- optimizer state across prepare --------------------------------------------------------


def _inner_optimizer(optimizer: Any) -> torch.optim.Optimizer:
    while hasattr(optimizer, "optimizer"):  # accelerate's AcceleratedOptimizer
        optimizer = optimizer.optimizer
    out: torch.optim.Optimizer = optimizer
    return out


_WRAPPER_PARTS = ("_checkpoint_wrapped_module.", "_orig_mod.", "_fsdp_wrapped_module.")


def _names(wrapped: nn.Module, optimizer: torch.optim.Optimizer) -> list[str]:
    """The name of each parameter of ``optimizer``, in its order, without the parts wrappers
    add (activation checkpointing, ``torch.compile``), as torch's state-dict helpers name them."""
    by_id = {}
    for name, p in wrapped.named_parameters():
        for part in _WRAPPER_PARTS:
            name = name.replace(part, "")
        by_id[id(p)] = name
    return [by_id[id(p)] for g in optimizer.param_groups for p in g["params"]]


def optimizer_snapshot(optimizer: torch.optim.Optimizer, model: nn.Module) -> dict[str, Any] | None:
    """The loaded state of ``optimizer`` (a resumed run) before a sharding wrapper replaces the
    parameters it is keyed by; None when there is none or the parameters stay (DDP)."""
    if not optimizer.state or dist.describe()["sharding"] in ("none", "replicated"):
        return None
    return optimizer.state_dict()


def restore_optimizer(saved: dict[str, Any] | None, wrapped: nn.Module, optimizer: Any) -> None:
    """Load ``saved`` (parameter-index keyed, whole tensors) into the prepared ``optimizer``."""
    if saved is None:
        return
    kind = dist.describe()["distributed_type"]
    if kind == "FSDP":
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            set_optimizer_state_dict,
        )

        inner = _inner_optimizer(optimizer)
        inner.state.clear()  # keyed by the parameters the sharded ones replaced
        by_name = _by_name(saved, _names(wrapped, inner))
        options = StateDictOptions(full_state_dict=True)
        set_optimizer_state_dict(wrapped, inner, by_name, options=options)
    elif kind == "DEEPSPEED":
        _deepspeed_set_optimizer(saved, wrapped)
    log.info("optimizer state carried over onto the %s parameters", kind)


def _by_name(state: dict[str, Any], names: list[str]) -> dict[str, Any]:
    return {
        "state": {names[int(i)]: v for i, v in state["state"].items()},
        "param_groups": [
            {**g, "params": [names[int(i)] for i in g["params"]]} for g in state["param_groups"]
        ],
    }


def _by_index(state: dict[str, Any], names: list[str]) -> dict[str, Any]:
    index = {n: i for i, n in enumerate(names)}
    return {
        "state": {index[n]: v for n, v in state["state"].items()},
        "param_groups": [
            {**g, "params": [index[n] for n in g["params"]]} for g in state["param_groups"]
        ],
    }


# ---- gathered state for writing ------------------------------------------------------------


@contextlib.contextmanager
def full_state(policy: nn.Module, optimizer: Any = None) -> Iterator[None]:
    """Inside the block, on the main process, ``policy.state_dict()`` (and ``optimizer``'s) are
    the whole state, whatever the sharding. Every process must enter it (it gathers)."""
    wrapped = dist.prepared(policy)
    kind = dist.describe()["distributed_type"]
    if wrapped is policy or kind not in ("FSDP", "DEEPSPEED"):
        yield
        return
    if kind == "FSDP":
        model_state, optim_state = _fsdp_full_state(wrapped, optimizer)
    else:
        model_state, optim_state = _deepspeed_full_state(wrapped, optimizer)
    patched: list[Any] = []
    if dist.is_main():
        patched.append(_patch_state_dict(policy, model_state))
        if optimizer is not None:
            patched.append(_patch_state_dict(optimizer, optim_state))
    try:
        yield
    finally:
        for obj in patched:
            del obj.__dict__["state_dict"]


def _patch_state_dict(obj: Any, state: dict[str, Any]) -> Any:
    def state_dict(*args: Any, **kwargs: Any) -> dict[str, Any]:
        return state

    object.__setattr__(obj, "state_dict", state_dict)
    return obj


def _strip(state: dict[str, Any]) -> dict[str, Any]:
    """Policy keys, and tensors of their own (on CPU processes the gathered tensors can alias
    the buffers FSDP frees when it reshards)."""
    return {
        k.removeprefix(_PREFIX): v.detach().clone() if torch.is_tensor(v) else v
        for k, v in state.items()
    }


def _fsdp_full_state(wrapped: nn.Module, optimizer: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        get_model_state_dict,
        get_optimizer_state_dict,
    )

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    model_state = _strip(get_model_state_dict(wrapped, options=options))
    optim_state: dict[str, Any] = {}
    if optimizer is not None:
        inner = _inner_optimizer(optimizer)
        names = _names(wrapped, inner)
        full = get_optimizer_state_dict(wrapped, inner, options=options)
        if dist.is_main():
            optim_state = _by_index(full, names)
    return model_state, optim_state


# ---- DeepSpeed -----------------------------------------------------------------------------

_ADAM_KEYS = ("exp_avg", "exp_avg_sq")


def _engine(wrapped: nn.Module) -> Any:
    acc = dist.accelerator()
    return acc.deepspeed_engine_wrapped.engine if acc is not None else None


def _policy_params(wrapped: nn.Module) -> list[nn.Parameter]:
    scorer: Any = getattr(wrapped, "module", wrapped)
    return list(scorer.policy.parameters())


def _deepspeed_full_state(
    wrapped: nn.Module, optimizer: Any
) -> tuple[dict[str, Any], dict[str, Any]]:
    acc = dist.accelerator()
    gathered = acc.get_state_dict(wrapped)  # ZeRO-3: consolidated on the main process only
    model_state = _strip(gathered or {})
    optim_state: dict[str, Any] = {}
    if optimizer is None:
        return model_state, optim_state
    from deepspeed.utils import safe_get_full_optimizer_state

    params = _policy_params(wrapped)
    step = _deepspeed_step(wrapped)
    state: dict[int, dict[str, Any]] = {}
    for i, p in enumerate(params):
        if not p.requires_grad:
            continue
        values = {k: safe_get_full_optimizer_state(p, k) for k in _ADAM_KEYS}  # collective
        if all(v is not None for v in values.values()) and step is not None:
            state[i] = {"step": step.clone()}
            state[i].update({k: v.detach().to("cpu").clone() for k, v in values.items()})
    groups = _inner_optimizer(optimizer).param_groups
    if len(groups) != 1:
        raise ValueError(f"{len(groups)} optimizer parameter groups under DeepSpeed; expected 1")
    group = {k: v for k, v in groups[0].items() if k != "params"}
    optim_state = {"state": state, "param_groups": [{**group, "params": list(range(len(params)))}]}
    return model_state, optim_state


def _deepspeed_step(wrapped: nn.Module) -> torch.Tensor | None:
    """Adam's step count inside the ZeRO optimizer (the same for every flat partition)."""
    engine = _engine(wrapped)
    inner = getattr(engine.optimizer, "optimizer", None)
    for st in getattr(inner, "state", {}).values():
        if "step" in st:
            step = st["step"]
            return step.detach().to("cpu").clone() if torch.is_tensor(step) else torch.tensor(step)
    return None


def _deepspeed_set_optimizer(saved: dict[str, Any], wrapped: nn.Module) -> None:
    """Load Adam moments and step count into a fresh ZeRO optimizer (before its first step).

    DeepSpeed creates Adam's state at the first step; the state of each flat fp32 partition is
    created here (zeros) so that ``safe_set_full_optimizer_state`` can fill it.
    """
    from deepspeed.utils import safe_set_full_optimizer_state

    params = _policy_params(wrapped)
    steps = {float(st["step"]) for st in saved["state"].values()}
    if len(steps) != 1:
        raise ValueError(
            f"the checkpoint's parameters were stepped {sorted(steps)} times; "
            "DeepSpeed keeps one step count for all"
        )
    (step,) = steps
    zero = _engine(wrapped).optimizer
    flats = getattr(zero, "single_partition_of_fp32_groups", None)  # ZeRO-1/2
    if flats is None:
        flats = getattr(zero, "fp32_partitioned_groups_flat", None)  # ZeRO-3
    if flats is None or not hasattr(zero, "optimizer"):
        raise ValueError(
            f"cannot load optimizer state into {type(zero).__name__} of this DeepSpeed version; "
            "resume the checkpoint under DDP or FSDP (configs/accelerate/ddp.yaml, fsdp.yaml)"
        )
    for flat in flats:
        zero.optimizer.state[flat] = {
            "step": torch.tensor(step, dtype=torch.float32),
            **{k: torch.zeros_like(flat) for k in _ADAM_KEYS},
        }
    link = getattr(zero, "_lazy_init_hp_params_optimizer_state", None)
    if callable(link):
        link()  # ZeRO-1/2: point each parameter's fragment at the new state
    for i, p in enumerate(params):
        st = saved["state"].get(i)
        if st is not None and p.requires_grad:
            for k in _ADAM_KEYS:
                safe_set_full_optimizer_state(p, st[k].to(p.device), k)
