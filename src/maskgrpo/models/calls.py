"""The one way the sampler and the log-prob code call a model: :func:`model_call`.

``model_call(model)`` looks through the wrappers a policy may sit in (a peft adapter, the
adapter-disabled reference, a DDP/FSDP/DeepSpeed wrapper), finds the :class:`Binding` attached
at load time (or makes one from the model's config) and returns a :class:`ModelCall` with

- ``hidden_states(ids, attention)`` -> ``(B, L, D)``, aligned so position ``i`` predicts
  token ``i`` (Dream's shift applied);
- ``head(hidden)`` -> logits ``(..., V)``, applied only where the caller needs them;
- ``logits(ids, attention)`` = ``head(hidden_states(ids, attention))``;
- ``padding(clean_ids)``: the key-padding mask of left-padded rows (their leading pad tokens),
  for families whose padding is inferred;
- ``vocab_limit``: ids at or above it are not tokens of the tokenizer (never sampled);
- ``block_cache(keep, ...)``: a :class:`~maskgrpo.models.layers.BlockCache` for the sampler's
  block KV cache, running the family's layers natively on the same modules (None when the
  family has no native layers, or under a distributed wrapper).

Padding is exact for every family: a row computes what it computes alone, unpadded. Families
with position ids keep rows left-padded (Dream); the others see them right-padded, so the real
tokens keep positions ``0..n-1`` (LLaDA, MMaDA); a model whose code ignores the mask (found by
the probe of :func:`bind_family`) runs each group of rows with the same padding once, with the
padding cut off.

When the split into hidden states and head is unavailable (the probe failed, or the model sits
in a distributed wrapper whose ``forward`` must run for gradient synchronisation), the "hidden
states" are the forward's full logits and ``head`` is the identity.

``hidden_states`` and ``block_cache`` are the only places that run the trunk.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from .family import Binding, Family, Head, Trunk, leading_padding, tokenizer_size
from .layers import BlockCache
from .registry import TINY, detect_family

__all__ = ["ModelCall", "base_model", "bind_family", "model_call"]

log = logging.getLogger(__name__)

_WRAPPERS = (
    "DistributedDataParallel",
    "DataParallel",
    "FullyShardedDataParallel",
    "DeepSpeedEngine",
    "FSDPModule",
)


def _distributed(model: nn.Module) -> bool:
    return any(c.__name__ in _WRAPPERS for c in type(model).__mro__)


def _unwrap(model: nn.Module) -> tuple[nn.Module, bool]:
    """``(the model under every wrapper, whether a distributed wrapper was passed)``.

    Wrappers looked through: the adapter-disabled reference (``maskgrpo_reference_of``), a
    wrapper that names its policy ``maskgrpo_inner`` (and passes keyword arguments through its
    ``forward``), DDP/DeepSpeed (``module``), FSDP, peft (``get_base_model``).
    """
    distributed = False
    for _ in range(16):  # a chain of wrappers, never a cycle
        distributed |= _distributed(model)
        inner = None
        for name in ("maskgrpo_reference_of", "maskgrpo_inner"):
            inner = inner or getattr(model, name, None)
        if inner is None and _distributed(model):
            inner = getattr(model, "module", None)
        if inner is None:
            get_base = getattr(model, "get_base_model", None)
            inner = get_base() if callable(get_base) else None
        if not isinstance(inner, nn.Module) or inner is model:
            return model, distributed
        model = inner
    raise ValueError(f"too many nested wrappers around {type(model).__name__}")


def base_model(model: nn.Module) -> nn.Module:
    """The model under every wrapper: reference view, distributed wrappers, peft."""
    return _unwrap(model)[0]


def _config_dict(model: nn.Module) -> dict[str, Any] | None:
    config = getattr(model, "config", None)
    to_dict = getattr(config, "to_dict", None)
    return to_dict() if callable(to_dict) else None


def _default_binding(base: nn.Module) -> Binding:
    """A binding without probes, for a model that was not loaded by :func:`bind_family`."""
    config = _config_dict(base)
    if config is None:
        return Binding(TINY, lean=getattr(base, "maskgrpo_head_split", True) is not False)
    pad = config.get("pad_token_id")
    return Binding(
        detect_family(config),
        pad_id=pad if isinstance(pad, int) else None,
        lean=getattr(base, "maskgrpo_head_split", True) is not False,
    )


@dataclass
class ModelCall:
    """``model`` bound to its family; see the module docstring."""

    family: Family
    binding: Binding
    outer: nn.Module  # what a full forward calls (wrappers included)
    trunk: Trunk | None  # None: the forward's full logits stand in for hidden states
    head_fn: Head | None
    context: Callable[[], contextlib.AbstractContextManager[Any]]
    base: nn.Module | None = None  # the model under every wrapper (None: unknown)

    @property
    def lean(self) -> bool:
        return self.trunk is not None

    @property
    def vocab_limit(self) -> int | None:
        return self.binding.vocab_limit

    def padding(self, clean_ids: Tensor) -> Tensor | None:
        """Key padding ``(B, L)`` of left-padded ``clean_ids`` (None when nothing is padding)."""
        pad = self.binding.pad_id
        if not self.family.infer_padding or pad is None:
            return None
        return leading_padding(clean_ids, pad)

    def hidden_states(self, ids: Tensor, attention: Tensor | None = None) -> Tensor:
        """``(B, L, D)`` (or ``(B, L, V)`` logits when not lean); ``attention`` = key padding."""
        keep = _left_padding(attention, ids)
        with self.context():
            if keep is None:
                return self._aligned(ids, None)
            if not self.binding.honours_padding:
                return self._grouped(ids, keep)
            if self.family.roll_padding:
                return self._rolled(ids, keep)
            return self._aligned(ids, keep)

    def head(self, hidden: Tensor) -> Tensor:
        """Logits of ``hidden`` rows (any leading shape)."""
        if self.head_fn is None:
            return hidden
        with self.context():
            return self.head_fn(hidden)

    def logits(self, ids: Tensor, attention: Tensor | None = None) -> Tensor:
        """``(B, L, V)`` logits, position ``i`` predicting token ``i``."""
        return self.head(self.hidden_states(ids, attention))

    def block_cache(self, ids: Tensor, attention: Tensor | None, mode: str) -> BlockCache | None:
        """A block KV cache for sequences like ``ids`` ``(B, L)`` with key padding ``attention``.

        None when the model cannot take one: its family has no native layers for it, the split
        into hidden states and head is unavailable, or it sits in a distributed wrapper (whose
        ``forward`` must run). Its hidden states go through :meth:`head` like
        :meth:`hidden_states`'.
        """
        if self.trunk is None or self.base is None:
            return None
        layers = self.family.layers(self.base)
        if layers is None:
            return None
        return BlockCache(
            layers,
            _left_padding(attention, ids),
            batch=ids.shape[0],
            length=ids.shape[1],
            device=ids.device,
            mode=mode,
            shift=self.family.shift,
            context=self.context,
        )

    def _aligned(self, ids: Tensor, keep: Tensor | None) -> Tensor:
        if self.trunk is not None:
            out = self.trunk(ids, keep)
        else:
            out = self.outer(input_ids=ids, **self.family.forward_kwargs(keep)).logits
        if self.family.shift:  # Dream: the output at i - 1 predicts token i
            out = torch.cat([out[:, :1], out[:, :-1]], dim=1)
        return out

    def _rolled(self, ids: Tensor, keep: Tensor) -> Tensor:
        """Run right-padded (real tokens at positions ``0..n-1``), return in the caller's layout."""
        length = ids.shape[1]
        pads = (~keep).sum(dim=1, keepdim=True)  # (B, 1)
        cols = torch.arange(length, device=ids.device)
        there = (cols + pads) % length  # rolled column j holds original column there[b, j]
        out = self._aligned(ids.gather(1, there), keep.gather(1, there))
        back = ((cols - pads) % length).unsqueeze(-1).expand(-1, -1, out.shape[-1])
        return out.gather(1, back)

    def _grouped(self, ids: Tensor, keep: Tensor) -> Tensor:
        """One unpadded pass per padding width; padding positions of the result are zero."""
        pads = (~keep).sum(dim=1)  # (B,)
        out: Tensor | None = None
        for width in sorted(set(pads.tolist())):
            rows = (pads == width).nonzero().squeeze(1)
            part = self._aligned(ids[rows, width:], None)  # (R, L - width, D)
            if out is None:
                out = part.new_zeros((*ids.shape, part.shape[-1]))
            cols = torch.arange(width, ids.shape[1], device=ids.device)
            out = out.index_put((rows[:, None], cols[None]), part)
        assert out is not None
        return out


