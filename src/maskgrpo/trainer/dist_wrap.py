"""Wrapping the policy for accelerate: one prepared module for every pass, FSDP block wrapping.

Every pass through the policy (rollouts, evaluation, old/reference/current log-probs) goes
through one module, :class:`PolicyScorer`, prepared by accelerate (``DistributedDataParallel``,
FSDP2's ``fully_shard`` or a DeepSpeed engine): the wrapper then sees each pass (FSDP gathers the
shards it needs, DDP registers the backward), and the log-probs keep the policy's trunk/head
split inside it. Every process makes the same passes: a slice with nothing to score still runs
the model, so the collectives of a sharded model stay in step. On one process nothing is wrapped.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

import torch
from torch import Tensor, nn

from ..logprobs import token_logprobs
from ..logprobs import view_logprobs as _plain_view_logprobs
from ..lora import is_lora
from ..masking import MaskedView
from . import dist_state
from . import distributed as dist

__all__ = [
    "BLOCK_CLASSES",
    "PolicyScorer",
    "block_classes",
    "for_sampling",
    "prepare",
    "prepared",
    "view_logprobs",
]

log = logging.getLogger(__name__)

# Transformer-block classes FSDP wraps one by one, per published model class, used when the
# loaded model does not name them itself (``_no_split_modules``) or names classes it never
# instantiates (LLaDA lists its abstract ``LLaDABlock``). Only names found in the model count.
BLOCK_CLASSES: dict[str, tuple[str, ...]] = {
    "LLaDAModelLM": ("LLaDALlamaBlock", "LLaDASequentialBlock"),
    "MMadaModelLM": ("LLaDALlamaBlock", "LLaDASequentialBlock"),
    "DreamModel": ("DreamDecoderLayer",),
    "LlamaForCausalLM": ("LlamaDecoderLayer",),
    "ModernBertForMaskedLM": ("ModernBertEncoderLayer",),
    "TinyDiffusionLM": ("_Block",),
}


# ---- FSDP wrapping -------------------------------------------------------------------------


def _base(model: nn.Module) -> nn.Module:
    get_base = getattr(model, "get_base_model", None)  # peft
    return get_base() if callable(get_base) else model


def block_classes(model: nn.Module) -> list[str]:
    """Names of the transformer-block classes of ``model`` (for FSDP's per-block wrapping).

    The model's own ``_no_split_modules``, then :data:`BLOCK_CLASSES`, keeping only classes the
    model instantiates; failing both, the class of the largest ``nn.ModuleList``'s elements.
    """
    base = _base(model)
    present = {type(m).__name__ for m in base.modules()}
    named = list(getattr(base, "_no_split_modules", None) or [])
    named += BLOCK_CLASSES.get(type(base).__name__, ())
    found = [n for n in dict.fromkeys(named) if n in present]
    if found:
        return found
    lists = [m for m in base.modules() if isinstance(m, nn.ModuleList) and len(m) > 1]
    if not lists:
        return []
    blocks = max(lists, key=len)
    kinds = {type(b).__name__ for b in blocks}
    return sorted(kinds) if len(kinds) == 1 else []


def _configure_fsdp(acc: Any, policy: nn.Module) -> None:
    """Name the policy's block classes for transformer-based wrapping unless the config did."""
    from torch.distributed.fsdp.wrap import transformer_auto_wrap_policy

    plugin = acc.state.fsdp_plugin
    if plugin.auto_wrap_policy is not transformer_auto_wrap_policy:
        return
    present = {type(m).__name__ for m in policy.modules()}
    names = plugin.transformer_cls_names_to_wrap
    if names:
        missing = [n for n in names if n not in present]
        if missing:
            raise ValueError(
                f"fsdp_transformer_layer_cls_to_wrap names {missing}, which "
                f"{type(_base(policy)).__name__} does not contain; use "
                f"{block_classes(policy) or 'a class of the model'} or leave it unset"
            )
        return
    found = block_classes(policy)
    if not found:
        raise ValueError(
            f"cannot find the transformer blocks of {type(_base(policy)).__name__} for FSDP; set "
            "fsdp_transformer_layer_cls_to_wrap in the accelerate config"
        )
    plugin.transformer_cls_names_to_wrap = found
    log.info("FSDP wraps each %s", " / ".join(found))


# ---- one entry point for every pass --------------------------------------------------------


class PolicyScorer(nn.Module):
    """The policy behind one ``forward``: rollouts (``targets=None``) and view log-probs.

    ``forward(ids)`` is ``policy(ids)``. ``forward(noisy_ids, targets=, scored=)`` returns
    :func:`maskgrpo.logprobs.view_logprobs` of the policy (``reference=True``: with a LoRA
    adapter switched off), except that a slice with no scored position still runs the model,
    with a zero that keeps every parameter in the graph, so all processes make the same passes.
    """

    def __init__(self, policy: nn.Module) -> None:
        super().__init__()
        self.policy = policy
        self._no_split_modules = block_classes(policy)
        self.train(policy.training)

    @property
    def maskgrpo_inner(self) -> nn.Module:
        """The policy, for :func:`maskgrpo.models.calls.model_call` (its family, padding, alignment)."""
        return self.policy

    def get_input_embeddings(self) -> nn.Module | None:
        get = getattr(self.policy, "get_input_embeddings", None)
        return get() if callable(get) else None

    def get_output_embeddings(self) -> nn.Module | None:
        get = getattr(self.policy, "get_output_embeddings", None)
        return get() if callable(get) else None

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        *,
        targets: Tensor | None = None,
        scored: Tensor | None = None,
        micro_batch_size: int | None = None,
        vocab_range: tuple[int, int] | None = None,
        reference: bool = False,
        **model_kwargs: Any,
    ) -> Any:
        if targets is None or scored is None:  # a full forward: the family's keyword arguments
            if attention_mask is not None:  # (padding mask, position ids) pass through
                model_kwargs["attention_mask"] = attention_mask
            return self.policy(input_ids=input_ids, **model_kwargs)
        off = getattr(self.policy, "disable_adapter", None)
        ctx = off() if reference and callable(off) else contextlib.nullcontext()
        with ctx:
            return _aligned_view_logprobs(
                self.policy, MaskedView(input_ids, scored), targets, micro_batch_size, vocab_range
            )


