"""A tiny bidirectional transformer for masked diffusion, with the Hugging Face calling convention.

``model(input_ids).logits`` is ``(B, L, V)``, as for ``transformers`` models, so every algorithm in
the package runs unchanged on it and on hub models. Pre-norm blocks, full (non-causal) attention
through ``scaled_dot_product_attention``, and either learned absolute positions (the default) or
rotary position embeddings (``positions="rotary"``, RoPE: Su et al. 2021, arXiv 2104.09864) that
make attention depend on relative offsets, so a rule learned at one answer position holds at
every position. Saved as ``config.json`` + ``model.safetensors``. Deliberately minimal: its forward
re-reads the whole sequence (the sampler's block KV cache runs its layers step by step:
:class:`maskgrpo.models.layers.TinyLayers`).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from .layers import apply_rotary, rotary_tables

__all__ = ["POSITIONS", "MaskedLMOutput", "TinyConfig", "TinyDiffusionLM"]

POSITIONS = ("learned", "rotary")


@dataclass
class TinyConfig:
    """Shape of the tiny model. ``max_length`` bounds prompt + completion length."""

    vocab_size: int
    dim: int = 128
    n_layers: int = 4
    n_heads: int = 4
    mlp_ratio: int = 4
    max_length: int = 128
    dropout: float = 0.0
    positions: str = "learned"  # "learned" absolute embeddings or "rotary" (RoPE)
    rope_theta: float = 10000.0

    def __post_init__(self) -> None:
        if self.dim % self.n_heads:
            raise ValueError(f"dim={self.dim} must be divisible by n_heads={self.n_heads}")
        if self.positions not in POSITIONS:
            raise ValueError(f"positions={self.positions!r} is not one of {', '.join(POSITIONS)}")
        if self.positions == "rotary" and (self.dim // self.n_heads) % 2:
            raise ValueError(
                f"rotary positions need an even head width; dim={self.dim} / n_heads="
                f"{self.n_heads} is odd: change dim or n_heads"
            )
        if self.rope_theta <= 0:
            raise ValueError(f"rope_theta must be positive, got {self.rope_theta}")
        for name in ("vocab_size", "dim", "n_layers", "n_heads", "max_length"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")


@dataclass
class MaskedLMOutput:
    logits: Tensor  # (B, L, V)


class _Block(nn.Module):
    def __init__(self, cfg: TinyConfig) -> None:
        super().__init__()
        self.n_heads = cfg.n_heads
        self.rope_theta = cfg.rope_theta if cfg.positions == "rotary" else None
        self.norm1 = nn.LayerNorm(cfg.dim)
        self.qkv = nn.Linear(cfg.dim, 3 * cfg.dim)
        self.proj = nn.Linear(cfg.dim, cfg.dim)
        self.norm2 = nn.LayerNorm(cfg.dim)
        self.mlp = nn.Sequential(
            nn.Linear(cfg.dim, cfg.mlp_ratio * cfg.dim),
            nn.GELU(),
            nn.Linear(cfg.mlp_ratio * cfg.dim, cfg.dim),
        )
        self.dropout = cfg.dropout

    def rotate(self, q: Tensor, k: Tensor, positions: Tensor) -> tuple[Tensor, Tensor]:
        """Queries and keys ``(B, H, N, D)`` at ``positions`` ``(N,)`` or ``(B, N)`` turned by
        rotary position embeddings (Su et al. 2021, eq. 34: channel pair ``i`` by the angle
        ``position * theta ** (-2i / D)``), so that their dot product depends on the offset of
        the two positions only; unchanged with learned positions."""
        if self.rope_theta is None:
            return q, k
        width = q.shape[-1]
        exponents = torch.arange(0, width, 2, device=q.device, dtype=torch.float32) / width
        cos, sin = rotary_tables(positions.reshape(-1, positions.shape[-1]),
                                 self.rope_theta ** -exponents)  # fmt: skip
        cos, sin = cos.to(q.dtype), sin.to(q.dtype)
        return apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)

    def forward(self, x: Tensor, key_padding: Tensor | None, positions: Tensor) -> Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, n, 3, self.n_heads, -1).permute(2, 0, 3, 1, 4)
        q, k = self.rotate(q, k, positions)
        mask = None if key_padding is None else key_padding[:, None, None, :]  # (B, 1, 1, L)
        p = self.dropout if self.training else 0.0
        att = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)
        x = x + F.dropout(self.proj(att.transpose(1, 2).reshape(b, n, d)), p, self.training)
        return x + F.dropout(self.mlp(self.norm2(x)), p, self.training)


class TinyDiffusionLM(nn.Module):
    """Bidirectional transformer predicting clean tokens at every position."""

    def __init__(self, config: TinyConfig) -> None:
        super().__init__()
        self.config = config
        self.tok = nn.Embedding(config.vocab_size, config.dim)
        self.pos: nn.Embedding | None = None  # rotary positions act inside attention
        if config.positions == "learned":
            self.pos = nn.Embedding(config.max_length, config.dim)
        self.blocks = nn.ModuleList(_Block(config) for _ in range(config.n_layers))
        self.norm = nn.LayerNorm(config.dim)
        self.lm_head = nn.Linear(config.dim, config.vocab_size, bias=False)
        self.apply(self._init)

    @staticmethod
    def _init(module: nn.Module) -> None:
        if isinstance(module, nn.Linear | nn.Embedding):
            nn.init.normal_(module.weight, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def hidden_states(self, input_ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        """Final-norm hidden states ``(B, L, D)``; ``lm_head`` of these are the logits."""
        length = input_ids.shape[1]
        if length > self.config.max_length:
            raise ValueError(
                f"sequence of length {length} exceeds the model's max_length "
                f"{self.config.max_length}; shorten the prompt/generation or build a larger model"
            )
        pos = torch.arange(length, device=input_ids.device)
        x = self.tok(input_ids)
        if self.pos is not None:
            x = x + self.pos(pos)
        key_padding = None if attention_mask is None else attention_mask.bool()
        for block in self.blocks:
            x = block(x, key_padding, pos)
        return self.norm(x)

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None) -> MaskedLMOutput:
        return MaskedLMOutput(self.lm_head(self.hidden_states(input_ids, attention_mask)))

    def save_pretrained(self, path: str | Path) -> None:
        out = Path(path)
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(json.dumps(asdict(self.config), indent=2))
        state = {k: v.detach().contiguous() for k, v in self.state_dict().items()}
        save_file(state, str(out / "model.safetensors"))

    @classmethod
    def from_pretrained(
        cls, path: str | Path, device: str | torch.device = "cpu"
    ) -> TinyDiffusionLM:
        src = Path(path)
        if not (src / "config.json").is_file():
            raise FileNotFoundError(
                f"{src} has no config.json; is it a maskgrpo tiny-model folder?"
            )
        model = cls(TinyConfig(**json.loads((src / "config.json").read_text())))
        model.load_state_dict(load_file(str(src / "model.safetensors"), device=str(device)))
        return model.to(device)
