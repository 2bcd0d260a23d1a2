"""Tables and plot of the length study (``study.py length``; runs in ``study_length.py``)."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

from study_length import BUDGETS
from study_report import _acc, _final_reward, _paired, _smooth, summary_cells

Runs = dict[int, dict[str, list[dict[str, Any]]]]  # {length: {estimator: one run per seed}}

PAIRS = (
    ("fading, gamma 0.6", "random"),
    ("fading, gamma 0", "random"),
    ("fading, gamma 0.6", "fading, gamma 0"),
    ("coupled", "random"),
    ("coupled", "fading, gamma 0.6"),
)
QUARTERS = ("first", "second", "third", "last")


def length_section(
    runs: Runs, plot_dir: Path, tag: str, seeds: list[int] | None = None
) -> dict[str, Any]:
    """The section's markdown, its plot, and the totals the reading quotes. Lengths and
    estimators without finished runs are named as missing (``seeds``: the seeds planned)."""
    planned = seeds if seeds is not None else sorted({r["seed"] for r in _all(runs)})
    coverage, missing = _coverage(runs, planned)
    done: Runs = {n: {k: rs for k, rs in by.items() if rs} for n, by in runs.items()}
    done = {n: by for n, by in done.items() if by}
    lines = [*coverage, ""]
    if done:
        plot = _plot(done, plot_dir / f"length_{tag}.png", tag)
        lines += [*_setup(done), "", *_per_run(done), "", *_summary(done), "", *_pairs(done)]
        lines += ["", *_token_pairs(done)]
        lines += ["", *_positions(done), "", *_cpu(done)]
    plots = [plot] if done else []
    return {
        "markdown": "\n".join(lines),
        "plots": plots,
        "cpu_seconds": _cpu_total(done),
        "missing": missing,
    }


def _all(runs: Runs) -> list[dict[str, Any]]:
    return [r for by in runs.values() for rs in by.values() for r in rs]


def _coverage(runs: Runs, seeds: list[int]) -> tuple[list[str], list[str]]:
    """One line per length: the runs that finished and the ones planned but missing."""
    lines, missing = (
        ["Runs that finished (of 4 estimators x the seeds planned per length):", ""],
        [],
    )
    for n, by_name in runs.items():
        gone = [
            f"{name} seed {s}"
            for name, rs in by_name.items()
            for s in seeds
            if s not in {r["seed"] for r in rs}
        ]
        have = sum(len(rs) for rs in by_name.values())
        note = "all" if not gone else "missing: " + ", ".join(gone)
        lines.append(f"- length {n}: {have} of {len(by_name) * len(seeds)} runs ({note})")
        missing += [f"L{n} {g}" for g in gone]
    return lines, missing


def _first(runs: Runs, length: int) -> list[dict[str, Any]]:
    """One run per seed of ``length`` (any estimator): the bases' records."""
    bases: dict[int, dict[str, Any]] = {}
    for rs in runs[length].values():
        for r in rs:
            bases.setdefault(r["seed"], r)
    return [bases[s] for s in sorted(bases)]


def _setup(runs: Runs) -> list[str]:
    lines = [
        "| answer length | steps x prompts x rollouts per prompt | sampler (rollouts; evaluation "
        "greedy) | SFT base: steps (target / cap) | base held-out exact / token acc | commit |",
        "|---|---|---|---|---|---|",
    ]
    for n in runs:
        first = _first(runs, n)
        cfg = first[0]["config"]
        gen = cfg["max_completion_length"]
        steps = cfg["diffusion_steps"] or gen
        block = cfg["block_length"] or gen
        sampler = (
            f"{gen} tokens, {steps} steps, block {block}, {cfg['remasking']}, "
            f"T={cfg['temperature']}, kv_cache={cfg.get('kv_cache', 'none')}, "
            f"parallel_threshold={cfg.get('parallel_threshold', 0)}"
        )
        group = cfg["num_generations"]
        rollouts = f"{first[0]['steps']} x {first[0]['rollouts_per_step'] // group} x {group}"
        bases = {r["config"]["model"]: r for r in first}
        sft = ", ".join(
            f"{r['sft_steps']} ({r.get('sft_target', BUDGETS[n].sft_target)} / "
            f"{r.get('sft_max_steps', BUDGETS[n].sft_max_steps)})"
            for r in bases.values()
        )
        base = ", ".join(
            f"{r['base']['accuracy']:.3f} / {token_accuracy(r['base']):.3f}" for r in bases.values()
        )
        commits = sorted({r.get("commit", "?") for rs in runs[n].values() for r in rs})
        lines.append(f"| {n} | {rollouts} | {sampler} | {sft} | {base} | {', '.join(commits)} |")
    return lines


