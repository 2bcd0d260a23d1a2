"""Dream (Dream-v0-7B, a Qwen2-shaped masked diffusion model) written natively.

The published ``modeling_dream.py`` takes a ``transformers`` ``Cache`` whose ``update`` appends
the new keys after the cached ones: a prefix cache can be expressed, the dual cache (the block's
keys written in place between cached prompt and suffix keys) cannot, and the ``Cache`` API
itself changed between the ``transformers`` releases maskgrpo supports. This module runs the
architecture step by step (:class:`DreamLayers`, for :mod:`maskgrpo.models.layers`) over the
modules of a loaded model by their published names, and :class:`NativeDream` is the same
architecture as a module of this project that loads the published checkpoints' weights
(``model.layers.{i}.self_attn.q_proj.weight``, ``lm_head.weight``, ...) without their code.

Supported: the Dream-v0 configuration (GQA, q/k/v biases, SwiGLU MLP, RMS norms, RoPE with the
default inverse frequencies). Rotary scaling (``rope_scaling``) and sliding windows are refused
(:func:`dream_layers` returns None: no cache, exact decoding). The output at position ``i - 1``
predicts token ``i`` (the family's shift); positions count real tokens, pads get position 1,
as Dream's ``diffusion_generate`` builds them. Matches the published forward within 1e-4 on the
test fixtures.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .layers import apply_rotary, rotary_tables, run_span
from .native_io import NativeConfig, NativeOutput, RMSNorm, build_from_folder, padding_from

__all__ = ["DreamLayers", "NativeDream", "dream_layers"]

_LAYER_PARTS = ("input_layernorm", "self_attn", "post_attention_layernorm", "mlp")


def _scaled_rope(cfg: Any) -> bool:
    """Whether the config asks for a rotary scaling other than the default one."""
    scaling = getattr(cfg, "rope_scaling", None)
    if not isinstance(scaling, dict):
        return scaling is not None
    return scaling.get("rope_type", scaling.get("type", "default")) != "default"


def dream_layers(model: nn.Module) -> DreamLayers | None:
    """:class:`DreamLayers` of a ``DreamModel`` or :class:`NativeDream`, or None when its
    configuration is one this module does not implement."""
    base: Any = getattr(model, "model", None)
    cfg = getattr(model, "config", None)
    layers = getattr(base, "layers", None)
    if cfg is None or layers is None or not hasattr(base, "embed_tokens"):
        return None
    if _scaled_rope(cfg) or getattr(cfg, "use_sliding_window", False):
        return None
    if any(not all(hasattr(layer, p) for p in _LAYER_PARTS) for layer in layers):
        return None
    return DreamLayers(cfg, base)


class DreamLayers:
    """Dream's layers as steps (:class:`maskgrpo.models.layers.Layers`)."""

    real_positions = True

    def __init__(self, cfg: Any, base: Any) -> None:
        self.base, self.layers = base, list(base.layers)
        self.n_layers = len(self.layers)
        hidden = int(cfg.hidden_size)
        self.heads = int(cfg.num_attention_heads)
        self.kv_heads = int(getattr(cfg, "num_key_value_heads", None) or self.heads)
        self.head_dim = hidden // self.heads
        loaded = getattr(getattr(base, "rotary_emb", None), "inv_freq", None)
        if isinstance(loaded, Tensor) and not loaded.is_meta:  # the published model's table
            self.inv_freq = loaded.detach().float()
        else:
            theta = float(getattr(cfg, "rope_theta", None) or 10000.0)
            exponent = torch.arange(0, self.head_dim, 2, dtype=torch.int64).float() / self.head_dim
            self.inv_freq = 1.0 / (theta**exponent)
        self._tables: tuple[Tensor, Tensor, Tensor] | None = None

    def _rotary(self, positions: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        if self._tables is None or self._tables[0] is not positions:
            cos, sin = rotary_tables(positions, self.inv_freq.to(positions.device))
            self._tables = (positions, cos.to(dtype), sin.to(dtype))  # Dream: in the model dtype
        return self._tables[1], self._tables[2]

    def embed(self, ids: Tensor, positions: Tensor) -> Tensor:
        return self.base.embed_tokens(ids)

    def attention_inputs(
        self, i: int, x: Tensor, positions: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        layer = self.layers[i]
        attn = layer.self_attn
        b, n, _ = x.shape
        h = layer.input_layernorm(x)
        q = attn.q_proj(h).view(b, n, self.heads, self.head_dim).transpose(1, 2)
        k = attn.k_proj(h).view(b, n, self.kv_heads, self.head_dim).transpose(1, 2)
        v = attn.v_proj(h).view(b, n, self.kv_heads, self.head_dim).transpose(1, 2)
        cos, sin = self._rotary(positions, x.dtype)
        return apply_rotary(q, cos, sin), apply_rotary(k, cos, sin), v

    def finish(self, i: int, x: Tensor, attended: Tensor) -> Tensor:
        layer = self.layers[i]
        x = x + layer.self_attn.o_proj(attended)
        return x + layer.mlp(layer.post_attention_layernorm(x))

    def norm(self, x: Tensor) -> Tensor:
        return self.base.norm(x)


# ------------------------------------------------------------------------- the native model


class _Attention(nn.Module):
    def __init__(self, hidden: int, heads: int, kv_heads: int) -> None:
        super().__init__()
        head_dim = hidden // heads
        self.q_proj = nn.Linear(hidden, heads * head_dim, bias=True)
        self.k_proj = nn.Linear(hidden, kv_heads * head_dim, bias=True)
        self.v_proj = nn.Linear(hidden, kv_heads * head_dim, bias=True)
        self.o_proj = nn.Linear(heads * head_dim, hidden, bias=False)


class _MLP(nn.Module):
    def __init__(self, hidden: int, inner: int) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(hidden, inner, bias=False)
        self.up_proj = nn.Linear(hidden, inner, bias=False)
        self.down_proj = nn.Linear(inner, hidden, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class _Layer(nn.Module):
    def __init__(self, cfg: NativeConfig) -> None:
        super().__init__()
        hidden, eps = int(cfg["hidden_size"]), float(cfg.get("rms_norm_eps", 1e-6))
        heads = int(cfg["num_attention_heads"])
        self.self_attn = _Attention(hidden, heads, int(cfg.get("num_key_value_heads") or heads))
        self.mlp = _MLP(hidden, int(cfg["intermediate_size"]))
        self.input_layernorm = RMSNorm(hidden, eps)
        self.post_attention_layernorm = RMSNorm(hidden, eps)


class _Base(nn.Module):
    def __init__(self, cfg: NativeConfig) -> None:
        super().__init__()
        hidden = int(cfg["hidden_size"])
        self.embed_tokens = nn.Embedding(int(cfg["vocab_size"]), hidden)
        self.layers = nn.ModuleList(_Layer(cfg) for _ in range(int(cfg["num_hidden_layers"])))
        self.norm = RMSNorm(hidden, float(cfg.get("rms_norm_eps", 1e-6)))


class NativeDream(nn.Module):
    """Dream with this project's code and the published checkpoints' weight names.

    ``model(input_ids, attention_mask=None, position_ids=None).logits`` ``(B, L, V)``, the
    published (unshifted) outputs: position ``i - 1`` predicts token ``i``. ``attention_mask``
    ``(B, L)`` or Dream's boolean ``(B, 1, 1, L)`` key mask.
    """

    def __init__(self, config: NativeConfig) -> None:
        super().__init__()
        refused = [
            name
            for name, on in (
                ("rope_scaling", _scaled_rope(config)),
                ("use_sliding_window", config.get("use_sliding_window", False)),
                ("tie_word_embeddings", config.get("tie_word_embeddings", False)),
                ("hidden_act != silu", config.get("hidden_act", "silu") != "silu"),
            )
            if on
        ]
        if refused:
            raise ValueError(
                f"NativeDream implements Dream-v0's configuration; this config has {refused}: "
                "load the model with its own code (trust_remote_code=True)"
            )
        self.config = config
        self.model = _Base(config)
        self.lm_head = nn.Linear(int(config["hidden_size"]), int(config["vocab_size"]), bias=False)

    def get_input_embeddings(self) -> nn.Module:
        return self.model.embed_tokens

    def hidden_states(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        position_ids: Tensor | None = None,
    ) -> Tensor:
        """Final-norm hidden states ``(B, L, D)`` (unshifted); ``lm_head`` gives the logits."""
        layers = dream_layers(self)
        assert layers is not None  # __init__ refused what DreamLayers cannot run
        positions, key_mask = padding_from(attention_mask, input_ids)
        if position_ids is not None:
            positions = position_ids
        return run_span(layers, input_ids, positions, key_mask=key_mask)

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        position_ids: Tensor | None = None,
        **_: Any,
    ) -> NativeOutput:
        hidden = self.hidden_states(input_ids, attention_mask, position_ids)
        return NativeOutput(self.lm_head(hidden))

    @classmethod
    def from_pretrained(
        cls,
        folder: str | Path,
        *,
        dtype: torch.dtype = torch.float32,
        device: str | torch.device = "cpu",
    ) -> NativeDream:
        """Load ``config.json`` and the safetensors weights of a Dream checkpoint folder."""
        return build_from_folder(cls, folder, dtype=dtype, device=device)
