"""Per-token log-probabilities of the clean tokens on a masked view.

One forward pass per view; the output head is applied only at the scored positions and the
log-softmax runs in float32, optionally over chunks of positions, so a 126k vocabulary never
materialises a full ``(B, L, V)`` float32 tensor. Under autograd each chunk is recomputed in
the backward pass (activation checkpointing), so chunking also bounds training memory.

The model is called through :func:`maskgrpo.models.calls.model_call`, which owns each family's
conventions: Dream's shifted logits come back aligned (position ``i`` scores token ``i``),
padding is expressed in the form the family expects and is exact (a left-padded row scores as
it would alone; the padding is the leading run of pad tokens of the clean targets), and the
final hidden states are taken before the head. When a model does not expose its hidden states
(see :func:`split_head`), the full logits are computed and only the scored rows are converted
to float32. Models that post-process their logits after the head (soft-capping, scaling) must
be used with ``use_head_split=False``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from .masking import MaskedView
from .models.calls import model_call

__all__ = ["split_head", "token_logprobs", "view_logprobs"]

Trunk = Callable[[Tensor], Tensor]


def split_head(model: nn.Module) -> tuple[Trunk, Callable[[Tensor], Tensor]] | None:
    """``(trunk, head)`` with ``head(trunk(ids))`` equal to the model's aligned logits, or None.

    Works for the built-in tiny model, LLaDA, MMaDA, Dream and ``transformers`` models whose
    base model returns ``last_hidden_state`` (Llama, ModernBERT...), also under a peft adapter.
    None when the model's hidden states are unavailable (then log-probs use the full logits).
    """
    call = model_call(model)
    if not call.lean:
        return None
    return (lambda ids: call.hidden_states(ids)), call.head


def _gather_logprob(logits: Tensor, targets: Tensor) -> Tensor:
    logits = logits.float()  # log-softmax always in float32
    return logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, dim=-1)


def _rows_logprob(
    rows: Tensor,
    targets: Tensor,
    to_logits: Callable[[Tensor], Tensor],
    chunk_size: int | None,
) -> Tensor:
    """Log-prob of ``targets`` (N,) from ``rows`` (N, D) mapped through ``to_logits``."""
    if chunk_size is None or rows.shape[0] <= chunk_size:
        return _gather_logprob(to_logits(rows), targets)

    def piece(r: Tensor, t: Tensor) -> Tensor:
        return _gather_logprob(to_logits(r), t)

    out = []
    for start in range(0, rows.shape[0], chunk_size):
        r, t = rows[start : start + chunk_size], targets[start : start + chunk_size]
        if torch.is_grad_enabled():
            out.append(checkpoint(piece, r, t, use_reentrant=False))
        else:
            out.append(piece(r, t))
    return torch.cat(out)


def token_logprobs(
    model: nn.Module,
    noisy_ids: Tensor,
    targets: Tensor,
    scored: Tensor,
    *,
    chunk_size: int | None = None,
    vocab_range: tuple[int, int] | None = None,
    use_head_split: bool = True,
    attention: Tensor | None = None,
) -> Tensor:
    """``log pi(targets | noisy_ids)`` at ``scored`` positions; ``(B, L)`` float32, 0 elsewhere.

    ``vocab_range=(lo, hi)`` restricts the softmax to ids ``lo <= id < hi`` (image codes in a
    unified vocabulary); targets are then given as full-vocabulary ids. ``attention`` ``(B, L)``
    marks real tokens (left padding); by default it is inferred from ``targets``.
    """
    lo, hi = vocab_range if vocab_range is not None else (0, None)
    out = torch.zeros(scored.shape, dtype=torch.float32, device=noisy_ids.device)
    if not bool(scored.any()):
        return out
    call = model_call(model, lean=use_head_split)
    keep = attention if attention is not None else call.padding(targets)
    idx_targets = targets[scored] - lo  # (N,)
    rows = call.hidden_states(noisy_ids, keep)[scored]  # (N, D), or (N, V) without the split

    def to_logits(r: Tensor) -> Tensor:
        return call.head(r)[..., lo:hi]

    return out.masked_scatter(scored, _rows_logprob(rows, idx_targets, to_logits, chunk_size))


def view_logprobs(
    model: nn.Module,
    view: MaskedView,
    targets: Tensor,
    *,
    micro_batch_size: int | None = None,
    chunk_size: int | None = None,
    vocab_range: tuple[int, int] | None = None,
) -> tuple[Tensor, Tensor]:
    """Log-probs of ``targets`` (``(B, L)``) on every view of ``view``, merged into one row each.

    The views of one :class:`MaskedView` have disjoint scored sets, so their log-probs merge
    into ``(B, L)``; returns ``(logp, scored)`` with ``scored`` the union. ``micro_batch_size``
    splits rows so old/reference passes over a large batch fit in memory.
    """
    batch = targets.shape[0]
    step = micro_batch_size or batch
    logp = torch.zeros(targets.shape, dtype=torch.float32, device=targets.device)
    for v in range(view.num_views):
        parts = [
            token_logprobs(
                model,
                view.noisy_ids[v, s : s + step],
                targets[s : s + step],
                view.scored[v, s : s + step],
                chunk_size=chunk_size,
                vocab_range=vocab_range,
            )
            for s in range(0, batch, step)
        ]
        logp = logp + torch.cat(parts)
    return logp, view.scored.any(dim=0)
