"""Dream (``DreamModel``, Dream-org/Dream-v0-*): a Qwen2-shaped masked diffusion model.

Conventions, read off its published ``modeling_dream.py`` and ``generation_utils.py``:

- **the output at position ``i - 1`` predicts token ``i``**: ``diffusion_generate`` shifts the
  logits right by one, position 0 repeating its own (``cat([logits[:, :1], logits[:, :-1]])``).
  The family declares ``shift = True``; :mod:`maskgrpo.models.calls` applies the same shift, so
  the rest of the package reads position ``i`` as the prediction of token ``i``;
- padding: the hub code hands ``attention_mask`` to ``scaled_dot_product_attention`` unchanged,
  so a 2-D mask crashes; it wants a 4-D boolean mask (True = attend) and position ids that
  count real tokens only (``cumsum(mask) - 1``, as ``diffusion_generate`` builds them). Rows stay
  left-padded, as in Dream's own sampler. The mask here hides padding *keys* only,
  ``(B, 1, 1, L)``: a padding query row that hides everything would be all-masked;
- the trunk is ``model.model`` (``DreamBaseModel``, returning ``last_hidden_state``), the head
  ``lm_head``; the sampler's block cache runs the layers natively on the same modules
  (:mod:`maskgrpo.models.native_dream`); the mask token ``<|mask|>``; ``use_cache=False`` on every call; LoRA on the
  Qwen2 names ``q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj``.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from .family import Family, Head, Trunk, own_split
from .layers import Layers
from .native_dream import dream_layers

__all__ = ["DreamFamily"]


def dream_padding(keep: Tensor | None) -> dict[str, Any]:
    """Dream's padding arguments for key padding ``keep`` ``(B, L)``."""
    if keep is None:
        return {"use_cache": False}
    positions = keep.long().cumsum(dim=1) - 1
    positions = positions.masked_fill(~keep, 1)  # as diffusion_generate: any value, unattended
    return {"attention_mask": keep[:, None, None, :], "position_ids": positions, "use_cache": False}


class DreamFamily(Family):
    name = "dream"
    lora_preset = "dream"
    mask_tokens = ("<|mask|>",)
    shift = True
    roll_padding = False

    def matches(self, config: dict[str, Any]) -> bool:
        auto = config.get("auto_map") or {}
        refs = [v for v in auto.values() if isinstance(v, str)]
        names = [*(config.get("architectures") or []), *refs]
        return str(config.get("model_type", "")).lower() == "dream" or any(
            "DreamModel" in n for n in names
        )

    def forward_kwargs(self, keep: Tensor | None) -> dict[str, Any]:
        return dream_padding(keep)

    def trunk(self, model: nn.Module) -> Trunk | None:
        own = own_split(model)  # NativeDream
        if own is not None:
            return own[0]
        base = getattr(model, "model", None)
        if not isinstance(base, nn.Module):
            return None

        def trunk(ids: Tensor, keep: Tensor | None) -> Tensor:
            return base(input_ids=ids, return_dict=True, **dream_padding(keep)).last_hidden_state

        return trunk

    def head(self, model: nn.Module) -> Head | None:
        head = getattr(model, "lm_head", None)
        return head if isinstance(head, nn.Module) else None

    def layers(self, model: nn.Module) -> Layers | None:
        return dream_layers(model)
