"""A fixed patch quantizer: images <-> grids of discrete codes, standing in for a VQ tokenizer.

Real image DDMs tokenise with a learned VQ model (MAGVIT-v2 in MMaDA, VQGAN in MUSE). Here each
``p x p`` patch maps to the nearest of ``K`` codebook patches (L2 in RGB). The codebook is
structured and fitted deterministically on rendered images of the shapes world: code 0 is the
plain background patch; the rest are ``ceil((K - 1) / C)`` binary foreground patterns picked
greedily (k-medoids on Hamming distance, weighted by how often each pattern occurs in rendered
patches), each painted in every one of the ``C`` palette colours (the
remainder takes the next pattern in the first colours). Small ``K`` keeps only solid and a few
edge patterns (blocky shapes); large ``K`` keeps shape edges. Simplifications: no learning, no
perceptual loss, and patches are assumed to hold at most one object colour (the renderer keeps
objects ``p - 1`` pixels apart).
"""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor

from .world import TAGS, WorldConfig, all_specs, render

__all__ = ["PatchQuantizer", "fit_quantizer"]

_FORMAT = "maskgrpo-patch-quantizer-v1"


def _to_patches(images: Tensor, p: int) -> Tensor:
    """``(B, H, W, 3)`` -> ``(B, N, p*p*3)`` in raster order of the patch grid."""
    b, h, w, c = images.shape
    if h % p or w % p:
        raise ValueError(f"image size {h}x{w} is not a multiple of patch size {p}")
    x = images.reshape(b, h // p, p, w // p, p, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(b, (h // p) * (w // p), p * p * c)


def _as_batch(images: np.ndarray | Tensor) -> Tensor:
    x = torch.as_tensor(images)
    if x.dtype != torch.uint8 or x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"expected uint8 images (B, H, W, 3), got {x.dtype} {tuple(x.shape)}")
    return x


class PatchQuantizer:
    """Nearest-codebook patch quantizer. ``codebook``: uint8 ``(K, p, p, 3)``."""

    def __init__(self, codebook: Tensor) -> None:
        if (
            codebook.dtype != torch.uint8
            or codebook.ndim != 4
            or codebook.shape[1] != codebook.shape[2]
        ):
            raise ValueError(
                f"codebook must be uint8 (K, p, p, 3), got {codebook.dtype} {tuple(codebook.shape)}"
            )
        self.codebook = codebook.contiguous()
        flat = codebook.reshape(codebook.shape[0], -1).float()  # (K, p*p*3)
        self._flat = flat
        self._sq = (flat**2).sum(-1)  # (K,)

    @property
    def num_codes(self) -> int:
        return int(self.codebook.shape[0])

    @property
    def patch_size(self) -> int:
        return int(self.codebook.shape[1])

    def encode(self, images: np.ndarray | Tensor, chunk: int = 8192) -> Tensor:
        """uint8 ``(B, H, W, 3)`` -> long codes ``(B, N)``, ``N = (H/p) * (W/p)``, raster order."""
        x = _to_patches(_as_batch(images), self.patch_size).float()  # (B, N, D)
        b, n, d = x.shape
        flat = x.reshape(-1, d)  # (B*N, D)
        out = torch.empty(flat.shape[0], dtype=torch.long)
        for i in range(0, flat.shape[0], chunk):
            part = flat[i : i + chunk]
            dist = self._sq[None] - 2 * part @ self._flat.T  # (chunk, K), ||x||^2 dropped
            out[i : i + chunk] = dist.argmin(-1)
        return out.reshape(b, n)

    def decode(self, codes: Tensor) -> Tensor:
        """long codes ``(B, N)`` with ``N`` a square -> uint8 images ``(B, H, W, 3)``."""
        if codes.ndim != 2:
            raise ValueError(f"codes must be (B, N), got shape {tuple(codes.shape)}")
        b, n = codes.shape
        side = math.isqrt(n)
        if side * side != n:
            raise ValueError(f"N={n} codes do not form a square grid; pass (B, side*side) codes")
        if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= self.num_codes):
            raise ValueError(
                f"codes must lie in [0, {self.num_codes}), got [{int(codes.min())}, "
                f"{int(codes.max())}]; strip mask/special ids before decoding"
            )
        p = self.patch_size
        x = self.codebook[codes.cpu()]  # (B, N, p, p, 3)
        x = x.reshape(b, side, side, p, p, 3).permute(0, 1, 3, 2, 4, 5)
        return x.reshape(b, side * p, side * p, 3).contiguous()

    def save(self, path: str | Path) -> None:
        """Write the codebook to a ``.safetensors`` file."""
        save_file({"codebook": self.codebook}, str(path), metadata={"format": _FORMAT})

    @classmethod
    def load(cls, path: str | Path) -> PatchQuantizer:
        """Read a quantizer written by :meth:`save`."""
        with safe_open(str(path), framework="pt") as fh:
            fmt = (fh.metadata() or {}).get("format")
            if fmt != _FORMAT:
                raise ValueError(
                    f"{path} is not a patch quantizer (format {fmt!r}, want {_FORMAT!r})"
                )
            return cls(fh.get_tensor("codebook"))


