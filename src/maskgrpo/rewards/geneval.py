"""A programmatic GenEval-style reward that reads decoded pixels of the shapes world.

GenEval (Ghosh et al. 2023) detects objects with a Mask2Former detector, classifies colours with
CLIP, and checks a prompt spec's ``include``/``exclude`` clauses. Here, in the synthetic world:
objects are 8-connected components of one palette colour (pixels take the nearest of the
background and palette colours), components below ``min_area`` pixels are ignored (the detector's
confidence threshold), the shape is read from simple geometry (bounding-box aspect, fill ratio,
vertical centre of mass), and detections are ranked by area where GenEval ranks by detector
confidence. The clause logic follows GenEval's evaluation exactly: an include needs at least
``count`` objects of the class; the top ``count`` must carry the colour; every one of them must
stand in the stated relation to every object matched by the target clause; an exclude fails
when at least ``count`` objects of the class are present.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..tasks.shapes.geometry import relations
from ..tasks.shapes.world import TAGS, WorldConfig

__all__ = [
    "Detection",
    "as_image",
    "SpecResult",
    "classify_shape",
    "detect",
    "detect_all",
    "evaluate_spec",
    "geneval_partial_reward",
    "geneval_reward",
    "label_components",
    "make_geneval_reward",
    "make_no_extra_reward",
    "requested_objects",
    "score_by_tag",
]

logger = logging.getLogger(__name__)

RewardFn = Callable[..., list[float | None]]


@dataclass(frozen=True)
class Detection:
    """One detected object: class, colour name, box ``(x0, y0, x1, y1)`` (exclusive), area."""

    cls: str
    color: str
    box: tuple[int, int, int, int]
    area: int


@dataclass(frozen=True)
class SpecResult:
    """Verdict on one spec: GenEval's pass/fail, the clause tally, and why it failed."""

    correct: bool
    satisfied: int
    total: int
    reasons: tuple[str, ...]


def as_image(img: np.ndarray | torch.Tensor) -> np.ndarray:
    """A uint8 ``(H, W, 3)`` numpy view of a completion, or a ValueError naming what is wrong."""
    arr = img.detach().cpu().numpy() if isinstance(img, torch.Tensor) else np.asarray(img)
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[-1] != 3:
        raise ValueError(
            f"expected a uint8 (H, W, 3) image, got {arr.dtype} {arr.shape}; decode codes to "
            "pixels first (rewards always score decoded images)"
        )
    return arr


def pixel_colors(img: np.ndarray, config: WorldConfig) -> np.ndarray:
    """Nearest reference colour per pixel: ``(H, W)`` int, -1 = background, else colour index."""
    refs = np.array([config.background] + [config.palette[c] for c in config.colors], np.int32)
    d = ((img[:, :, None, :].astype(np.int32) - refs[None, None]) ** 2).sum(-1)  # (H, W, C+1)
    return d.argmin(-1) - 1


def label_components(classes: np.ndarray) -> np.ndarray:
    """8-connected components of equal non-negative values: ``(H, W)`` labels, -1 background.

    Min-label propagation: each pixel starts with its flat index and repeatedly takes the
    smallest label of a same-class neighbour until nothing changes (at most H*W rounds).
    8-connectivity keeps an object whole when quantisation leaves only a diagonal link.
    """
    h, w = classes.shape
    fg = classes >= 0
    big = h * w
    labels = np.where(fg, np.arange(big).reshape(h, w), big)
    pad_cls = np.pad(classes, 1, constant_values=-1)  # (H+2, W+2)
    links = []  # (dy, dx, same-class mask (H, W)) for the 8 neighbours
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            if dy or dx:
                nb = pad_cls[1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w]
                links.append((dy, dx, fg & (nb == classes)))
    while True:
        pad = np.pad(labels, 1, constant_values=big)  # (H+2, W+2)
        new = labels
        for dy, dx, same in links:
            nb = pad[1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w]
            new = np.where(same, np.minimum(new, nb), new)
        if np.array_equal(new, labels):
            return np.where(fg, labels, -1)
        labels = new


