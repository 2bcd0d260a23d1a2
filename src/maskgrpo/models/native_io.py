"""What the native architectures share: their config object, output, weight loading, padding."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import torch
from safetensors.torch import load_file
from torch import Tensor, nn

from .layers import real_token_positions

M = TypeVar("M", bound=nn.Module)

__all__ = ["NativeConfig", "NativeOutput", "load_safetensors_folder", "padding_from"]


class NativeConfig:
    """A checkpoint's ``config.json`` as attributes (``cfg.d_model``), items and ``to_dict()``.

    The family of a native model is detected from it as from the published model's config
    (``model_type``, ``architectures``).
    """

    def __init__(self, values: dict[str, Any]) -> None:
        self._values = dict(values)

    @classmethod
    def from_folder(cls, folder: str | Path) -> NativeConfig:
        file = Path(folder) / "config.json"
        if not file.is_file():
            raise ValueError(f"{folder} has no config.json; point to a model checkpoint folder")
        return cls(json.loads(file.read_text()))

    def __getattr__(self, name: str) -> Any:
        values = self.__dict__.get("_values", {})
        if name in values:
            return values[name]
        raise AttributeError(name)

    def __getitem__(self, name: str) -> Any:
        return self._values[name]

    def get(self, name: str, default: Any = None) -> Any:
        return self._values.get(name, default)

    def to_dict(self) -> dict[str, Any]:
        return dict(self._values)

    def __repr__(self) -> str:
        return f"NativeConfig({self._values.get('model_type')!r})"


@dataclass
class NativeOutput:
    logits: Tensor  # (B, L, V)


def _weight_files(folder: Path) -> list[Path]:
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        return [folder / s for s in shards]
    single = folder / "model.safetensors"
    if single.is_file():
        return [single]
    raise ValueError(
        f"{folder} has no model.safetensors (or model.safetensors.index.json); native loading "
        "reads safetensors only: convert the weights or load the model with its own code"
    )


class RMSNorm(nn.Module):
    """RMS norm as LLaDA and Dream (Llama) write it: normalised in float32, cast back to the
    input's dtype, then scaled (and shifted, where LLaDA's config asks for a bias)."""

    def __init__(self, size: int, eps: float, bias: bool = False) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(size))
        self.bias = nn.Parameter(torch.zeros(size)) if bias else None

    def forward(self, x: Tensor) -> Tensor:
        normed = x.float()
        normed = (normed * torch.rsqrt(normed.pow(2).mean(-1, keepdim=True) + self.eps)).to(x.dtype)
        out = self.weight * normed
        return out if self.bias is None else out + self.bias


def build_from_folder(
    cls: type[M], folder: str | Path, *, dtype: torch.dtype, device: str | torch.device
) -> M:
    """``cls(NativeConfig.from_folder(folder))`` built on the meta device, its weights assigned
    from the folder's safetensors, in eval mode."""
    config = NativeConfig.from_folder(folder)
    with torch.device("meta"):
        model = cls(config)  # type: ignore[call-arg]
    load_safetensors_folder(model, folder, dtype=dtype, device=device)
    return model.eval()


def load_safetensors_folder(
    model: nn.Module, folder: str | Path, *, dtype: torch.dtype, device: str | torch.device
) -> None:
    """Assign the folder's weights to ``model`` (built on the meta device) by state-dict name.

    Every parameter must be in the files and every tensor in the files must be a parameter;
    otherwise a ``ValueError`` names the first differences.
    """
    state: dict[str, Tensor] = {}
    for file in _weight_files(Path(folder)):
        state.update(load_file(str(file), device=str(device)))
    expected = set(model.state_dict())
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or unexpected:
        raise ValueError(
            f"the weights in {folder} do not fit {type(model).__name__}: missing {missing[:5]}, "
            f"unexpected {unexpected[:5]}; is this a checkpoint of that architecture?"
        )
    state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
    model.load_state_dict(state, strict=True, assign=True)


def padding_from(attention_mask: Tensor | None, ids: Tensor) -> tuple[Tensor, Tensor | None]:
    """``(positions (B, L), key mask (B, 1, 1, L) or None)`` of a key-padding ``attention_mask``.

    Positions count real tokens (:func:`~maskgrpo.models.layers.real_token_positions`).
    ``attention_mask`` may be ``(B, L)`` or a 4-D boolean ``(B, 1, 1, L)`` key mask.
    """
    batch, length = ids.shape
    if attention_mask is None:
        return torch.arange(length, device=ids.device).expand(batch, length), None
    keep = attention_mask.reshape(batch, -1).bool()
    if keep.shape[1] != length:
        raise ValueError(
            f"attention_mask of shape {tuple(attention_mask.shape)} does not match ids of "
            f"shape {tuple(ids.shape)}; pass a (B, L) key-padding mask"
        )
    return real_token_positions(keep), keep[:, None, None, :]