def _pattern_counts(images: np.ndarray, cfg: WorldConfig, p: int) -> Counter[bytes]:
    """How often each binary foreground pattern occurs among non-empty patches."""
    bg = np.asarray(cfg.background, dtype=np.uint8)
    fg = (images != bg).any(-1)  # (B, H, W)
    b, h, w = fg.shape
    pat = fg.reshape(b, h // p, p, w // p, p).transpose(0, 1, 3, 2, 4).reshape(-1, p * p)
    pat = pat[pat.any(-1)]
    return Counter(row.tobytes() for row in np.packbits(pat, axis=-1))


def _select_patterns(counts: Counter[bytes], n_pat: int, p: int) -> np.ndarray:
    """Greedy k-medoids on Hamming distance: pick ``n_pat`` patterns minimising the
    frequency-weighted distance of every observed pattern to its nearest pick. ``(P, p, p)``."""
    keys = sorted(counts, key=lambda k: (-counts[k], k))  # deterministic order
    bits = np.unpackbits(np.frombuffer(b"".join(keys), np.uint8).reshape(len(keys), -1), axis=-1)
    pats = bits[:, : p * p].astype(bool)  # (M, p*p)
    weight = np.array([counts[k] for k in keys], dtype=np.float64)  # (M,)
    ham = (pats[:, None, :] != pats[None, :, :]).sum(-1).astype(np.float64)  # (M, M)
    best = np.full(len(keys), float(p * p))  # distance to the nearest pick so far
    picks: list[int] = []
    for _ in range(n_pat):
        cost = (weight[:, None] * np.minimum(best[:, None], ham)).sum(0)  # (M,) if picked
        cost[picks] = np.inf
        j = int(cost.argmin())
        picks.append(j)
        best = np.minimum(best, ham[:, j])
    return pats[picks].reshape(n_pat, p, p)


def fit_quantizer(
    num_codes: int,
    *,
    seed: int,
    config: WorldConfig | None = None,
    patch_size: int = 4,
    num_images: int = 600,
) -> PatchQuantizer:
    """Fit the structured codebook on ``num_images`` renders (specs cycled over all tags).

    Deterministic for a given ``seed``. Raises ``ValueError`` if ``num_codes`` is below
    ``1 + C`` (background plus solid patches) or above what the rendered patterns support.
    """
    cfg = config or WorldConfig()
    n_col = len(cfg.colors)
    if num_codes < 1 + n_col:
        raise ValueError(
            f"num_codes must be >= {1 + n_col} (background + solid colours), got {num_codes}"
        )
    rng = np.random.default_rng(seed)
    specs = [s for t in TAGS for s in all_specs(t, cfg)]
    picks = rng.integers(0, len(specs), size=num_images)
    images = np.stack([render(specs[i], rng, cfg) for i in picks])  # (B, H, W, 3)
    counts = _pattern_counts(images, cfg, patch_size)
    n_pat = -(-(num_codes - 1) // n_col)
    if len(counts) < n_pat:
        raise ValueError(
            f"only {len(counts)} distinct patterns in {num_images} renders, {num_codes} codes need "
            f"{n_pat}; raise num_images or lower num_codes"
        )
    masks = _select_patterns(counts, n_pat, patch_size)  # (P, p, p)
    book = np.empty((num_codes, patch_size, patch_size, 3), dtype=np.uint8)
    book[:] = cfg.background
    for k in range(1, num_codes):
        pattern, color = divmod(k - 1, n_col)  # pattern-major: each pattern in every colour
        book[k][masks[pattern]] = cfg.palette[cfg.colors[color]]
    return PatchQuantizer(torch.from_numpy(book))