def classify_shape(mask: np.ndarray) -> str:
    """Shape class of a component mask cropped to its box, from its geometry.

    Elongated (aspect >= 1.8) -> bar; nearly full box -> square; centre of mass low in the
    box -> triangle (apex up); otherwise a round fill -> circle, a sparse one -> cross.
    """
    h, w = mask.shape
    aspect = max(h, w) / min(h, w)
    fill = float(mask.mean())
    if aspect >= 1.8:
        return "bar"
    if fill >= 0.9:
        return "square"
    ys = np.nonzero(mask)[0]
    if (ys.mean() - (h - 1) / 2) / h > 0.06:
        return "triangle"
    return "circle" if fill >= 0.68 else "cross"


def detect(
    img: np.ndarray | torch.Tensor, config: WorldConfig | None = None, min_area: int = 20
) -> list[Detection]:
    """Objects in a uint8 ``(H, W, 3)`` image, largest first (the ranking GenEval takes)."""
    cfg = config or WorldConfig()
    colors = pixel_colors(as_image(img), cfg)  # (H, W)
    labels = label_components(colors)  # (H, W)
    out = []
    for lab in np.unique(labels[labels >= 0]):
        ys, xs = np.nonzero(labels == lab)
        if ys.size < min_area:
            continue
        x0, y0, x1, y1 = int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1
        crop = labels[y0:y1, x0:x1] == lab
        color = cfg.colors[int(colors[ys[0], xs[0]])]
        out.append(Detection(classify_shape(crop), color, (x0, y0, x1, y1), int(ys.size)))
    return sorted(out, key=lambda d: (-d.area, d.box))


def _check_include(
    req: dict, found: list[Detection], groups: list[list[Detection] | None]
) -> tuple[list[bool], list[str]]:
    """Clauses of one include requirement (count, colour?, position?) as GenEval checks them."""
    cls, count = req["class"], int(req["count"])
    top = found[:count]
    if len(top) < count:
        n_rest = ("color" in req) + ("position" in req)
        return [False] * (1 + n_rest), [f"expected {cls}>={count}, found {len(top)}"]
    ok, why = [True], []
    if "color" in req:
        n_col = sum(d.color == req["color"] for d in top)
        ok.append(n_col >= count)
        if n_col < count:
            why.append(f"expected {req['color']} {cls}>={count}, found {n_col}")
    if "position" in req:
        rel, target = req["position"][0], int(req["position"][1])
        tgt = groups[target] if target < len(groups) else None
        if not all(ok) or tgt is None:  # GenEval checks position only on a matched object
            ok.append(False)
            why.append(f"no target for {cls} to be {rel}")
        else:
            good = all(rel in relations(d.box, t.box) for d in top for t in tgt)
            ok.append(good)
            if not good:
                why.append(f"expected {cls} {rel} target")
    return ok, why


def evaluate_spec(spec: dict, detections: Sequence[Detection]) -> SpecResult:
    """Check a GenEval spec against detections (largest first): verdict and clause tally."""
    by_cls: dict[str, list[Detection]] = {}
    for d in detections:
        by_cls.setdefault(d.cls, []).append(d)
    clauses: list[bool] = []
    reasons: list[str] = []
    groups: list[list[Detection] | None] = []
    for req in spec.get("include", []):
        found = by_cls.get(req["class"], [])
        ok, why = _check_include(req, found, groups)
        clauses += ok
        reasons += why
        groups.append(found[: int(req["count"])] if all(ok) else None)
    for req in spec.get("exclude") or []:
        n = len(by_cls.get(req["class"], []))
        clauses.append(n < int(req["count"]))
        if not clauses[-1]:
            reasons.append(f"expected {req['class']}<{req['count']}, found {n}")
    return SpecResult(all(clauses), sum(clauses), len(clauses), tuple(reasons))


def _parse_spec(spec: dict | str) -> dict:
    return json.loads(spec) if isinstance(spec, str) else spec


def _scorable(spec: dict, cfg: WorldConfig) -> bool:
    reqs = list(spec.get("include", [])) + list(spec.get("exclude") or [])
    return all(
        r["class"] in cfg.classes and r.get("color", cfg.colors[0]) in cfg.colors for r in reqs
    )