def _left_padding(attention: Tensor | None, ids: Tensor) -> Tensor | None:
    """``attention`` as a bool key mask, None when it hides nothing; it must be left padding."""
    if attention is None:
        return None
    keep = attention.bool()
    if keep.shape != ids.shape:
        raise ValueError(
            f"attention of shape {tuple(keep.shape)} must match ids {tuple(ids.shape)}"
        )
    if bool(keep.all()):
        return None
    pads = (~keep).sum(dim=1, keepdim=True)
    if not torch.equal(keep, torch.arange(ids.shape[1], device=ids.device) >= pads):
        raise ValueError(
            "attention must mark left padding only (zeros before the first real token of a "
            "row, ones after); pad prompts on the left"
        )
    return keep


def model_call(model: nn.Module, *, lean: bool = True) -> ModelCall:
    """``model`` (possibly wrapped) bound to its family. ``lean=False`` forces full logits."""
    context: Callable[[], contextlib.AbstractContextManager[Any]] = contextlib.nullcontext
    owner = getattr(model, "maskgrpo_reference_of", None)
    if isinstance(owner, nn.Module):  # the adapter-disabled reference of a LoRA policy
        model, context = owner, owner.disable_adapter  # type: ignore[assignment]
    base, distributed = _unwrap(model)
    binding = getattr(base, "maskgrpo_binding", None)
    if not isinstance(binding, Binding):
        # a transformers model built or loaded by the caller: bound (and probed) on first use
        hf = _config_dict(base) is not None and not distributed
        binding = bind_family(base) if hf else _default_binding(base)
    family = binding.family
    trunk = head = None
    if lean and binding.lean and not distributed:  # a distributed wrapper's forward must run
        trunk, head = family.trunk(base), family.head(base)
        if trunk is None or head is None:
            trunk = head = None
    return ModelCall(family, binding, model, trunk, head, context, base)