def _aligned_view_logprobs(
    model: nn.Module,
    view: MaskedView,
    targets: Tensor,
    micro_batch_size: int | None,
    vocab_range: tuple[int, int] | None,
) -> tuple[Tensor, Tensor]:
    """:func:`maskgrpo.logprobs.view_logprobs` (same slices, same sums) with no skipped pass."""
    batch = targets.shape[0]
    step = micro_batch_size or batch
    logp = torch.zeros(targets.shape, dtype=torch.float32, device=targets.device)
    for v in range(view.num_views):
        parts = []
        for s in range(0, batch, step):
            ids, scored = view.noisy_ids[v, s : s + step], view.scored[v, s : s + step]
            if bool(scored.any()):
                part = token_logprobs(
                    model, ids, targets[s : s + step], scored, vocab_range=vocab_range
                )
            else:
                logits = model(ids).logits
                zero = torch.zeros(scored.shape, dtype=torch.float32, device=ids.device)
                part = zero + torch.where(torch.zeros((), dtype=torch.bool), logits.sum(), 0.0)
            parts.append(part)
        logp = logp + torch.cat(parts)
    return logp, view.scored.any(dim=0)


class _ReferenceScorer(nn.Module):
    """The LoRA reference behind a prepared scorer: the same passes with the adapter off."""

    _scorer: Any

    def __init__(self, scorer: nn.Module) -> None:
        super().__init__()
        object.__setattr__(self, "_scorer", scorer)  # not registered: shares the weights

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self._scorer(*args, reference=True, **kwargs)


def _scorer(model: nn.Module) -> PolicyScorer | None:
    inner = getattr(model, "module", model)  # DDP and DeepSpeed keep the module in .module
    return inner if isinstance(inner, PolicyScorer) else None


