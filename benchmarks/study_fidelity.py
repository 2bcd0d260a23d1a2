"""Estimator fidelity: MaskGRPO's masked-view log-ratios against the exact sampler log-ratio.

The toy. A tiny bidirectional transformer over 4 content characters (plus the tokenizer's
specials) is fit for a few hundred steps to a two-rule mixture, so that completion tokens depend
on the prompt *and* on each other. Completions of ``L`` tokens are decoded with the project's
sampler at temperature 1, ``remasking="random"``, one token per step (``steps = L``, one block).

Exact likelihood. At each step that sampler reveals one masked position chosen uniformly and
draws its token from the softmax over every id but the mask id. So, with ``o_S`` the completion
with only the positions in ``S`` visible,

    p(o | c) = (1 / L!) * sum over orders s of prod_t p(o_{s_t} | c, o_{s_<t})

which a dynamic programme over the ``2^L`` subsets computes with ``2^L`` forward passes. The
exact target is ``D(o) = log p_theta(o | c) - log p_old(o | c)`` between the fitted model
(``old``) and a copy with Gaussian noise on every weight (``theta``).

Estimators. For each strategy, ``mu`` views per "rollout batch" at the trainer's ratios
``r_j = min(gamma + (1 - gamma) j / mu, 0.999)``, drawn by :func:`maskgrpo.masking.remask`, and
per-token log-probs from :func:`maskgrpo.logprobs.token_logprobs` (the trainer's function; its
softmax includes the mask id, as in training). Two summaries per completion, averaged over the
``mu`` views: ``sum`` = sum over scored tokens of ``logp_theta - logp_old`` (compared with
``D(o)``) and ``mean`` = its mean over scored tokens (compared with ``D(o) / L``). The trainer
uses neither directly: it clips per-token ratios. These numbers say how well the per-token
surrogate tracks the sequence-level change it stands in for. All completion positions are scored
(EOS is an ordinary token in this toy). The any-order ELBO difference (expectation over orders
of the summed conditional log-ratios) is computed exactly as a reference row.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from maskgrpo.logprobs import token_logprobs
from maskgrpo.masking import mask_ratios, remask
from maskgrpo.models.tiny import TinyConfig, TinyDiffusionLM
from maskgrpo.rng import derive_generator
from maskgrpo.sampling.llada import generate
from maskgrpo.tokenizer import CharTokenizer
from maskgrpo.tokens import TokenSpec

ALPHABET = "abcd"
PROMPT_LEN = 2
ESTIMATORS: tuple[tuple[str, str, float], ...] = (
    ("fading, gamma 0.6", "fading", 0.6),
    ("fading, gamma 0", "fading", 0.0),
    ("random, gamma 0.6", "random", 0.6),
    ("random, gamma 0", "random", 0.0),
    ("d1", "d1", 0.0),
    ("coupled", "coupled", 0.0),
)


@dataclass(frozen=True)
class FidelityConfig:
    completion_length: int = 4
    completions: int = 1024
    replicates: int = 32  # independent draws of the mu views per completion
    mu: int = 4
    noise: float = 0.05  # Gaussian noise on weights, relative to each tensor's RMS
    fit_steps: int = 300
    seed: int = 0


def toy_spec() -> tuple[CharTokenizer, TokenSpec]:
    tok = CharTokenizer(ALPHABET)
    return tok, TokenSpec.from_objects(tok)


def _toy_targets(prompts: Tensor, length: int, gen: torch.Generator) -> Tensor:
    """Content indices ``(B, length)``: rule A (0.6) or rule B (0.4), 10% of tokens uniform."""
    a, b = prompts[:, :1], prompts[:, 1:2]
    n = torch.arange(length).unsqueeze(0)
    rule_a = (a + n * b) % 4
    rule_b = (3 * a + b + 2 * n) % 4
    pick_b = torch.rand((prompts.shape[0], 1), generator=gen) < 0.4
    out = torch.where(pick_b, rule_b, rule_a)
    noise = torch.rand(out.shape, generator=gen) < 0.1
    return torch.where(noise, torch.randint(0, 4, out.shape, generator=gen), out)


def fit_toy_model(cfg: FidelityConfig) -> tuple[TinyDiffusionLM, TokenSpec]:
    """The ``old`` policy: masked-diffusion fit of the toy mixture (completion positions only)."""
    tok, spec = toy_spec()
    width = PROMPT_LEN + cfg.completion_length
    gen = derive_generator(cfg.seed, "fidelity", "init")
    torch_cfg = TinyConfig(vocab_size=len(tok), dim=32, n_layers=2, n_heads=2, max_length=width)
    model = TinyDiffusionLM(torch_cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.02 if p.dim() > 1 else p)
    first = tok.encode(ALPHABET[0])[0]  # content ids are consecutive in alphabet order
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    data = derive_generator(cfg.seed, "fidelity", "data")
    model.train()
    for _ in range(cfg.fit_steps):
        prompts = torch.randint(0, 4, (128, PROMPT_LEN), generator=data)
        ids = torch.cat([prompts, _toy_targets(prompts, cfg.completion_length, data)], 1) + first
        t = torch.rand((128, 1), generator=data).clamp_min(0.05)
        masked = torch.rand(ids.shape, generator=data) < t
        masked[:, :PROMPT_LEN] = False
        logits = model(ids.masked_fill(masked, spec.mask_id)).logits
        loss = nn.functional.cross_entropy(logits[masked], ids[masked])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval(), spec


def perturbed(model: TinyDiffusionLM, noise: float, seed: int) -> TinyDiffusionLM:
    """A copy with ``N(0, (noise * rms)^2)`` added to every weight tensor."""
    other = TinyDiffusionLM(model.config)
    other.load_state_dict(model.state_dict())
    gen = derive_generator(seed, "fidelity", "perturb", noise)
    with torch.no_grad():
        for p in other.parameters():
            rms = p.pow(2).mean().sqrt().clamp_min(1e-8)
            p.add_(torch.randn(p.shape, generator=gen) * noise * rms)
    return other.eval()


def sampler_logprobs(model: nn.Module, ids: Tensor, spec: TokenSpec) -> Tensor:
    """Log-softmax over every id except the mask id (the sampler's distribution): ``(B, W, V)``."""
    logits = model(ids).logits.double()
    logits[..., spec.mask_id] = float("-inf")
    return torch.log_softmax(logits, dim=-1)


@torch.no_grad()
def exact_logprob(
    model: nn.Module, seqs: Tensor, prompt_len: int, spec: TokenSpec
) -> tuple[Tensor, Tensor]:
    """Exact ``(log p(o | c), any-order ELBO)`` under uniform-order one-token-per-step decoding.

    ``seqs``: ``(B, P + L)``. Returns two ``(B,)`` float64 tensors.
    """
    length = seqs.shape[1] - prompt_len
    subsets = list(itertools.product((False, True), repeat=length))  # visible positions
    cond: dict[tuple[bool, ...], Tensor] = {}  # S -> (B, L) log p(o_i | o_S)
    for vis in subsets:
        hidden = torch.tensor([not v for v in vis])
        ids = seqs.clone()
        ids[:, prompt_len:][:, hidden] = spec.mask_id
        lp = sampler_logprobs(model, ids, spec)[:, prompt_len:]  # (B, L, V)
        cond[vis] = lp.gather(-1, seqs[:, prompt_len:].unsqueeze(-1)).squeeze(-1)
    batch = seqs.shape[0]
    log_f = {subsets[0]: torch.zeros(batch, dtype=torch.float64)}
    elbo = torch.zeros(batch, dtype=torch.float64)
    for vis in sorted(subsets, key=sum):
        if vis not in log_f:
            continue
        free = [i for i, v in enumerate(vis) if not v]
        if not free:
            continue
        step = -math.log(len(free))  # the next position is uniform over the masked ones
        elbo = elbo + sum(cond[vis][:, i] for i in free) / len(free) / math.comb(length, sum(vis))
        for i in free:
            nxt = tuple(v or k == i for k, v in enumerate(vis))
            term = log_f[vis] + step + cond[vis][:, i]
            log_f[nxt] = term if nxt not in log_f else torch.logaddexp(log_f[nxt], term)
    return log_f[tuple([True] * length)], elbo


def estimator_values(
    old: nn.Module,
    new: nn.Module,
    seqs: Tensor,
    spec: TokenSpec,
    strategy: str,
    gamma: float,
    mu: int,
    replicate_seed: tuple[Any, ...],
) -> tuple[Tensor, Tensor]:
    """``(sum, mean)`` per completion, each averaged over ``mu`` views: ``(B,)`` float64."""
    sums, means = [], []
    for j, ratio in enumerate(mask_ratios(gamma, mu)):
        gen = derive_generator(*replicate_seed, "view", j)
        view = remask(seqs, PROMPT_LEN, ratio, strategy, mask_id=spec.mask_id, generator=gen)
        delta = torch.zeros(seqs.shape, dtype=torch.float64)
        for v in range(view.num_views):
            ids, scored = view.noisy_ids[v], view.scored[v]
            lp_new = token_logprobs(new, ids, seqs, scored).double()
            lp_old = token_logprobs(old, ids, seqs, scored).double()
            delta = delta + (lp_new - lp_old)
        scored_any = view.scored.any(dim=0)
        count = scored_any.sum(dim=1)
        sums.append(delta.sum(dim=1))
        mean = delta.sum(dim=1) / count.clamp_min(1)
        means.append(torch.where(count > 0, mean, torch.full_like(mean, float("nan"))))
    return torch.stack(sums).mean(0), torch.stack(means).nanmean(0)


def _stats(est: Tensor, exact: Tensor) -> dict[str, float]:
    """``est`` ``(R, B)`` against ``exact`` ``(B,)``: bias, RMSE, view noise, correlations, slope."""
    keep = ~est.isnan().any(dim=0)
    est, exact = est[:, keep], exact[keep]
    err = est - exact
    flat_e, flat_x = est.flatten(), exact.expand_as(est).flatten()
    avg = est.mean(0)
    return {
        "bias": float(err.mean()),
        "rmse": float(err.pow(2).mean().sqrt()),
        "view_sd": float(est.var(dim=0, unbiased=True).mean().sqrt()) if est.shape[0] > 1 else 0.0,
        "corr": _corr(flat_e, flat_x),
        "corr_view_avg": _corr(avg, exact),
        "slope": float(
            ((avg - avg.mean()) * (exact - exact.mean())).sum()
            / (exact - exact.mean()).pow(2).sum().clamp_min(1e-30)
        ),
        "n": int(keep.sum()),
    }


def _corr(a: Tensor, b: Tensor) -> float:
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / (a.norm() * b.norm()).clamp_min(1e-30))


