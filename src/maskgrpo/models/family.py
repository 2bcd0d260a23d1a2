"""Model families: what differs between LLaDA, Dream, MMaDA and the rest, in one small object.

A :class:`Family` is chosen once, at load time, from the config's ``model_type``,
``architectures`` and ``auto_map`` (or named explicitly), and owns every convention in which
the published model families differ:

- **logit alignment**: ``shift = True`` when the output at position ``i - 1`` predicts token
  ``i`` (Dream); the rest of the package always sees logits where position ``i`` predicts
  token ``i``;
- **padding**: how a key-padding mask reaches the model (:meth:`Family.forward_kwargs` for the
  public ``forward``, :meth:`Family.trunk` for the hidden states), and whether padded rows are
  presented right-padded so every row's real tokens sit at positions ``0..n-1``
  (``roll_padding``, for code without position ids);
- **the mask token** strings tried first, **the LoRA preset**, **the cache flag**
  (:meth:`Family.prepare`);
- **hidden states and head**: :meth:`Family.trunk` gives the final hidden states ``(B, L, D)``
  and :meth:`Family.head` maps them to logits, so the head is applied only where needed;
- **the layers as steps** (:meth:`Family.layers`, :mod:`maskgrpo.models.layers`), which the
  block KV cache of the sampler runs; None where the architecture is not implemented natively.

The per-model facts measured at load time (pad id, tokenizer size, whether the code honours the
padding mask, whether the trunk/head split reproduces the forward) live in a :class:`Binding`.
:mod:`maskgrpo.models.calls` combines both into the one way the sampler and the log-prob code
call a model. Adding a family is one subclass plus one entry in :mod:`maskgrpo.models.registry`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from .layers import Layers, TinyLayers

__all__ = [
    "Binding",
    "Family",
    "GenericFamily",
    "Head",
    "ModuleFamily",
    "Trunk",
    "additive_key_bias",
    "leading_padding",
    "own_split",
    "tokenizer_size",
]

Trunk = Callable[[Tensor, Tensor | None], Tensor]  # (ids (B, L), keep (B, L) | None) -> (B, L, D)
Head = Callable[[Tensor], Tensor]  # hidden (..., D) -> logits (..., V)


def tokenizer_size(tokenizer: Any) -> int:
    """One past the largest id the tokenizer knows (its added tokens included)."""
    vocab = tokenizer.get_vocab()
    return max(int(i) for i in vocab.values()) + 1 if vocab else len(tokenizer)


def leading_padding(ids: Tensor, pad_id: int) -> Tensor | None:
    """``(B, L)`` bool, False on each row's leading run of ``pad_id`` (left padding); None if none.

    A row made only of pad tokens is kept whole (there is nothing else to attend to).
    """
    keep = (ids != pad_id).cumsum(dim=1) > 0  # (B, L)
    keep |= ~keep.any(dim=1, keepdim=True)
    return None if bool(keep.all()) else keep


def additive_key_bias(keep: Tensor) -> Tensor:
    """``(B, 1, 1, L)`` float32: 0 where a key is kept, the float32 minimum on padding keys."""
    bias = torch.zeros(keep.shape, dtype=torch.float32, device=keep.device)
    bias.masked_fill_(~keep, torch.finfo(torch.float32).min)
    return bias[:, None, None, :]


@dataclass
class Binding:
    """What was measured when a model was loaded, attached to it as ``maskgrpo_binding``.

    ``vocab_limit``: ids ``>= vocab_limit`` are not tokens of the tokenizer and are never
    sampled (None: every row is a token). ``honours_padding``: a key-padding mask makes a
    padded row compute what it computes alone; when False (code that ignores masks) rows are
    grouped by padding and run unpadded. ``lean``: the trunk/head split reproduces the
    forward's logits, so the head can be applied at chosen positions only.
    """

    family: Family
    pad_id: int | None = None
    vocab_limit: int | None = None
    honours_padding: bool = True
    lean: bool = True

    def describe(self) -> str:
        parts = [self.family.name]
        if not self.honours_padding:
            parts.append("attention mask ignored by its code: rows grouped by padding")
        if not self.lean:
            parts.append("no hidden states: full logits")
        return ", ".join(parts)


class Family:
    """A model family's conventions. Subclasses override what differs; see the module doc."""

    name: ClassVar[str] = "base"
    lora_preset: ClassVar[str | None] = None
    mask_tokens: ClassVar[tuple[str, ...]] = ()
    shift: ClassVar[bool] = False  # the output at i - 1 predicts token i (Dream)
    roll_padding: ClassVar[bool] = True  # present padded rows right-padded
    infer_padding: ClassVar[bool] = True  # the leading pad tokens of a row are padding

    def matches(self, config: dict[str, Any]) -> bool:
        """Whether a ``config.json`` (as a dict) belongs to this family."""
        return False

    def prepare(self, model: nn.Module) -> None:
        """Once, after loading: no KV cache (every pass re-reads the whole sequence)."""
        config = getattr(model, "config", None)
        if config is not None and hasattr(config, "to_dict"):
            config.use_cache = False

    def forward_kwargs(self, keep: Tensor | None) -> dict[str, Any]:
        """Keyword arguments of the public ``forward`` expressing key padding ``keep``."""
        return {} if keep is None else {"attention_mask": keep.long()}

    def trunk(self, model: nn.Module) -> Trunk | None:
        """The final hidden states of ``model`` (not shifted), or None when unavailable."""
        return None

    def head(self, model: nn.Module) -> Head | None:
        """The output head of ``model`` (hidden states -> logits), or None."""
        return None

    def layers(self, model: nn.Module) -> Layers | None:
        """``model``'s layers as steps for the block KV cache, or None (no cache)."""
        return None

    def __repr__(self) -> str:
        return f"<family {self.name}>"


