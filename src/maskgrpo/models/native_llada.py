"""The LLaDA backbone (LLaDA-8B, MMaDA-8B) written natively: block KV cache and weight loading.

The published ``modeling_llada.py`` cannot decode with a block cache: ``LLaDAModel.forward``
asserts ``past_key_values is None and not use_cache``, and below it a block's ``layer_past``
only appends keys after the cached ones (queries at the end of the sequence, every cached key
rotated again on each call), so the dual cache -- queries in the middle, cached keys on both
sides -- has no place in it. This module runs the same architecture step by step
(:class:`LLaDALayers`, for :mod:`maskgrpo.models.layers`), reading the modules of a loaded model
by the published names, so a model loaded with its own code (with LoRA adapters inside, too)
decodes with the cache on its own weights.

:class:`NativeLLaDA` is the same architecture as a module of this project: it loads the
published checkpoints' weights by their state-dict names (``model.transformer.wte.weight``,
``model.transformer.blocks.{i}.q_proj.weight``, ...) from ``config.json`` and safetensors files,
without running the checkpoint's code. Supported: LLaDA's ``llama`` blocks (separate q/k/v
projections, SwiGLU MLP with ``ff_proj``/``up_proj``), RMS norms, RoPE, grouped key heads,
tied or separate output head, ``scale_logits``, ``input_emb_norm`` -- the configuration of
LLaDA-8B and MMaDA-8B. Other variants (ALiBi, fused ``sequential`` blocks, q/k norms) are
refused with a ``ValueError``; :func:`llada_layers` returns None for them (no cache: exact
decoding). Matches the published forward within 1e-4 on the test fixtures.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .layers import apply_rotary, rotary_tables, run_span
from .native_io import NativeConfig, NativeOutput, RMSNorm, build_from_folder, padding_from

__all__ = ["LLaDALayers", "NativeLLaDA", "llada_layers"]

_BLOCK_PARTS = (
    *("attn_norm", "q_proj", "k_proj", "v_proj", "attn_out"),
    *("ff_norm", "ff_proj", "up_proj", "ff_out", "act"),
)


def _blocks(transformer: Any) -> list[Any]:
    if "blocks" in transformer:
        return list(transformer.blocks)
    if "block_groups" in transformer:
        return [block for group in transformer.block_groups for block in group]
    return []


def llada_layers(model: nn.Module) -> LLaDALayers | None:
    """:class:`LLaDALayers` of an ``LLaDAModelLM``/``MMadaModelLM``/:class:`NativeLLaDA`, or None
    when its configuration is one this module does not implement."""
    core: Any = getattr(model, "model", None)
    cfg = getattr(core, "config", None)
    transformer = getattr(core, "transformer", None)
    if cfg is None or transformer is None or not hasattr(transformer, "__contains__"):
        return None
    if getattr(cfg, "alibi", True) or not getattr(cfg, "rope", False):
        return None
    if getattr(cfg, "attention_layer_norm", False) or "wte" not in transformer:
        return None
    blocks = _blocks(transformer)
    if not blocks or any(not all(hasattr(b, p) for p in _BLOCK_PARTS) for b in blocks):
        return None
    return LLaDALayers(cfg, transformer, blocks)


class LLaDALayers:
    """The LLaDA backbone's layers as steps (:class:`maskgrpo.models.layers.Layers`).

    Position ``i`` predicts token ``i``; no position ids in the published code (RoPE over
    ``0..L-1`` of the right-padded rows), so positions here count real tokens.
    """

    real_positions = True

    def __init__(self, cfg: Any, transformer: Any, blocks: list[Any]) -> None:
        self.cfg, self.transformer, self.blocks = cfg, transformer, blocks
        self.n_layers = len(blocks)
        self.heads = int(cfg.n_heads)
        self.kv_heads = int(
            getattr(cfg, "effective_n_kv_heads", None) or cfg.n_kv_heads or cfg.n_heads
        )
        self.head_dim = int(cfg.d_model) // self.heads
        exponent = torch.arange(0, self.head_dim, 2, dtype=torch.float) / self.head_dim
        self.inv_freq = 1.0 / (float(cfg.rope_theta) ** exponent)
        self.full_precision = bool(getattr(cfg, "rope_full_precision", True))
        self._tables: tuple[Tensor, Tensor, Tensor] | None = None

    def _rotary(self, positions: Tensor) -> tuple[Tensor, Tensor]:
        if self._tables is None or self._tables[0] is not positions:
            cos, sin = rotary_tables(positions, self.inv_freq.to(positions.device))
            self._tables = (positions, cos, sin)
        return self._tables[1], self._tables[2]

    def embed(self, ids: Tensor, positions: Tensor) -> Tensor:
        x = self.transformer.wte(ids)  # (B, n, D)
        if self.cfg.input_emb_norm:
            x = x * (self.cfg.d_model**0.5)
        return self.transformer.emb_drop(x)

    def attention_inputs(
        self, i: int, x: Tensor, positions: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        block = self.blocks[i]
        b, n, _ = x.shape
        h = block.attn_norm(x)
        q = block.q_proj(h).view(b, n, self.heads, self.head_dim).transpose(1, 2)
        k = block.k_proj(h).view(b, n, self.kv_heads, self.head_dim).transpose(1, 2)
        v = block.v_proj(h).view(b, n, self.kv_heads, self.head_dim).transpose(1, 2)
        cos, sin = self._rotary(positions)
        if self.full_precision:  # LLaDA rotates in float32 (rope_full_precision)
            q = apply_rotary(q.float(), cos, sin).type_as(v)
            k = apply_rotary(k.float(), cos, sin).type_as(v)
        else:
            q = apply_rotary(q, cos.type_as(q), sin.type_as(q))
            k = apply_rotary(k, cos.type_as(k), sin.type_as(k))
        return q, k, v

    def finish(self, i: int, x: Tensor, attended: Tensor) -> Tensor:
        block = self.blocks[i]
        x = x + block.attn_out(attended)
        h = block.ff_norm(x)
        h = block.act(block.ff_proj(h)) * block.up_proj(h)  # SwiGLU
        return x + block.ff_out(h)

    def norm(self, x: Tensor) -> Tensor:
        return self.transformer.ln_f(x)


# ------------------------------------------------------------------------- the native model


@dataclass
class _Shape:
    d_model: int
    n_heads: int
    n_kv_heads: int
    n_layers: int
    mlp_hidden: int
    vocab: int
    bias: bool
    qkv_bias: bool
    norm_bias: bool
    eps: float


def _shape(cfg: NativeConfig) -> _Shape:
    refused = {
        "alibi": cfg.get("alibi", False),
        "attention_layer_norm": cfg.get("attention_layer_norm", False),
        "block_type != llama": cfg.get("block_type", "llama") != "llama",
        "layer_norm_type != rms": cfg.get("layer_norm_type", "rms") != "rms",
        "activation_type != silu": cfg.get("activation_type", "silu") != "silu",
        "rope off": not cfg.get("rope", True),
        "layer_norm_with_affine off": not cfg.get("layer_norm_with_affine", True),
    }
    bad = [name for name, on in refused.items() if on]
    if bad:
        raise ValueError(
            f"NativeLLaDA implements LLaDA-8B's configuration; this config has {bad}: "
            "load the model with its own code (trust_remote_code=True)"
        )
    d_model, heads = int(cfg["d_model"]), int(cfg["n_heads"])
    kv = cfg.get("n_kv_heads") or (1 if cfg.get("multi_query_attention") else heads)
    bias = bool(cfg.get("include_bias", False))
    norm_bias = cfg.get("bias_for_layer_norm")
    return _Shape(
        d_model=d_model,
        n_heads=heads,
        n_kv_heads=int(kv),
        n_layers=int(cfg["n_layers"]),
        mlp_hidden=int(cfg.get("mlp_hidden_size") or cfg.get("mlp_ratio", 4) * d_model),
        vocab=int(cfg.get("embedding_size") or cfg["vocab_size"]),
        bias=bias,
        qkv_bias=bias or bool(cfg.get("include_qkv_bias", False)),
        norm_bias=bias if norm_bias is None else bool(norm_bias),
        eps=float(cfg.get("rms_norm_eps", 1e-5)),
    )


class _Block(nn.Module):
    def __init__(self, s: _Shape) -> None:
        super().__init__()
        head_dim = s.d_model // s.n_heads
        self.attn_norm = RMSNorm(s.d_model, s.eps, s.norm_bias)
        self.ff_norm = RMSNorm(s.d_model, s.eps, s.norm_bias)
        self.q_proj = nn.Linear(s.d_model, s.d_model, bias=s.qkv_bias)
        self.k_proj = nn.Linear(s.d_model, s.n_kv_heads * head_dim, bias=s.qkv_bias)
        self.v_proj = nn.Linear(s.d_model, s.n_kv_heads * head_dim, bias=s.qkv_bias)
        self.attn_out = nn.Linear(s.d_model, s.d_model, bias=s.bias)
        self.ff_proj = nn.Linear(s.d_model, s.mlp_hidden, bias=s.bias)
        self.up_proj = nn.Linear(s.d_model, s.mlp_hidden, bias=s.bias)
        self.ff_out = nn.Linear(s.mlp_hidden, s.d_model, bias=s.bias)
        self.act = nn.SiLU()


class _Core(nn.Module):
    """``model`` of the checkpoint: ``transformer.{wte, blocks, ln_f, ff_out}``."""

    def __init__(self, cfg: NativeConfig, s: _Shape) -> None:
        super().__init__()
        self.config = cfg
        parts: dict[str, nn.Module] = {
            "wte": nn.Embedding(s.vocab, s.d_model),
            "emb_drop": nn.Identity(),
            "ln_f": RMSNorm(s.d_model, s.eps, s.norm_bias),
            "blocks": nn.ModuleList(_Block(s) for _ in range(s.n_layers)),
        }
        if not cfg.get("weight_tying", False):
            parts["ff_out"] = nn.Linear(s.d_model, s.vocab, bias=s.bias)
        self.transformer = nn.ModuleDict(parts)


class _LLaDAHead(nn.Module):
    """The output head: ``ff_out`` (or the tied embedding), scaled when ``scale_logits``."""

    def __init__(self, core: _Core) -> None:
        super().__init__()
        self.core = [core]  # a reference, not a submodule (no duplicate parameters)

    def forward(self, hidden: Tensor) -> Tensor:
        core = self.core[0]
        tr: Any = core.transformer
        cfg = core.config
        if cfg.get("weight_tying", False):
            logits = F.linear(hidden, tr.wte.weight)
        else:
            logits = tr.ff_out(hidden)
        return logits / math.sqrt(cfg["d_model"]) if cfg.get("scale_logits", False) else logits


class NativeLLaDA(nn.Module):
    """LLaDA/MMaDA with this project's code and the published checkpoints' weight names.

    ``model(input_ids, attention_mask=None).logits`` ``(B, L, V)``; ``attention_mask``
    ``(B, L)`` marks real tokens (rows padded on either side; positions count real tokens),
    or pass MMaDA's additive ``attention_bias`` ``(B, 1, 1, L)``.
    """

    def __init__(self, config: NativeConfig) -> None:
        super().__init__()
        self.config = config
        self.model = _Core(config, _shape(config))

    @property
    def lm_head(self) -> nn.Module:
        return _LLaDAHead(self.model)

    def get_input_embeddings(self) -> nn.Module:
        wte: nn.Module = self.model.transformer["wte"]
        return wte

    def hidden_states(self, input_ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        """Final-norm hidden states ``(B, L, D)``; ``lm_head`` of these are the logits."""
        layers = llada_layers(self)
        assert layers is not None  # _shape refused what LLaDALayers cannot run
        positions, key_mask = padding_from(attention_mask, input_ids)
        return run_span(layers, input_ids, positions, key_mask=key_mask)

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        attention_bias: Tensor | None = None,
        **_: Any,
    ) -> NativeOutput:
        if attention_mask is None and attention_bias is not None:
            attention_mask = attention_bias.reshape(input_ids.shape[0], -1) == 0
        return NativeOutput(self.lm_head(self.hidden_states(input_ids, attention_mask)))

    @classmethod
    def from_pretrained(
        cls,
        folder: str | Path,
        *,
        dtype: torch.dtype = torch.float32,
        device: str | torch.device = "cpu",
    ) -> NativeLLaDA:
        """Load ``config.json`` and the safetensors weights of a LLaDA/MMaDA checkpoint folder."""
        return build_from_folder(cls, folder, dtype=dtype, device=device)
