"""A synthetic text-to-image world small enough for a CPU: coloured shapes on a plain background.

Prompts follow GenEval's six categories and phrasing (Ghosh et al. 2023) and come with specs in
GenEval's metadata format ``{"tag", "include": [{"class", "count", "color"?, "position"?}],
"exclude"?: [...], "prompt"}``. Simplifications against GenEval: five shape classes instead of
80 COCO classes, six palette colours instead of ten, counts 2..4, no distractor objects, and a
single plain background colour. :func:`render` draws an image that satisfies a spec, for
supervised data; :mod:`maskgrpo.rewards.geneval` checks a spec against pixels.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from itertools import permutations, product
from pathlib import Path

import numpy as np

from .geometry import RELATIONS, SHAPES, relations, shape_mask

__all__ = [
    "DEFAULT_TAG_MIX",
    "PALETTE",
    "TAGS",
    "SpecSplit",
    "WorldConfig",
    "all_specs",
    "load_tag_mix",
    "render",
    "sample_specs",
    "split_specs",
]

logger = logging.getLogger(__name__)

TAGS: tuple[str, ...] = (
    "single_object",
    "two_object",
    "counting",
    "colors",
    "position",
    "color_attr",
)

# Well separated in RGB and from the background, so nearest-colour classification is exact.
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "yellow": (235, 200, 0),
    "green": (30, 160, 50),
    "blue": (30, 70, 220),
    "purple": (140, 50, 180),
    "black": (20, 20, 20),
}

# Tag counts of GenEval's evaluation_metadata.jsonl (553 prompts, Ghosh et al. 2023), as
# proportions, so prompt generation works without the file. load_tag_mix() re-measures them.
DEFAULT_TAG_MIX: dict[str, float] = {
    "single_object": 80 / 553,
    "two_object": 99 / 553,
    "counting": 80 / 553,
    "colors": 94 / 553,
    "position": 100 / 553,
    "color_attr": 100 / 553,
}

_NUMBERS = {2: "two", 3: "three", 4: "four", 5: "five", 6: "six"}


@dataclass(frozen=True)
class WorldConfig:
    """Geometry of the world. Sizes are in pixels at ``image_size`` (defaults tuned for 32)."""

    image_size: int = 32
    classes: tuple[str, ...] = SHAPES
    colors: tuple[str, ...] = tuple(PALETTE)
    background: tuple[int, int, int] = (240, 240, 240)
    min_size: int = 7
    max_size: int = 10
    # Background pixels kept between objects on at least one axis: patch_size - 1 keeps every
    # 4x4 patch single-coloured, which the patch quantizer relies on.
    margin: int = 3
    max_count: int = 4
    palette: dict[str, tuple[int, int, int]] = field(default_factory=lambda: dict(PALETTE))
    # 0: free placement (any pixel position, sizes min_size..max_size, ``margin`` apart).
    # > 0: a grid of ``snap``-pixel cells, one object per cell drawn ``snap - 1`` pixels wide
    # (one background pixel to its neighbours). With the patch quantizer's patch_size == snap
    # every image token is one whole object or background: the code set is small and exact,
    # and a tiny model learns layouts in minutes instead of stitching objects from fragments.
    snap: int = 0

    @property
    def object_size(self) -> int | None:
        """The fixed object size in snapped layouts, ``None`` for free placement."""
        return self.snap - 1 if self.snap else None

    def __post_init__(self) -> None:
        if self.image_size < 16:
            raise ValueError(f"image_size must be >= 16, got {self.image_size}; use 32")
        if not 3 <= self.min_size <= self.max_size < self.image_size // 2:
            raise ValueError(
                f"need 3 <= min_size <= max_size < image_size/2, got {self.min_size}, "
                f"{self.max_size}, {self.image_size}; shrink the shapes or enlarge the image"
            )
        bad = [c for c in self.classes if c not in SHAPES]
        if bad:
            raise ValueError(f"unknown classes {bad}; choose from {SHAPES}")
        missing = [c for c in self.colors if c not in self.palette]
        if missing:
            raise ValueError(f"colours {missing} have no RGB in palette; add them to palette")
        if self.snap < 0 or (self.snap and (self.snap < 8 or self.image_size % self.snap)):
            raise ValueError(
                f"snap must be 0 (free placement) or a divisor >= 8 of image_size "
                f"{self.image_size}, got {self.snap}; e.g. image_size 32 with snap 8"
            )
        if self.snap and (self.image_size // self.snap) ** 2 < 2 * self.max_count:
            raise ValueError(
                f"a {self.image_size}px image with snap={self.snap} has too few cells for "
                f"max_count={self.max_count} objects; lower snap or max_count"
            )
        if not 2 <= self.max_count <= max(_NUMBERS):
            raise ValueError(f"max_count must be in 2..{max(_NUMBERS)}, got {self.max_count}")


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _plural(word: str) -> str:
    return word + ("es" if word.endswith(("s", "x", "ch", "sh")) else "s")


def _a(*words: str) -> str:
    """``"a red square"`` / ``"an orange circle"``: GenEval's article rule."""
    return f"{_article(words[0])} {' '.join(words)}"


