"""Re-masking a finished completion: the views behind MaskGRPO's importance estimator.

MaskGRPO (arXiv 2510.02880, Sec. 3) scores a rollout ``o`` by re-masking it to ``o^t`` and
reading the model's reconstruction log-likelihood at the masked positions. Iteration
``j = 1..mu`` of the inner loop uses mask ratio ``r_j = min(gamma + (1 - gamma) j / mu, 0.999)``.

Batch layout. Each row is ``[prompt][completion]``; the completion of row ``b`` occupies
positions ``prompt_length[b] <= n < seq_length[b]`` (``seq_length`` defaults to the row width).
Left-padded prompts: pass the padded prompt width (an int). Right-padded batches (rows of
different prompt lengths, completions directly after the prompt, pads at the end): pass
per-row ``prompt_length`` and ``seq_length`` tensors. Prompt tokens are never masked, except by
the ``"d1"`` baseline, and are never scored.

Every draw goes through the ``generator`` argument; the global RNG is never touched.

The strategies form a registry (:data:`REMASKERS`): a new estimator is one function of a
:class:`RemaskDraw` plus its ``@REMASKERS.register("name")`` line, and ``strategy="name"``
is then a valid configuration.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from .registry import Registry

__all__ = [
    "REMASKERS",
    "MaskedView",
    "RemaskDraw",
    "RemaskFn",
    "completion_span",
    "fading_keep_probability",
    "mask_ratios",
    "remask",
    "upto_first_eos",
]

_MAX_RATIO = 0.999


def mask_ratios(gamma: float, mu: int) -> list[float]:
    """Per-iteration mask ratios ``min(gamma + (1 - gamma) j / mu, 0.999)`` for ``j = 1..mu``.

    MaskGRPO Sec. 3.2 ("truncation"): ratios below ``gamma`` carry little signal.
    """
    if mu < 1:
        raise ValueError(f"mu (inner iterations) must be >= 1, got {mu}")
    if not 0.0 <= gamma < 1.0:
        raise ValueError(f"gamma (truncation) must be in [0, 1), got {gamma}; the paper uses 0.6")
    return [min(gamma + (1.0 - gamma) * j / mu, _MAX_RATIO) for j in range(1, mu + 1)]


@dataclass(frozen=True)
class MaskedView:
    """One or more masked views of a batch.

    ``noisy_ids``: ``(V, B, L)`` ids with the mask id at masked positions; ``scored``:
    ``(V, B, L)`` bool, the positions whose log-probs enter the loss. ``V`` is 1, except for
    ``"coupled"`` (a view and its complement, ``V = 2``, scored sets disjoint).
    """

    noisy_ids: Tensor
    scored: Tensor

    @property
    def num_views(self) -> int:
        return int(self.noisy_ids.shape[0])


def completion_span(
    input_ids: Tensor, prompt_length: int | Tensor, seq_length: int | Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """Return ``(in_completion (B, L) bool, position_in_completion (B, L) long)``."""
    batch, width = input_ids.shape
    device = input_ids.device
    start = _per_row(prompt_length, batch, device)
    end = _per_row(width if seq_length is None else seq_length, batch, device)
    if bool((start < 0).any()) or bool((start > end).any()) or bool((end > width).any()):
        raise ValueError(
            f"prompt_length {start.tolist()} / seq_length {end.tolist()} do not fit rows of "
            f"width {width}; need 0 <= prompt_length <= seq_length <= {width}"
        )
    pos = torch.arange(width, device=device).unsqueeze(0)  # (1, L)
    inside = (pos >= start.unsqueeze(1)) & (pos < end.unsqueeze(1))
    return inside, (pos - start.unsqueeze(1)).clamp_min(0)


def fading_keep_probability(position: Tensor, length: Tensor, ratio: float) -> Tensor:
    """Keep probability ``k_n = min(1, 2 (1 - r) d_n)``, ``d_n = 1 - n / (L - 1)`` (MaskGRPO Eq. 9).

    ``position`` and ``length`` broadcast; a completion of one token has ``d_0 = 1``.
    For ``r >= 0.5`` the expected masked fraction is exactly ``r``.
    """
    denom = (length - 1).clamp_min(1).to(torch.float32)
    decay = 1.0 - position.to(torch.float32) / denom
    return (2.0 * (1.0 - ratio) * decay).clamp(max=1.0)


@dataclass(frozen=True)
class RemaskDraw:
    """What a re-masking strategy decides from: the batch, where its completions are, and one
    uniform draw per position (drawn before the strategy runs, so every strategy starts from
    the same random stream)."""

    input_ids: Tensor  # (B, L)
    prompt_length: Tensor  # (B,) long: where each completion starts
    inside: Tensor  # (B, L) bool: completion positions
    position: Tensor  # (B, L) long: position inside the completion
    uniforms: Tensor  # (B, L) float in [0, 1)
    ratio: float
    mask_id: int
    generator: torch.Generator | None
    d1_prompt_prob: float
    coupled_range: tuple[float, float]

    def single(self, masked: Tensor) -> MaskedView:
        """One view masking (and scoring) ``masked`` ``(B, L)``."""
        noisy = self.input_ids.masked_fill(masked, self.mask_id)
        return MaskedView(noisy.unsqueeze(0), masked.unsqueeze(0))


RemaskFn = Callable[[RemaskDraw], MaskedView]
REMASKERS: Registry[RemaskFn] = Registry("re-masking strategy")


@REMASKERS.register("fading")
def fading_remask(d: RemaskDraw) -> MaskedView:
    """AR-like; completion token ``n`` masked with probability ``1 - k_n``
    (:func:`fading_keep_probability`): later tokens are masked more often (MaskGRPO)."""
    length = d.inside.sum(dim=1, keepdim=True)  # (B, 1)
    return d.single(d.inside & (d.uniforms >= fading_keep_probability(d.position, length, d.ratio)))


@REMASKERS.register("random")
def random_remask(d: RemaskDraw) -> MaskedView:
    """Each completion token masked i.i.d. with probability ``ratio``."""
    return d.single(d.inside & (d.uniforms < d.ratio))


@REMASKERS.register("d1")
def d1_remask(d: RemaskDraw) -> MaskedView:
    """The whole completion masked, each prompt token masked with ``d1_prompt_prob``
    (diffu-GRPO baseline); only completion positions are scored."""
    if not 0.0 <= d.d1_prompt_prob <= 1.0:
        raise ValueError(f"d1_prompt_prob must be in [0, 1], got {d.d1_prompt_prob}")
    columns = torch.arange(d.input_ids.shape[1], device=d.input_ids.device)
    in_prompt = columns < d.prompt_length[:, None]
    noisy = d.input_ids.masked_fill(
        d.inside | (in_prompt & (d.uniforms < d.d1_prompt_prob)), d.mask_id
    )
    return MaskedView(noisy.unsqueeze(0), d.inside.unsqueeze(0))


@REMASKERS.register("coupled")
def coupled_remask(d: RemaskDraw) -> MaskedView:
    """A view masking each completion token with a per-row ``t ~ U(coupled_range)`` plus its
    complement, so every completion token is scored exactly once (DiffuCoder). ``ratio`` is not
    used."""
    lo, hi = d.coupled_range
    if not 0.0 <= lo <= hi <= 1.0:
        raise ValueError(f"coupled_range must satisfy 0 <= lo <= hi <= 1, got {d.coupled_range}")
    rows = (d.input_ids.shape[0], 1)
    t = lo + (hi - lo) * torch.rand(rows, device=d.input_ids.device, generator=d.generator)
    first = d.inside & (d.uniforms < t)
    views = torch.stack([first, d.inside & ~first])  # (2, B, L)
    return MaskedView(d.input_ids.unsqueeze(0).masked_fill(views, d.mask_id), views)


def remask(
    input_ids: Tensor,
    prompt_length: int | Tensor,
    ratio: float,
    strategy: str,
    *,
    mask_id: int,
    generator: torch.Generator | None,
    seq_length: int | Tensor | None = None,
    d1_prompt_prob: float = 0.15,
    coupled_range: tuple[float, float] = (0.2, 0.8),
) -> MaskedView:
    """Re-mask the completions of ``input_ids`` (``(B, L)``) with one strategy of
    :data:`REMASKERS`: ``"fading"`` (MaskGRPO), ``"random"``, ``"d1"`` or ``"coupled"``."""
    strategy_fn = REMASKERS.get(strategy)
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"mask ratio must be in [0, 1], got {ratio}")
    if input_ids.dim() != 2:
        raise ValueError(f"input_ids must be (B, L), got shape {tuple(input_ids.shape)}")
    inside, position = completion_span(input_ids, prompt_length, seq_length)
    u = torch.rand(input_ids.shape, device=input_ids.device, generator=generator)  # (B, L)
    draw = RemaskDraw(
        input_ids=input_ids,
        prompt_length=_per_row(prompt_length, input_ids.shape[0], input_ids.device),
        inside=inside,
        position=position,
        uniforms=u,
        ratio=ratio,
        mask_id=mask_id,
        generator=generator,
        d1_prompt_prob=d1_prompt_prob,
        coupled_range=coupled_range,
    )
    return strategy_fn(draw)


def upto_first_eos(
    input_ids: Tensor,
    prompt_length: int | Tensor,
    eos_id: int,
    seq_length: int | Tensor | None = None,
) -> Tensor:
    """Completion positions up to and including the first end-of-sequence token: ``(B, L)`` bool.

    Tokens after the first EOS are padding in LLaDA-style generation and, by default, stay out
    of the loss.
    """
    inside, _ = completion_span(input_ids, prompt_length, seq_length)
    is_eos = (input_ids == eos_id) & inside
    eos_before = (is_eos.long().cumsum(dim=1) - is_eos.long()) > 0  # an EOS strictly earlier
    return inside & ~eos_before


def _per_row(value: int | Tensor, batch: int, device: torch.device) -> Tensor:
    if isinstance(value, Tensor):
        if value.shape != (batch,):
            raise ValueError(
                f"per-row lengths must have shape ({batch},), got {tuple(value.shape)}"
            )
        return value.to(device=device, dtype=torch.long)
    return torch.full((batch,), int(value), device=device, dtype=torch.long)