def view_logprobs(
    model: nn.Module,
    view: MaskedView,
    targets: Tensor,
    *,
    micro_batch_size: int | None = None,
    vocab_range: tuple[int, int] | None = None,
) -> tuple[Tensor, Tensor]:
    """:func:`maskgrpo.logprobs.view_logprobs`, through the wrapper when ``model`` is prepared."""
    if isinstance(model, _ReferenceScorer) or _scorer(model) is not None:
        out: tuple[Tensor, Tensor] = model(
            view.noisy_ids,
            targets=targets,
            scored=view.scored,
            micro_batch_size=micro_batch_size,
            vocab_range=vocab_range,
        )
        return out
    return _plain_view_logprobs(
        model, view, targets, micro_batch_size=micro_batch_size, vocab_range=vocab_range
    )


class _Sampling(nn.Module):
    """A prepared module for the samplers: called outside inference mode, without gradients.

    A sharded model gathers its weights into buffers it reuses in the training passes; made
    under the samplers' ``torch.inference_mode`` they could not be used by autograd afterwards.
    """

    def __init__(self, wrapped: nn.Module) -> None:
        super().__init__()
        self.wrapped = wrapped
        self.train(wrapped.training)

    @property
    def maskgrpo_inner(self) -> nn.Module:
        """The prepared wrapper, so :func:`maskgrpo.models.calls.model_call` finds the policy's family
        and runs full forwards through the wrapper (which sharded weights need)."""
        return self.wrapped

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        with torch.inference_mode(False), torch.no_grad():
            return self.wrapped(*args, **kwargs)


def for_sampling(model: nn.Module) -> nn.Module:
    """What to hand a sampler (rollouts, evaluation) for ``model``: a prepared policy's wrapper
    (which every process must then call alike), or ``model`` itself on one process."""
    wrapped = dist.prepared(model)
    if _scorer(wrapped) is None:
        return model
    return _Sampling(wrapped)


def prepared(policy: nn.Module) -> nn.Module:
    """The prepared module of ``policy``; ``policy`` itself when it was not prepared."""
    return dist.prepared(policy)


def prepare(model: nn.Module, parts: Any, max_grad_norm: float = 0.0) -> nn.Module:
    """Wrap ``model`` and ``parts.optimizer`` (and shard ``parts.ref_model``) for the launch.

    Returns the module the loop calls (the policy itself on one process). Idempotent: a policy
    prepared before (e.g. to load a checkpoint) returns its wrapper again. Optimizer state
    already loaded (a resumed run) is carried over onto the sharded parameters.
    """
    acc = dist.accelerator()
    if acc is None:
        return model
    if dist.prepared(model) is not model:
        return dist.prepared(model)
    kind = dist.kind()
    if kind == "FSDP":
        _configure_fsdp(acc, model)
    if kind == "DEEPSPEED":
        _configure_deepspeed(acc, max_grad_norm)
    saved = dist_state.optimizer_snapshot(parts.optimizer, model)
    ref = parts.ref_model
    lora_ref = ref is not None and is_lora(model)  # the reference is the adapter switched off
    wrapped, parts.optimizer = acc.prepare(PolicyScorer(model), parts.optimizer)
    dist_state.restore_optimizer(saved, wrapped, parts.optimizer)
    if ref is not None and kind in ("FSDP", "DEEPSPEED") and lora_ref:
        parts.ref_model = _ReferenceScorer(wrapped)  # the policy's own sharded weights
    elif ref is not None and kind == "FSDP":
        from accelerate.utils.fsdp_utils import fsdp2_prepare_model

        parts.ref_model = fsdp2_prepare_model(acc, PolicyScorer(ref))
    dist.mark_prepared(model, wrapped)
    log.info("prepared %s for %s", type(model).__name__, dist.describe_accelerator(acc))
    return wrapped


def _configure_deepspeed(acc: Any, max_grad_norm: float) -> None:
    """Fill what accelerate cannot infer without a dataloader, and clip as maskgrpo is told."""
    config = acc.state.deepspeed_plugin.deepspeed_config
    if not isinstance(config.get("train_micro_batch_size_per_gpu"), int):
        config["train_micro_batch_size_per_gpu"] = 1  # bookkeeping only: no dataloader here
    clip = config.get("gradient_clipping")
    if clip not in (None, "auto", max_grad_norm):
        log.info("DeepSpeed gradient_clipping=%s replaced by max_grad_norm=%s", clip, max_grad_norm)
    config["gradient_clipping"] = float(max(max_grad_norm, 0.0))  # clipped inside its step