def _single(c: str) -> dict:
    return {
        "tag": "single_object",
        "include": [{"class": c, "count": 1}],
        "prompt": f"a photo of {_a(c)}",
    }


def _two(a: str, b: str) -> dict:
    inc = [{"class": a, "count": 1}, {"class": b, "count": 1}]
    return {"tag": "two_object", "include": inc, "prompt": f"a photo of {_a(a)} and {_a(b)}"}


def _counting(c: str, n: int) -> dict:
    return {
        "tag": "counting",
        "include": [{"class": c, "count": n}],
        "exclude": [{"class": c, "count": n + 1}],
        "prompt": f"a photo of {_NUMBERS[n]} {_plural(c)}",
    }


def _colors(c: str, col: str) -> dict:
    inc = [{"class": c, "count": 1, "color": col}]
    return {"tag": "colors", "include": inc, "prompt": f"a photo of {_a(col, c)}"}


def _position(target: str, obj: str, rel: str) -> dict:
    inc = [{"class": target, "count": 1}, {"class": obj, "count": 1, "position": [rel, 0]}]
    return {"tag": "position", "include": inc, "prompt": f"a photo of {_a(obj)} {rel} {_a(target)}"}


def _color_attr(a: str, b: str, ca: str, cb: str) -> dict:
    inc = [{"class": a, "count": 1, "color": ca}, {"class": b, "count": 1, "color": cb}]
    prompt = f"a photo of {_a(ca, a)} and {_a(cb, b)}"
    return {"tag": "color_attr", "include": inc, "prompt": prompt}


def all_specs(tag: str, config: WorldConfig | None = None) -> list[dict]:
    """Every spec of ``tag`` in the world, in a fixed order (pairs use distinct classes/colours)."""
    cfg = config or WorldConfig()
    cls, cols = cfg.classes, cfg.colors
    if tag == "single_object":
        return [_single(c) for c in cls]
    if tag == "two_object":
        return [_two(a, b) for a, b in permutations(cls, 2)]
    if tag == "counting":
        return [_counting(c, n) for c in cls for n in range(2, cfg.max_count + 1)]
    if tag == "colors":
        return [_colors(c, col) for c in cls for col in cols]
    if tag == "position":
        return [_position(a, b, r) for (a, b), r in product(permutations(cls, 2), RELATIONS)]
    if tag == "color_attr":
        pairs = product(permutations(cls, 2), permutations(cols, 2))
        return [_color_attr(a, b, ca, cb) for (a, b), (ca, cb) in pairs]
    raise ValueError(f"unknown tag {tag!r}; choose one of {TAGS}")


@dataclass(frozen=True)
class SpecSplit:
    """Disjoint train / held-out specs per tag."""

    train: dict[str, list[dict]]
    heldout: dict[str, list[dict]]


