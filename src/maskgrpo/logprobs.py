"""Per-token log-probabilities of the clean tokens on a masked view.

One forward pass per view; the output head is applied only at the scored positions and the
log-softmax runs in float32, optionally over chunks of positions, so a 126k vocabulary never
materialises a full ``(B, L, V)`` float32 tensor. Under autograd each chunk is recomputed in
the backward pass (activation checkpointing), so chunking also bounds training memory.

When a model does not expose its trunk and output head separately (see :func:`split_head`),
the full logits are computed by the model and only the scored rows are converted to float32.
Models that post-process their logits after the head (soft-capping, scaling) must be used with
``use_head_split=False``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from .masking import MaskedView

__all__ = ["split_head", "token_logprobs", "view_logprobs"]

Trunk = Callable[[Tensor], Tensor]


def split_head(model: nn.Module) -> tuple[Trunk, nn.Module] | None:
    """Return ``(trunk, head)`` with ``head(trunk(ids))`` equal to the model's logits, or None.

    Works for the built-in tiny model and for Hugging Face models whose base model returns
    ``last_hidden_state`` and whose output embeddings are the LM head (Llama, ModernBERT...).
    A peft model is split through its base model (the adapters stay in place); a model with
    ``maskgrpo_head_split = False`` (set by the loader when the probe fails) is never split.
    """
    if getattr(model, "maskgrpo_head_split", True) is False:
        return None
    get_base = getattr(model, "get_base_model", None)
    if callable(get_base):  # peft: PeftModel -> the wrapped transformers model
        model = get_base()
        if getattr(model, "maskgrpo_head_split", True) is False:
            return None
    hidden = getattr(model, "hidden_states", None)
    head = getattr(model, "lm_head", None)
    if callable(hidden) and isinstance(head, nn.Module):
        return hidden, head
    get_head = getattr(model, "get_output_embeddings", None)
    prefix = getattr(model, "base_model_prefix", "")
    base = getattr(model, prefix, None) if prefix else None
    if not callable(get_head) or not isinstance(base, nn.Module) or base is model:
        return None
    out_head = get_head()
    if not isinstance(out_head, nn.Module):
        return None

    def trunk(ids: Tensor) -> Tensor:
        return base(input_ids=ids).last_hidden_state

    return trunk, out_head


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
) -> Tensor:
    """``log pi(targets | noisy_ids)`` at ``scored`` positions; ``(B, L)`` float32, 0 elsewhere.

    ``vocab_range=(lo, hi)`` restricts the softmax to ids ``lo <= id < hi`` (image codes in a
    unified vocabulary); targets are then given as full-vocabulary ids.
    """
    split = split_head(model) if use_head_split else None
    lo, hi = vocab_range if vocab_range is not None else (0, None)
    out = torch.zeros(scored.shape, dtype=torch.float32, device=noisy_ids.device)
    if not bool(scored.any()):
        return out
    idx_targets = targets[scored] - lo  # (N,)
    if split is not None:
        trunk, head = split
        rows = trunk(noisy_ids)[scored]  # (N, D)

        def to_logits(r: Tensor) -> Tensor:
            return head(r)[..., lo:hi]
    else:
        rows = model(noisy_ids).logits[scored]  # (N, V)

        def to_logits(r: Tensor) -> Tensor:
            return r[..., lo:hi]

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