def _exact(ev: dict[str, Any]) -> float:
    return float(ev["accuracy"])


def token_accuracy(ev: dict[str, Any]) -> float:
    """Mean over answer positions of the held-out accuracy at the position."""
    return statistics.fmean(ev["per_position"])


def _per_run(runs: Runs) -> list[str]:
    lines = [
        "| length | estimator | seed | base acc [95% CI] | final acc [95% CI] | "
        "final reward (last 10%) |",
        "|---|---|---|---|---|---|",
    ]
    for n, by_name in runs.items():
        for name, rs in by_name.items():
            for r in rs:
                lines.append(
                    f"| {n} | {name} | {r['seed']} | {_acc(r['base'])} | {_acc(r['final'])} | "
                    f"{_final_reward(r):.3f} |"
                )
    return lines


def _summary(runs: Runs) -> list[str]:
    lines = [
        "| length | estimator | seeds | mean final acc | min - max | mean gain over base |",
        "|---|---|---|---|---|---|",
    ]
    for n, by_name in runs.items():
        for name, rs in by_name.items():
            lines.append(f"| {n} | {name} | {summary_cells(rs)} |")
    return lines


def paired_differences(
    a: list[dict], b: list[dict], measure: Callable[[dict[str, Any]], float] = _exact
) -> list[float]:
    """``measure`` of the final evaluation of ``a`` minus ``b``, seed by seed (seeds both
    have); exact match by default."""
    ref = {r["seed"]: measure(r["final"]) for r in b}
    return [measure(r["final"]) - ref[r["seed"]] for r in a if r["seed"] in ref]