def split_specs(
    seed: int, config: WorldConfig | None = None, heldout_fraction: float = 0.2
) -> SpecSplit:
    """Split every tag's specs into train / held-out with ``numpy.random.default_rng(seed)``.

    Each tag keeps at least one held-out and one train spec.
    """
    if not 0.0 < heldout_fraction < 1.0:
        raise ValueError(f"heldout_fraction must be in (0, 1), got {heldout_fraction}")
    rng = np.random.default_rng(seed)
    train: dict[str, list[dict]] = {}
    heldout: dict[str, list[dict]] = {}
    for tag in TAGS:
        specs = all_specs(tag, config)
        order = rng.permutation(len(specs))
        n_held = min(max(1, round(heldout_fraction * len(specs))), len(specs) - 1)
        heldout[tag] = [specs[i] for i in order[:n_held]]
        train[tag] = [specs[i] for i in order[n_held:]]
    return SpecSplit(train=train, heldout=heldout)


def load_tag_mix(path: str | Path) -> dict[str, float]:
    """Tag proportions measured from a GenEval metadata ``.jsonl`` (one spec per line)."""
    counts = dict.fromkeys(TAGS, 0)
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                tag = json.loads(line)["tag"]
                if tag not in counts:
                    raise ValueError(f"{path}: unknown tag {tag!r}; expected one of {TAGS}")
                counts[tag] += 1
    total = sum(counts.values())
    if total == 0:
        raise ValueError(f"{path} holds no specs; pass a GenEval metadata .jsonl")
    return {t: c / total for t, c in counts.items()}


def _allocate(n: int, mix: dict[str, float]) -> dict[str, int]:
    """Largest-remainder split of ``n`` over the tags so counts track the proportions."""
    total = sum(mix.values())
    if total <= 0 or any(p < 0 for p in mix.values()):
        raise ValueError(f"tag mix must be non-negative with a positive sum, got {mix}")
    exact = {t: n * p / total for t, p in mix.items()}
    counts = {t: int(v) for t, v in exact.items()}
    by_rest = sorted(mix, key=lambda t: (counts[t] - exact[t], TAGS.index(t)))
    for t in by_rest[: n - sum(counts.values())]:
        counts[t] += 1
    return counts


