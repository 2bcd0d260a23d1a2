"""Block-local draws: the head, the noise and the confidence only where a step can commit.

A step of semi-autoregressive decoding can commit only masked positions of the current block,
so :func:`draw_masked` applies the LM head, bans the ids that are never sampled, adds float64
Gumbel noise and takes the softmax confidence at those positions alone. The distribution of
every drawn token is the one a draw over the whole sequence gives (Gumbel-max at temperature
``T``: ``argmax(logits / T + g)``, ``g`` standard Gumbel in float64, LLaDA's precision;
confidence = temperature-1 softmax probability of the drawn token). At LLaDA's vocabulary of
126,464 ids the noise over every position of every row was 80% of a sampling step.

Random stream (a documented function of the generator, tested): at ``T > 0`` a step draws
float64 uniforms for the masked positions of the block in row-major order (row by row, and
left to right within a row), one vector of ``V`` uniforms per position (``V`` = the logits'
width). With one generator that is one ``rand(N, V)`` over the ``N`` masked positions of the
batch; with one generator per row, row ``b`` draws ``rand(n_b, V)`` from ``generator[b]``
alone, so a row's tokens do not depend on the rows it is batched with. ``T = 0`` draws nothing.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from .common import Generators

__all__ = ["draw_masked", "gumbel_", "masked_uniforms"]


def masked_uniforms(
    where: Tensor, width: int, generator: Generators, *, dtype: torch.dtype = torch.float64
) -> Tensor:
    """``(N, width)`` uniforms for the ``N`` True entries of ``where`` ``(B, n)``, row-major.

    One generator: ``rand(N, width)``. One generator per row: row ``b``'s ``n_b`` vectors come
    from ``generator[b]`` (``rand(n_b, width)``), stacked in row order.
    """
    device = where.device
    if generator is None or isinstance(generator, torch.Generator):
        count = int(where.sum())
        return torch.rand((count, width), dtype=dtype, device=device, generator=generator)
    if len(generator) != where.shape[0]:
        raise ValueError(
            f"got {len(generator)} per-row generators for a batch of {where.shape[0]} rows; "
            "pass one generator per row (or a single generator)"
        )
    counts = where.sum(dim=1).tolist()
    parts = [
        torch.rand((int(n), width), dtype=dtype, device=device, generator=g)
        for n, g in zip(counts, generator, strict=True)
    ]
    return torch.cat(parts) if parts else torch.empty((0, width), dtype=dtype, device=device)


def gumbel_(u: Tensor) -> Tensor:
    """Uniforms to standard Gumbel noise in place: ``-log(-log(u))`` with both logs finite.

    The same operations, in the same order, as :func:`maskgrpo.sampling.common.gumbel_noise`
    (bit for bit), without its temporaries: at LLaDA's vocabulary one ``(N, V)`` float64 tensor
    is hundreds of megabytes.
    """
    return u.clamp_min_(1e-300).log_().neg_().clamp_min_(1e-300).log_().neg_()


def draw_masked(
    hidden: Tensor,
    where: Tensor,
    head: Callable[[Tensor], Tensor],
    *,
    temperature: float,
    generator: Generators,
    mask_id: int,
    vocab_limit: int | None = None,
) -> tuple[Tensor, Tensor]:
    """Draw a token at every True position of ``where`` ``(B, n)`` from ``hidden`` ``(B, n, D)``.

    ``head`` maps hidden states ``(N, D)`` to logits ``(N, V)`` (the identity when ``hidden``
    already holds logits). ``mask_id`` and ids ``>= vocab_limit`` are never drawn. Returns
    ``tokens`` ``(B, n)`` long and ``conf`` ``(B, n)`` float32: the drawn token and its
    temperature-1 softmax probability at ``where``; elsewhere token ``mask_id`` and
    confidence ``-inf``.
    """
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}; use 0 for greedy decoding")
    tokens = torch.full(where.shape, mask_id, dtype=torch.long, device=where.device)
    conf = torch.full(where.shape, float("-inf"), dtype=torch.float32, device=where.device)
    if not bool(where.any()):
        return tokens, conf
    logits = head(hidden[where]).double()  # (N, V), row-major over the masked positions
    logits[:, mask_id] = float("-inf")  # the mask token is never a sample
    if vocab_limit is not None:  # nor an id the tokenizer cannot decode
        logits[:, vocab_limit:] = float("-inf")
    if temperature == 0:
        drawn = logits.argmax(dim=-1)
    else:
        noise = gumbel_(masked_uniforms(where, logits.shape[-1], generator))  # (N, V)
        noise += logits if temperature == 1 else logits / temperature
        drawn = noise.argmax(dim=-1)
        del noise
    probs = torch.softmax(logits, dim=-1).gather(-1, drawn.unsqueeze(-1)).squeeze(-1)
    tokens[where] = drawn
    conf[where] = probs.float()
    return tokens, conf