def own_split(model: nn.Module) -> tuple[Trunk, Head] | None:
    """``model.hidden_states`` + ``model.lm_head`` (the built-in tiny model's convention)."""
    hidden = getattr(model, "hidden_states", None)
    head = getattr(model, "lm_head", None)
    if callable(hidden) and isinstance(head, nn.Module):
        return (lambda ids, keep: hidden(ids, keep)), head
    return None


class ModuleFamily(Family):
    """The built-in tiny model and plain modules that return ``.logits``.

    Padding is never inferred (the tiny model keeps its pad tokens visible, as it was trained);
    an explicit ``attention_mask`` is passed through. Split into trunk and head when the module
    has ``hidden_states(ids, attention_mask)`` and an ``lm_head``.
    """

    name = "tiny"
    roll_padding = False
    infer_padding = False

    def forward_kwargs(self, keep: Tensor | None) -> dict[str, Any]:
        return {} if keep is None else {"attention_mask": keep}

    def trunk(self, model: nn.Module) -> Trunk | None:
        split = own_split(model)
        return None if split is None else split[0]

    def head(self, model: nn.Module) -> Head | None:
        split = own_split(model)
        return None if split is None else split[1]

    def layers(self, model: nn.Module) -> Layers | None:
        """The built-in tiny model's layers (a module of another layout: None)."""
        parts = ("tok", "pos", "blocks", "norm", "config")
        if not all(hasattr(model, p) for p in parts):
            return None
        blocks: Any = model.blocks
        if not all(hasattr(b, p) for b in blocks for p in ("qkv", "proj", "mlp", "norm1", "norm2")):
            return None
        return TinyLayers(model)


class GenericFamily(Family):
    """A ``transformers`` model of no known family (bidirectional Llama, ModernBERT...).

    2-D ``attention_mask``; the trunk is the base model (``base_model_prefix``) returning
    ``last_hidden_state``, the head its output embeddings.
    """

    name = "generic"
    lora_preset = "llama"

    def trunk(self, model: nn.Module) -> Trunk | None:
        own = own_split(model)
        if own is not None:
            return own[0]
        prefix = getattr(model, "base_model_prefix", "")
        base = getattr(model, prefix, None) if prefix else None
        if not isinstance(base, nn.Module) or base is model:
            return None

        def trunk(ids: Tensor, keep: Tensor | None) -> Tensor:
            return base(input_ids=ids, **self.forward_kwargs(keep)).last_hidden_state

        return trunk

    def head(self, model: nn.Module) -> Head | None:
        own = own_split(model)
        if own is not None:
            return own[1]
        get_head = getattr(model, "get_output_embeddings", None)
        head = get_head() if callable(get_head) else None
        return head if isinstance(head, nn.Module) else None