def sample_specs(
    pool: dict[str, list[dict]],
    n: int,
    rng: np.random.Generator,
    tag_mix: dict[str, float] | str | Path | None = None,
    *,
    cover: bool = False,
) -> list[dict]:
    """Draw ``n`` specs from ``pool`` (e.g. ``SpecSplit.train``) with the tags in ``tag_mix``.

    ``tag_mix`` is a ``{tag: proportion}`` dict, a path to GenEval metadata, or ``None`` for
    :data:`DEFAULT_TAG_MIX`. Counts per tag follow the proportions exactly up to rounding;
    specs within a tag are drawn uniformly with replacement, or with ``cover=True`` by cycling
    through a shuffled order, so every spec of a tag appears before any repeats (evaluation
    sets: as many distinct prompts as the quota allows); the result is shuffled.
    """
    mix = load_tag_mix(tag_mix) if isinstance(tag_mix, str | Path) else tag_mix or DEFAULT_TAG_MIX
    out: list[dict] = []
    for tag, k in _allocate(n, mix).items():
        if k == 0:
            continue
        if not pool.get(tag):
            raise ValueError(f"tag {tag!r} has weight in the mix but no specs in the pool")
        size = len(pool[tag])
        if cover:
            order = np.concatenate([rng.permutation(size) for _ in range(-(-k // size))])
            idx = order[:k].tolist()
        else:
            idx = rng.integers(0, size, size=k).tolist()
        out.extend(json.loads(json.dumps(pool[tag][i])) for i in idx)  # independent copies
    return [out[i] for i in rng.permutation(len(out))]


def _objects(spec: dict, cfg: WorldConfig, rng: np.random.Generator) -> list[tuple[int, str, str]]:
    """``(include index, class, colour)`` of every object the spec asks for."""
    objs = []
    for i, req in enumerate(spec["include"]):
        if req["class"] not in cfg.classes:
            raise ValueError(
                f"class {req['class']!r} is not in this world; use one of {cfg.classes}"
            )
        for _ in range(int(req["count"])):
            color = req.get("color") or cfg.colors[int(rng.integers(len(cfg.colors)))]
            objs.append((i, req["class"], color))
    return objs


def _separated(a: tuple[int, ...], b: tuple[int, ...], margin: int) -> bool:
    """Boxes ``(x0, y0, x1, y1)`` are at least ``margin`` background pixels apart on some axis."""
    gap_x = max(b[0] - a[2], a[0] - b[2])
    gap_y = max(b[1] - a[3], a[1] - b[3])
    return max(gap_x, gap_y) >= margin


def _position_ok(spec: dict, idx: int, box: tuple[int, ...], placed: list) -> bool:
    """The box of an object of include ``idx`` satisfies its position clause (if any)."""
    pos = spec["include"][idx].get("position")
    if not pos:
        return True
    rel, target = pos[0], int(pos[1])
    return all(rel in relations(box, b) for i, b, _ in placed if i == target)


def _layout(spec: dict, cfg: WorldConfig, rng: np.random.Generator, objs: list) -> list | None:
    """One attempt at random non-overlapping placement; ``None`` when it gets stuck."""
    placed: list[tuple[int, tuple[int, ...], np.ndarray]] = []
    size_px = cfg.image_size
    # Snapped: top-left corners on the cell grid; objects in different cells are at least one
    # pixel apart, so the margin check only has to rule out a shared cell.
    step, margin = (cfg.snap, 1) if cfg.snap else (1, cfg.margin)
    for idx, cls, _ in objs:
        vertical = bool(rng.integers(2))
        if cfg.object_size:  # bars a third thick (rounded up) keep the detector's minimum area
            size = cfg.object_size
            mask = shape_mask(cls, size, vertical=vertical, thickness=-(-size // 3))
        else:
            size = int(rng.integers(cfg.min_size, cfg.max_size + 1))
            if cls == "bar":
                size = round(size * 1.4)
            mask = shape_mask(cls, size, vertical=vertical)
        h, w = mask.shape
        for _ in range(100):
            x0 = step * int(rng.integers(0, (size_px - w) // step + 1))
            y0 = step * int(rng.integers(0, (size_px - h) // step + 1))
            box = (x0, y0, x0 + w, y0 + h)
            if all(_separated(box, b, margin) for _, b, _ in placed) and _position_ok(
                spec, idx, box, placed
            ):
                placed.append((idx, box, mask))
                break
        else:
            return None
    return placed


def render(spec: dict, rng: np.random.Generator, config: WorldConfig | None = None) -> np.ndarray:
    """Draw an image satisfying ``spec``: uint8 ``(H, W, 3)``.

    Objects get random sizes and positions, never touch (``config.margin``), and a colour from
    the spec or a random palette colour. Position clauses are met by rejection sampling with
    the same rule the reward checks.
    """
    cfg = config or WorldConfig()
    objs = _objects(spec, cfg, rng)
    for _ in range(50):
        placed = _layout(spec, cfg, rng, objs)
        if placed is not None:
            break
    else:
        raise RuntimeError(
            f"could not lay out {spec['prompt']!r} in {cfg.image_size}px; "
            "use a larger image_size or smaller max_size"
        )
    img = np.empty((cfg.image_size, cfg.image_size, 3), dtype=np.uint8)  # (H, W, 3)
    img[:] = cfg.background
    for (_, _, color), (_, box, mask) in zip(objs, placed, strict=True):
        x0, y0, x1, y1 = box
        img[y0:y1, x0:x1][mask] = cfg.palette[color]
    return img