def run_fidelity(cfg: FidelityConfig) -> dict[str, Any]:
    """The whole experiment; returns a JSON-ready dict."""
    old, spec = fit_toy_model(cfg)
    new = perturbed(old, cfg.noise, cfg.seed)
    tok, _ = toy_spec()
    gen = derive_generator(cfg.seed, "fidelity", "prompts")
    first = tok.encode(ALPHABET[0])[0]
    prompts = torch.randint(0, 4, (cfg.completions, PROMPT_LEN), generator=gen) + first
    length = cfg.completion_length
    seqs = generate(
        old,
        prompts,
        mask_id=spec.mask_id,
        gen_length=length,
        steps=length,
        block_length=length,
        temperature=1.0,
        remasking="random",
        generator=derive_generator(cfg.seed, "fidelity", "rollout"),
    ).sequences
    lp_old, elbo_old = exact_logprob(old, seqs, PROMPT_LEN, spec)
    lp_new, elbo_new = exact_logprob(new, seqs, PROMPT_LEN, spec)
    exact = lp_new - lp_old
    rows: dict[str, Any] = {}
    with torch.no_grad():
        for name, strategy, gamma in ESTIMATORS:
            reps = [
                estimator_values(
                    old, new, seqs, spec, strategy, gamma, cfg.mu, (cfg.seed, "fidelity", name, r)
                )
                for r in range(cfg.replicates)
            ]
            s = torch.stack([x[0] for x in reps])  # (R, B)
            m = torch.stack([x[1] for x in reps])
            rows[name] = {"sum": _stats(s, exact), "mean": _stats(m, exact / length)}
    elbo = (elbo_new - elbo_old).unsqueeze(0)
    rows["any-order ELBO (exact)"] = {
        "sum": _stats(elbo, exact),
        "mean": _stats(elbo / length, exact / length),
    }
    return {
        "config": cfg.__dict__,
        "exact": {
            "mean_abs": float(exact.abs().mean()),
            "sd": float(exact.std()),
            "mean_logp_old": float(lp_old.mean()),
            "entropy_per_token_nats": float(-lp_old.mean() / length),
        },
        "estimators": rows,
        "exact_probabilities_sum_check": _normalisation_check(old, spec, length),
    }


@torch.no_grad()
def _normalisation_check(model: nn.Module, spec: TokenSpec, length: int) -> float:
    """Sum of the exact probabilities of every completion of one prompt (should be 1)."""
    emitted = [i for i in range(spec.vocab_size) if i != spec.mask_id]
    tok, _ = toy_spec()
    prompt = torch.tensor(tok.encode(ALPHABET[:PROMPT_LEN]))
    if len(emitted) ** length > 5000:
        return float("nan")
    comps = torch.tensor(list(itertools.product(emitted, repeat=length)))
    seqs = torch.cat([prompt.expand(len(comps), -1), comps], dim=1)
    lp, _ = exact_logprob(model, seqs, PROMPT_LEN, spec)
    return float(lp.exp().sum())