def _probe_ids(binding: Binding, length: int, device: torch.device) -> Tensor:
    """``(1, length)`` ordinary token ids (no pad id) for the load-time probes."""
    avoid = {binding.pad_id}
    ids = [i for i in range(3, 3 + length + len(avoid) + 2) if i not in avoid][:length]
    return torch.tensor([ids], device=device)


def _same(a: Tensor, b: Tensor) -> bool:
    """Equal up to rounding: 1e-3 in float32, 5e-2 (relative and absolute) in 16-bit dtypes."""
    tol = 1e-3 if a.dtype in (torch.float32, torch.float64) else 5e-2
    return bool(torch.allclose(a.float(), b.float(), rtol=tol, atol=tol))


def _probe_lean(model: nn.Module, ids: Tensor) -> bool:
    """Whether ``head(hidden_states)`` reproduces the forward's (aligned) logits."""
    call = model_call(model)
    if not call.lean:
        return False
    try:
        split = call.logits(ids)
    except (AttributeError, TypeError, ValueError, KeyError, RuntimeError) as err:
        log.info(
            "hidden states of %s unavailable (%s); log-probs use full logits", call.family, err
        )
        return False
    full = model_call(model, lean=False).logits(ids)
    if not _same(split, full):
        log.info("%s: head(hidden states) differs from the forward; using full logits", call.family)
        return False
    return True


def _probe_padding(model: nn.Module, ids: Tensor, pad_id: int) -> bool:
    """Whether key padding makes a padded row compute what it computes alone."""
    call = model_call(model)
    alone = call.logits(ids)
    padded = torch.cat([ids.new_full((1, 3), pad_id), ids], dim=1)
    keep = torch.arange(padded.shape[1], device=ids.device) >= 3
    try:
        got = call.logits(padded, keep[None])[:, 3:]
    except (AttributeError, TypeError, ValueError, KeyError, RuntimeError) as err:
        log.info("%s rejects its padding mask (%s); rows are grouped by padding", call.family, err)
        return False
    first = 1 if call.family.shift else 0  # Dream's first real position reads a pad output
    visible = call.logits(padded, None)[:, 3:]  # the pads seen: what ignoring the mask gives
    masked_gap = float((got - alone)[:, first:].float().abs().max())
    visible_gap = float((visible - alone)[:, first:].float().abs().max())
    # masked rows must match the row alone far better than rows that see their pads (a relative
    # test, so 16-bit rounding does not pass for an ignored mask or fail an honoured one)
    return masked_gap <= 1e-4 or masked_gap < 0.1 * visible_gap


def bind_family(
    model: nn.Module,
    *,
    family: Family | None = None,
    pad_id: int | None = None,
    tokenizer: Any = None,
) -> Binding:
    """Attach a :class:`Binding` to ``model`` (its base under wrappers), probing how it behaves.

    ``family`` defaults to the one detected from ``model.config``; ``pad_id`` to the config's.
    With ``tokenizer``, ids it cannot decode (embedding rows beyond it) are never sampled.
    Probes (each one short forward pass): whether the trunk/head split reproduces the forward,
    and whether a padding mask makes padded rows exact (else rows are grouped by padding).
    :func:`maskgrpo.models.hf.load_hf_policy` calls it; call it for a model you load yourself.
    """
    base = base_model(model)
    default = _default_binding(base)
    limit = None if tokenizer is None else tokenizer_size(tokenizer)
    embedding: Any = getattr(base, "get_input_embeddings", None)
    rows = embedding().weight.shape[0] if callable(embedding) else None
    binding = Binding(
        family or default.family,
        pad_id=pad_id if pad_id is not None else default.pad_id,
        vocab_limit=limit if limit is not None and rows is not None and limit < rows else None,
        lean=default.lean,
    )
    binding.family.prepare(base)
    base.maskgrpo_binding = binding  # type: ignore[assignment]
    device = next(base.parameters()).device
    ids = _probe_ids(binding, 6, device)
    with torch.no_grad():
        binding.lean = _probe_lean(base, ids)
        if binding.pad_id is not None and binding.family.infer_padding:
            binding.honours_padding = _probe_padding(base, ids, binding.pad_id)
    log.info("model family: %s", binding.describe())
    return binding