def detect_all(
    completions: Sequence[np.ndarray | torch.Tensor],
    spec: Sequence[dict | str],
    config: WorldConfig,
    min_area: int = 20,
) -> list[tuple[dict, list[Detection]] | None]:
    """Parse each spec and detect the objects of its image once: ``(spec, detections)`` pairs.

    ``None`` marks a spec naming a class or colour outside the world (unscorable).
    """
    if len(spec) != len(completions):
        raise ValueError(f"got {len(completions)} completions but {len(spec)} specs")
    out: list[tuple[dict, list[Detection]] | None] = []
    for img, raw in zip(completions, spec, strict=True):
        s = _parse_spec(raw)
        if not _scorable(s, config):
            logger.warning("spec %r names things outside the world; unscorable", s.get("prompt"))
            out.append(None)
            continue
        out.append((s, detect(img, config, min_area)))
    return out


def requested_objects(spec: dict) -> int:
    """How many objects the spec's include clauses ask for."""
    return sum(int(r["count"]) for r in spec.get("include", []))


def make_geneval_reward(
    config: WorldConfig | None = None,
    *,
    partial: bool = False,
    min_area: int = 20,
    penalise_extra: bool = False,
) -> RewardFn:
    """Build a TRL-style reward ``(prompts, completions, *, spec, **_) -> list[float | None]``.

    ``completions`` are decoded uint8 ``(H, W, 3)`` images (numpy or torch); ``spec`` is the
    GenEval spec column (dicts or JSON strings). ``partial=False``: 1.0 when GenEval would
    accept the image, else 0.0. ``partial=True``: the fraction of clauses met (count, colour,
    position per include; one per exclude), a denser signal for GRPO. Specs naming a class or
    colour outside the world are unscorable (``None``). ``penalise_extra=True`` (training
    only) multiplies the score by ``min(1, requested / detected)`` objects, so crowding the
    image with extra objects (which GenEval's "at least" rules accept) never pays.
    """
    cfg = config or WorldConfig()

    def reward(
        prompts: Sequence[object],
        completions: Sequence[np.ndarray | torch.Tensor],
        *,
        spec: Sequence[dict | str],
        **_: object,
    ) -> list[float | None]:
        out: list[float | None] = []
        for item in detect_all(completions, spec, cfg, min_area):
            if item is None:
                out.append(None)
                continue
            s, found = item
            res = evaluate_spec(s, found)
            score = res.satisfied / max(res.total, 1) if partial else float(res.correct)
            if penalise_extra and found:
                score *= min(1.0, requested_objects(s) / len(found))
            out.append(score)
        return out

    name = "geneval_partial_reward" if partial else "geneval_reward"
    reward.__name__ = name + ("_no_extra" if penalise_extra else "")
    return reward


def make_no_extra_reward(config: WorldConfig | None = None, *, min_area: int = 20) -> RewardFn:
    """A training-side guard against the clutter GenEval's rules let through.

    GenEval's include clauses ask for *at least* ``count`` objects and only counting prompts
    exclude more, so an image crowded with every class passes "a photo of a square". This
    reward is ``min(1, requested / detected)``: 1.0 when the image holds no more objects than
    the spec's includes ask for, falling as extras appear, 0.0 for an empty image. It is for
    training mixes only; evaluation keeps GenEval's rules.
    """
    cfg = config or WorldConfig()

    def reward(
        prompts: Sequence[object],
        completions: Sequence[np.ndarray | torch.Tensor],
        *,
        spec: Sequence[dict | str],
        **_: object,
    ) -> list[float | None]:
        out: list[float | None] = []
        for item in detect_all(completions, spec, cfg, min_area):
            if item is None:
                out.append(None)
                continue
            s, found = item
            out.append(min(1.0, requested_objects(s) / len(found)) if found else 0.0)
        return out

    reward.__name__ = "no_extra_objects"
    return reward


geneval_reward: RewardFn = make_geneval_reward()
geneval_partial_reward: RewardFn = make_geneval_reward(partial=True)


def score_by_tag(tags: Sequence[str], rewards: Sequence[float | None]) -> dict[str, float]:
    """GenEval's summary: the mean per tag and ``overall`` = the mean of the tag means."""
    per: dict[str, list[float]] = {}
    for tag, r in zip(tags, rewards, strict=True):
        if r is not None:
            per.setdefault(tag, []).append(float(r))
    out = {t: float(np.mean(per[t])) for t in TAGS if t in per}
    if out:
        out["overall"] = float(np.mean(list(out.values())))
    return out
