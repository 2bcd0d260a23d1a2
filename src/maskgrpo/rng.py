"""Private generators derived from stable ids, e.g. ``(seed, step, "mask", inner_iteration)``.

Library code never seeds or draws from the global RNG; every random decision uses a generator
from :func:`derive_generator`, so the same ids give the same draws in any process.
"""

from __future__ import annotations

import hashlib

import torch

__all__ = ["derive_generator", "derive_seed"]


def derive_seed(*ids: object) -> int:
    """A 63-bit seed from the ``repr`` of the ids (stable across processes and runs)."""
    digest = hashlib.blake2b(repr(ids).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


def derive_generator(*ids: object, device: torch.device | str = "cpu") -> torch.Generator:
    gen = torch.Generator(device=device)
    gen.manual_seed(derive_seed(*ids))
    return gen