def _pairs(runs: Runs) -> list[str]:
    lines = [
        "Paired by seed (same base model, same rollout budget); significant = 95% intervals "
        "do not overlap:",
        "",
        "| length | claim | seeds | A better | A significantly better | A significantly worse | "
        "A - B per seed | mean A - B |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for n, by_name in runs.items():
        for a, b in PAIRS:
            if a not in by_name or b not in by_name:
                continue
            seeds, better, sig_b, sig_w = _paired(by_name[a], by_name[b])
            diffs = paired_differences(by_name[a], by_name[b])
            per_seed = ", ".join(f"{d:+.3f}" for d in diffs)
            mean = statistics.fmean(diffs) if diffs else float("nan")
            lines.append(
                f"| {n} | {a} > {b} | {seeds} | {better} | {sig_b} | {sig_w} | {per_seed} | "
                f"{mean:+.3f} |"
            )
    return lines


def _token_pairs(runs: Runs) -> list[str]:
    """The same pairs on a per-token measure: mean held-out accuracy over answer positions
    (informative where exact match is near zero for every policy)."""
    lines = [
        "The same pairs on the mean per-position (token) accuracy of the final policy, held-out "
        "greedy, A - B per seed:",
        "",
        "| length | claim | seeds | A better | A - B per seed | mean A - B |",
        "|---|---|---|---|---|---|",
    ]
    for n, by_name in runs.items():
        for a, b in PAIRS:
            if a not in by_name or b not in by_name:
                continue
            diffs = paired_differences(by_name[a], by_name[b], token_accuracy)
            per_seed = ", ".join(f"{d:+.3f}" for d in diffs)
            mean = statistics.fmean(diffs) if diffs else float("nan")
            better = sum(d > 0 for d in diffs)
            lines.append(
                f"| {n} | {a} > {b} | {len(diffs)} | {better} | {per_seed} | {mean:+.3f} |"
            )
    return lines


def quarter_means(per_position: list[float]) -> list[float]:
    """Mean accuracy over each quarter of the answer's positions (one position each at L=4)."""
    n = len(per_position)
    edges = [round(i * n / 4) for i in range(5)]
    return [statistics.fmean(per_position[edges[i] : edges[i + 1]]) for i in range(4)]


def _mean_positions(rs: list[dict[str, Any]], key: str) -> list[float]:
    return [statistics.fmean(v) for v in zip(*(r[key]["per_position"] for r in rs), strict=True)]


def _positions(runs: Runs) -> list[str]:
    lines = [
        "Per-position accuracy of the answer (greedy, held-out; the digit at a position right "
        "whatever the others), mean over seeds, averaged over each quarter of the answer's "
        "positions; the gain rows are final minus base, and fading minus random:",
        "",
        "| length | policy | " + " | ".join(f"{q} quarter" for q in QUARTERS) + " |",
        "|---|---|" + "---|" * 4,
    ]

    def row(n: int, label: str, values: list[float], signed: bool = False) -> str:
        cells = " | ".join(f"{v:+.3f}" if signed else f"{v:.3f}" for v in values)
        return f"| {n} | {label} | {cells} |"

    for n, by_name in runs.items():
        base = quarter_means(_mean_positions(_first(runs, n), "base"))
        lines.append(row(n, "base (SFT)", base))
        finals = {k: quarter_means(_mean_positions(rs, "final")) for k, rs in by_name.items()}
        for name, q in finals.items():
            lines.append(row(n, f"{name}, final", q))
        for name, q in finals.items():
            lines.append(
                row(n, f"{name}, gain", [a - b for a, b in zip(q, base, strict=True)], True)
            )
        for name in ("fading, gamma 0.6", "fading, gamma 0"):
            if name in finals and "random" in finals:
                diff = [a - b for a, b in zip(finals[name], finals["random"], strict=True)]
                lines.append(row(n, f"{name} - random", diff, True))
    return lines


def _cpu_total(runs: Runs) -> dict[str, float]:
    out: dict[str, float] = {}
    for n, by_name in runs.items():
        bases = {r["config"]["model"]: r.get("base_cpu_seconds", 0.0) for r in _first(runs, n)}
        train = sum(r["cpu_seconds"] for rs in by_name.values() for r in rs)
        out[str(n)] = train + sum(bases.values())
    out["total"] = sum(out.values())
    return out


def _cpu(runs: Runs) -> list[str]:
    totals = _cpu_total(runs)
    parts = ", ".join(f"length {k}: {v / 3600:.2f} h" for k, v in totals.items() if k != "total")
    return [
        f"CPU time of the study (process CPU time of every base and run, SFT and evaluations "
        f"included): {totals['total'] / 3600:.2f} CPU-hours ({parts})."
    ]


def _plot(runs: Runs, path: Path, tag: str) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lengths = list(runs)
    fig, axes = plt.subplots(2, len(lengths), figsize=(4.2 * len(lengths), 7), squeeze=False)
    for col, n in enumerate(lengths):
        top, bottom = axes[0][col], axes[1][col]
        for name, rs in runs[n].items():
            steps = min(len(r["reward"]) for r in rs)
            if steps:
                mean = [statistics.fmean(r["reward"][i] for r in rs) for i in range(steps)]
                top.plot(range(1, steps + 1), _smooth(mean, max(1, steps // 20)), label=name)
            pos = _mean_positions(rs, "final")
            bottom.plot(range(1, n + 1), pos, marker="o", markersize=3, label=name)
        base = _mean_positions(_first(runs, n), "base")
        bottom.plot(range(1, n + 1), base, "k--", label="base (SFT)")
        top.set_title(f"answer length {n}")
        top.set_xlabel("step")
        top.set_ylabel("mean rollout reward (max 2)")
        bottom.set_xlabel("answer position")
        bottom.set_ylabel("held-out accuracy at the position")
        bottom.set_ylim(0, 1)
    axes[0][0].legend(fontsize=7)
    axes[1][0].legend(fontsize=7)
    fig.suptitle(f"MaskGRPO estimators by answer length, mean of seeds ({tag})")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path.name
