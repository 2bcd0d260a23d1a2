"""LLaDA and MMaDA: the LLaDA backbone (``LLaDAModelLM`` and its ``MMadaModelLM`` subclass).

Conventions, read off their published ``modeling_llada.py`` / ``modeling_mmada.py``:

- position ``i`` predicts token ``i``; no position ids (RoPE over ``arange(L)``), so padded rows
  are presented right-padded and their real tokens keep positions ``0..n-1``;
- padding: LLaDA's current hub code takes a 2-D ``attention_mask`` (turned into an additive
  key bias over its bidirectional attention). MMaDA's copy turns a 2-D mask into a *causal*
  bias, so MMaDA gets an additive ``attention_bias`` instead, as its own samplers pass. The
  earlier LLaDA hub code accepts a mask and ignores it (``attn_mask=None``); the load-time probe
  finds that and rows are then grouped by padding (see :mod:`maskgrpo.models.calls`);
- the forward always applies the head (``transformer.ff_out``, or the tied embedding) over the
  whole sequence and returns no hidden states unless asked, and then with the logits too. The
  trunk here runs the same modules the forward runs -- embedding, the blocks with the additive
  key bias, the final norm -- and stops before the head; the load-time probe checks that the
  head of these hidden states equals the forward's logits before it is used;
- the mask token ``<|mdm_mask|>`` (``config.mask_token_id``); the forward asserts that no KV
  cache is used, so the sampler's block cache runs the backbone natively on the same modules
  (:mod:`maskgrpo.models.native_llada`); LoRA on ``q_proj, k_proj, v_proj, attn_out, ff_proj, up_proj, ff_out`` of the blocks
  (the head, also named ``ff_out``, is excluded by :func:`maskgrpo.lora.apply_lora`).
"""

from __future__ import annotations

import math
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from .family import Family, Head, Trunk, additive_key_bias, own_split
from .layers import Layers
from .native_llada import llada_layers

__all__ = ["LLaDAFamily", "MMaDAFamily"]


def _config_names(config: dict[str, Any]) -> list[str]:
    auto = config.get("auto_map") or {}
    refs = [v for v in auto.values() if isinstance(v, str)]
    archs = config.get("architectures") or []
    return [str(config.get("model_type", "")).lower(), *archs, *refs]


def _core(model: nn.Module) -> Any:
    """``LLaDAModel`` (``model.model``) when its layout is the one the trunk knows, else None."""
    core: Any = getattr(model, "model", None)
    cfg = getattr(core, "config", None)
    transformer = getattr(core, "transformer", None)
    if cfg is None or transformer is None or getattr(cfg, "alibi", True) or not cfg.rope:
        return None
    if "wte" not in transformer or "ln_f" not in transformer:
        return None
    return core


class LLaDAFamily(Family):
    name = "llada"
    lora_preset = "llada"
    mask_tokens = ("<|mdm_mask|>",)

    def matches(self, config: dict[str, Any]) -> bool:
        names = _config_names(config)
        return names[0] == "llada" or any("LLaDAModelLM" in n for n in names[1:])

    def forward_kwargs(self, keep: Tensor | None) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"use_cache": False}
        if keep is not None:
            kwargs["attention_mask"] = keep.long()
        return kwargs

    def trunk(self, model: nn.Module) -> Trunk | None:
        own = own_split(model)  # NativeLLaDA
        if own is not None:
            return own[0]
        core = _core(model)
        if core is None:
            return None
        cfg, tr = core.config, core.transformer

        def trunk(ids: Tensor, keep: Tensor | None) -> Tensor:
            x = tr.wte(ids)  # (B, L, D)
            if cfg.input_emb_norm:
                x = x * (cfg.d_model**0.5)
            x = tr.emb_drop(x)
            bias = None if keep is None else additive_key_bias(keep)  # (B, 1, 1, L)
            if cfg.block_group_size == 1:
                for block in tr.blocks:
                    x, _ = block(x, attention_bias=bias, layer_past=None, use_cache=False)
            else:
                for group in tr.block_groups:
                    x, _ = group(x, attention_bias=bias, layers_past=None, use_cache=False)
            return tr.ln_f(x)

        return trunk

    def head(self, model: nn.Module) -> Head | None:
        own = own_split(model)  # NativeLLaDA
        if own is not None:
            return own[1]
        core = _core(model)
        if core is None:
            return None
        cfg, tr = core.config, core.transformer
        scale = 1 / math.sqrt(cfg.d_model) if cfg.scale_logits else None

        def head(hidden: Tensor) -> Tensor:
            if cfg.weight_tying:
                logits = F.linear(hidden, tr.wte.weight, None)
            else:
                logits = tr.ff_out(hidden)
            return logits if scale is None else logits * scale

        return head

    def layers(self, model: nn.Module) -> Layers | None:
        return llada_layers(model)


class MMaDAFamily(LLaDAFamily):
    """MMaDA's text side: LLaDA's backbone; padding as an additive ``attention_bias``."""

    name = "mmada"
    lora_preset = "mmada"

    def matches(self, config: dict[str, Any]) -> bool:
        names = _config_names(config)
        return names[0] == "mmada" or any("MMadaModelLM" in n for n in names[1:])

    def forward_kwargs(self, keep: Tensor | None) -> dict[str, Any]:
        return {} if keep is None else {"attention_bias": additive_key_bias(keep)}
