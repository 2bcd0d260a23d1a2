"""Evaluation statistics: pass@k, bootstrap intervals and the Wilson interval.

pass@k uses the unbiased estimator of Chen et al. 2021 ("Evaluating Large Language Models
Trained on Code", arXiv 2107.03374): with ``n`` samples of which ``c`` are correct,
``pass@k = 1 - C(n - c, k) / C(n, k)``, computed as the product
``1 - prod_{i = n - c + 1}^{n} (1 - k / i)`` so no large binomials are formed.
"""

from __future__ import annotations

from collections.abc import Sequence
from statistics import NormalDist

import numpy as np


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k for one problem with ``n`` samples, ``c`` of them correct."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass_at_k needs 0 <= c <= n and 1 <= k <= n; got n={n}, c={c}, k={k}.")
    if n - c < k:
        return 1.0
    factors = 1.0 - k / np.arange(n - c + 1, n + 1, dtype=np.float64)
    return float(1.0 - np.prod(factors))


def mean_pass_at_k(correct_counts: Sequence[int], n: int, k: int) -> float:
    """pass@k averaged over problems that each have ``n`` samples."""
    if not correct_counts:
        raise ValueError("mean_pass_at_k needs at least one problem; got none.")
    return float(np.mean([pass_at_k(n, c, k) for c in correct_counts]))


def pass_at_1(correct: np.ndarray) -> float:
    """Mean fraction of correct samples per problem; ``correct`` has shape (problems, samples)."""
    correct = np.asarray(correct, dtype=np.float64)
    if correct.ndim != 2 or correct.size == 0:
        raise ValueError(
            f"pass_at_1 needs a non-empty (problems, samples) array, got {correct.shape}."
        )
    return float(correct.mean(axis=1).mean())


def bootstrap_ci(
    values: Sequence[float] | np.ndarray,
    *,
    seed: int,
    n_resamples: int = 10_000,
    confidence: float = 0.95,
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values`` (one value per problem).

    Resampling uses a private ``numpy.random.Generator`` seeded with ``seed``.
    """
    data = np.asarray(values, dtype=np.float64).reshape(-1)
    if data.size == 0:
        raise ValueError("bootstrap_ci needs at least one value; got none.")
    if not 0.0 < confidence < 1.0 or n_resamples < 1:
        raise ValueError(
            f"bootstrap_ci needs 0 < confidence < 1 and n_resamples >= 1; "
            f"got {confidence}, {n_resamples}."
        )
    rng = np.random.default_rng(seed)
    means = np.empty(n_resamples)
    chunk = max(1, 2_000_000 // data.size)  # bounds memory at about 16 MB of indices
    for start in range(0, n_resamples, chunk):
        stop = min(n_resamples, start + chunk)
        idx = rng.integers(0, data.size, size=(stop - start, data.size))
        means[start:stop] = data[idx].mean(axis=1)
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(means, [alpha, 1.0 - alpha])
    return float(low), float(high)


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (Wilson 1927)."""
    if n < 1 or not 0 <= successes <= n:
        raise ValueError(
            f"wilson_interval needs n >= 1 and 0 <= successes <= n; got {successes}, {n}."
        )
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence={confidence} must be in (0, 1).")
    z = NormalDist().inv_cdf(0.5 + confidence / 2.0)
    p = successes / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return float(max(0.0, centre - half)), float(min(1.0, centre + half))
