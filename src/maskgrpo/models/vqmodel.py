"""A diffusers ``VQModel`` as an image tokenizer: uint8 images <-> codes on its latent grid.

aMUSEd and MUSE-style models tokenise images with a VQGAN (diffusers' ``VQModel``); this
adapter gives it the ``encode`` / ``decode`` / ``num_codes`` surface the image modality reads
(:class:`maskgrpo.modalities.image.ImageTokenizer`). Pixels enter as ``[0, 1]`` floats and leave
clamped to ``[0, 1]`` and rounded to uint8, as the aMUSEd pipeline decodes them. Codes are the
grid in raster order, ``(B, h * w)``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

__all__ = ["VQImageTokenizer", "load_vq_tokenizer"]


class VQImageTokenizer:
    """``encode``: uint8 ``(B, H, W, 3)`` -> ``(B, N)`` codes; ``decode``: back to uint8 pixels."""

    def __init__(self, vqvae: nn.Module, *, grid: tuple[int, int] | None = None) -> None:
        config: Any = getattr(vqvae, "config", None)
        if config is None or not hasattr(config, "num_vq_embeddings"):
            raise ValueError(
                f"{type(vqvae).__name__} is not a diffusers VQModel (no config.num_vq_embeddings)"
            )
        self.vqvae = vqvae.eval()
        self._num_codes = int(config.num_vq_embeddings)
        self._channels = int(config.latent_channels)
        self._grid = grid  # (h, w) of the latent grid; set by encode when not given

    @property
    def num_codes(self) -> int:
        return self._num_codes

    def _device(self) -> torch.device:
        return next(self.vqvae.parameters()).device

    @torch.no_grad()
    def encode(self, images: np.ndarray | Tensor) -> Tensor:
        x = torch.as_tensor(images)
        if x.dtype != torch.uint8 or x.ndim != 4 or x.shape[-1] != 3:
            raise ValueError(f"expected uint8 images (B, H, W, 3), got {x.dtype} {tuple(x.shape)}")
        pixels = x.permute(0, 3, 1, 2).float().div(255.0).to(self._device())  # (B, 3, H, W)
        latents = self.vqvae.encode(pixels).latents  # type: ignore[operator]  # (B, C, h, w)
        _, _, (_, _, indices) = self.vqvae.quantize(latents)  # type: ignore[operator]
        b, _, h, w = latents.shape
        self._grid = (h, w)
        return indices.reshape(b, h * w).long().cpu()

    def grid(self, tokens: int) -> tuple[int, int]:
        """The latent grid of ``tokens`` codes: the last encoded grid, else a square."""
        if self._grid is not None and self._grid[0] * self._grid[1] == tokens:
            return self._grid
        side = int(round(tokens**0.5))
        if side * side != tokens:
            raise ValueError(
                f"{tokens} codes do not form a square grid; encode an image first so the grid "
                "is known"
            )
        return side, side

    @torch.no_grad()
    def decode(self, codes: Tensor) -> np.ndarray:
        h, w = self.grid(codes.shape[1])
        shape = (codes.shape[0], h, w, self._channels)
        flat = codes.reshape(-1).to(self._device())
        out = self.vqvae.decode(flat, force_not_quantize=True, shape=shape)  # type: ignore[operator]
        pixels = out.sample.clamp(0.0, 1.0)  # (B, 3, H, W)
        return (pixels.permute(0, 2, 3, 1) * 255.0).round().to(torch.uint8).cpu().numpy()


def load_vq_tokenizer(folder: str | Path) -> VQImageTokenizer:
    """A ``VQModel`` saved with ``save_pretrained`` (needs ``diffusers``)."""
    try:
        from diffusers import VQModel
    except ImportError as err:
        raise ValueError(
            f"image_tokenizer={str(folder)!r} is a VQModel folder but diffusers is not "
            "installed; pip install -c constraints.txt diffusers"
        ) from err
    return VQImageTokenizer(VQModel.from_pretrained(str(folder)))
