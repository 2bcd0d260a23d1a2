"""Shape rasterisation and GenEval's relative-position rule, shared by the renderer and the reward.

Shapes are binary masks drawn on an integer grid; they stand in for GenEval's object classes.
Boxes are ``(x0, y0, x1, y1)`` with exclusive ``x1``/``y1`` in pixel units, ``y`` pointing down.
The position rule is GenEval's (Ghosh et al. 2023): the centre offset of A from B, shrunk by a
margin proportional to the two box sizes, normalised, and thresholded at 0.5 per axis.
"""

from __future__ import annotations

import numpy as np

__all__ = ["SHAPES", "POSITION_THRESHOLD", "RELATIONS", "relations", "shape_mask"]

SHAPES: tuple[str, ...] = ("square", "circle", "triangle", "cross", "bar")
RELATIONS: tuple[str, ...] = ("left of", "right of", "above", "below")
POSITION_THRESHOLD = 0.1  # GenEval's margin, as a fraction of the summed box sizes


def _square(size: int) -> np.ndarray:
    return np.ones((size, size), dtype=bool)


def _circle(size: int) -> np.ndarray:
    c = (size - 1) / 2
    yy, xx = np.mgrid[0:size, 0:size]
    return (xx - c) ** 2 + (yy - c) ** 2 <= (size / 2) ** 2 + 0.25


def _triangle(size: int) -> np.ndarray:
    """Apex up: row ``i`` has half-width growing linearly from the top to the base."""
    c = (size - 1) / 2
    yy, xx = np.mgrid[0:size, 0:size]
    half = (yy + 1) / size * size / 2
    return np.abs(xx - c) <= half - 0.5 + 1e-9


def _cross(size: int) -> np.ndarray:
    """A plus sign whose arms are a third of the size thick."""
    t = max(1, round(size / 3))
    lo = (size - t) // 2
    m = np.zeros((size, size), dtype=bool)
    m[lo : lo + t, :] = True
    m[:, lo : lo + t] = True
    return m


def _crop(mask: np.ndarray) -> np.ndarray:
    """Crop a mask to its tight bounding box, so drawn boxes equal detected boxes."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    return mask[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]


def shape_mask(
    shape: str, size: int, *, vertical: bool = False, thickness: int | None = None
) -> np.ndarray:
    """Binary mask ``(h, w)`` of ``shape`` at about ``size`` pixels, cropped to its extent.

    A bar is ``size`` long and ``thickness`` thick (default ``size / 3`` rounded, at least 2),
    horizontal unless ``vertical``.
    """
    if size < 3:
        raise ValueError(f"shape size must be >= 3 pixels, got {size}; use a larger image")
    if shape == "bar":
        thick = max(2, round(size / 3)) if thickness is None else thickness
        if not 1 <= thick < size:
            raise ValueError(f"bar thickness must be in [1, {size}), got {thick}")
        bar = np.ones((thick, size), dtype=bool)  # (h, w) horizontal
        return bar.T.copy() if vertical else bar
    makers = {"square": _square, "circle": _circle, "triangle": _triangle, "cross": _cross}
    if shape not in makers:
        raise ValueError(f"unknown shape {shape!r}; choose one of {SHAPES}")
    return _crop(makers[shape](size))


def relations(box_a: tuple[float, ...], box_b: tuple[float, ...]) -> set[str]:
    """Positions of A relative to B (GenEval): a subset of :data:`RELATIONS`.

    The centre offset is reduced on each axis by ``POSITION_THRESHOLD * (size_a + size_b)``
    (clamped at 0), divided by the norm of the raw offset; an axis component beyond 0.5 gives
    the relation. Overlapping centres give the empty set.
    """
    a = np.asarray(box_a, dtype=np.float64).reshape(2, 2)  # rows: (x0, y0), (x1, y1)
    b = np.asarray(box_b, dtype=np.float64).reshape(2, 2)
    offset = a.mean(axis=0) - b.mean(axis=0)  # (2,) dx, dy
    dims = np.abs(a[1] - a[0]) + np.abs(b[1] - b[0])  # (2,)
    revised = np.maximum(np.abs(offset) - POSITION_THRESHOLD * dims, 0.0) * np.sign(offset)
    if np.all(np.abs(revised) < 1e-3):
        return set()
    dx, dy = revised / np.linalg.norm(offset)
    out = set()
    if dx < -0.5:
        out.add("left of")
    if dx > 0.5:
        out.add("right of")
    if dy < -0.5:
        out.add("above")
    if dy > 0.5:
        out.add("below")
    return out
