"""The length study: does fading-out masking pay off as completions get longer?

Running sums (:mod:`maskgrpo.tasks.running_sums`) at answer lengths 4, 8 and 16: every answer
digit depends on the one before it, so the task is left to right at every length, and the
fading-out ramp spans 5, 9 or 17 completion positions (the answer and its EOS).

The model is the demo's tiny model with rotary positions (``positions="rotary"``): with learned
absolute positions it learns the rule one answer position at a time (after 3000 SFT steps at length
8 and 1500 at 16 only the first two positions were right, held-out exact match 0.000), while with
rotary positions the rule ``answer[k] = answer[k-1] + digit[k]`` sits at the same offsets for every
k and is learned for all positions at once (the target was reached after 1210, 3460 and 2720 SFT
steps at lengths 4, 8 and 16).

Per length, one SFT base (the demo's recipe, SFT seed ``BASE_SEED``: SFT until greedy
accuracy on ``PROBE_ROWS`` *training* prompts reaches the length's target, checked every 50
steps, every 10 once it rises, or until the length's cap of SFT steps), saved once under
``<out>/length/L<n>/base/seed<BASE_SEED>`` and shared by every estimator and seed of that
length: the seeds change MaskGRPO's rollouts and prompt order, not the base (one base per
length keeps the study within its CPU budget). Each run is
:class:`~maskgrpo.trainer.grpo_trainer.MaskGRPOTrainer` with the demo's MaskGRPO settings
(:func:`maskgrpo.recipes.text_demo.demo_train_config`) except a lower learning rate with a warmup
(``LEARNING_RATE``, ``WARMUP``), and the length's fixed number of steps and prompts per step, so every estimator of a length gets the same rollout budget. The sampler
is the library's default: one block over the completion, one token per step, low-confidence
remasking, temperature 1 for rollouts and greedy for evaluation, no KV cache.

Both evaluations (base, final) are greedy on the same held-out prompts and also record the
per-position accuracy of the answer. A run writes ``result.json`` in its own folder; an existing
one is reused, never recomputed. A run that was interrupted resumes from its last checkpoint
(saved every ``SAVE_EVERY`` steps), so an interrupted study loses at most that many steps.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import json
import logging
import resource
import shutil
import subprocess
import sys
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from maskgrpo.config import DemoConfig, TrainConfig
from maskgrpo.modalities.text import TextModality
from maskgrpo.policy import Policy, load_policy, resolve_device, save_policy
from maskgrpo.recipes.text_demo import (
    SFT_CHECK,
    SFT_CHECK_FINE,
    SFT_LR,
    TINY_DIM,
    TINY_HEADS,
    TINY_LAYERS,
    demo_train_config,
)
from maskgrpo.rewards.combine import RewardSet
from maskgrpo.rng import derive_generator, derive_seed
from maskgrpo.tasks import SyntheticTask
from maskgrpo.tasks.running_sums import make_running_sums
from maskgrpo.trainer.evaluate import evaluate_task
from maskgrpo.trainer.grpo import sampler_settings
from maskgrpo.trainer.grpo_trainer import MaskGRPOTrainer
from maskgrpo.trainer.outputs import read_metrics
from maskgrpo.trainer.sft import train_sft

log = logging.getLogger("study")

LENGTHS = (4, 8, 16)
ESTIMATORS = (
    ("random", "random", 0.6),
    ("fading, gamma 0.6", "fading", 0.6),
    ("fading, gamma 0", "fading", 0.0),
    ("coupled", "coupled", 0.6),
)
SPLIT_SEED = 0  # the train/held-out split: the same held-out prompts for every seed
SAVE_EVERY = 10  # steps between the checkpoints an interrupted run resumes from
PROBE_ROWS = 200  # training prompts of the SFT stopping rule
BASE_SEED = 0  # one SFT base per length, shared by every seed's runs (see BUDGETS)
POSITIONS = "rotary"  # of the tiny model (see the module docstring)
# MaskGRPO's learning rate and a linear warmup over the first optimizer updates (4 per step). The
# rotary bases, stopped right where SFT's accuracy jumps, are far more fragile than the demo's:
# at the demo's 3e-4 without warmup the first AdamW update (every parameter moved by the full
# learning rate, in the sign of its gradient) took the length-8 base from KL 0 to 828 within
# step 1, and 80 steps of random re-masking took its held-out exact match from 0.188 to 0.048;
# with the warmup, still 0.012. At 1e-4 the same run ended at 0.306, at 3e-5 at 0.328.
LEARNING_RATE = 3e-5
WARMUP = 20


@dataclasses.dataclass(frozen=True)
class LengthBudget:
    """What one run of a length gets: MaskGRPO steps x prompts per step (8 rollouts each)."""

    steps: int
    prompts_per_step: int
    eval_prompts: int
    sft_max_steps: int
    sft_target: float  # greedy exact match on training prompts that stops SFT

    @property
    def tag(self) -> str:
        return f"s{self.steps}x{self.prompts_per_step}"


# The same rollout budget at every length, 80 steps x 32 prompts x 8 rollouts (the demo's batch;
# 20,480 rollouts a run), and one SFT base per length (seed BASE_SEED) shared by the three seeds'
# runs: sized so the whole study (36 runs, 3 bases) fits about 3 CPU-hours, two runs at a time on
# a 2-core machine (measured: about 1, 2 and 4.8 CPU seconds per step at lengths 4, 8 and 16, one
# torch thread; coupled 1.6-2x). SFT stops at 20% greedy exact match on training prompts or at the
# cap, whichever comes first; the section reports the base accuracy each length started from.
BUDGETS: dict[int, LengthBudget] = {
    n: LengthBudget(steps=80, prompts_per_step=32, eval_prompts=500, sft_max_steps=6000,
                    sft_target=0.2)
    for n in LENGTHS
}  # fmt: skip
QUICK = LengthBudget(steps=2, prompts_per_step=4, eval_prompts=40, sft_max_steps=30,
                     sft_target=0.2)  # fmt: skip


def budget_of(length: int, quick: bool) -> LengthBudget:
    return QUICK if quick else BUDGETS[length]


@functools.cache
def task_of(length: int, quick: bool = False) -> SyntheticTask:
    """Running sums of ``length`` digits (sampled prompts past 6 digits; fewer in a smoke run)."""
    return make_running_sums(
        n_digits=length, heldout=1000, seed=SPLIT_SEED, train_rows=2000 if quick else 50_000
    )


@functools.lru_cache(maxsize=1)
def commit() -> str:
    """The checkout's commit, ``+dirty`` when the package or benchmarks have local changes."""
    root = Path(__file__).resolve().parent.parent

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True)
        return done.stdout.strip() if done.returncode == 0 else ""

    head = git("rev-parse", "--short", "HEAD") or "unknown"
    return head + ("+dirty" if git("status", "--porcelain", "--", "src", "benchmarks") else "")


def _load(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _write(path: Path, record: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=1))
    tmp.replace(path)


def _modality(policy: Policy, task: SyntheticTask) -> TextModality:
    return TextModality(policy.tokenizer, policy.spec, prompt_width=task.max_prompt_chars)


def evaluate(policy: Policy, task: SyntheticTask, prompts: int, seed: int) -> dict[str, Any]:
    """Greedy held-out exact match (95% Wilson interval), mean reward, and the accuracy of each
    answer position (the digit at position k right, whatever the others)."""
    greedy = sampler_settings(TrainConfig(), task.answer_chars, greedy=True)
    ev = evaluate_task(
        policy.model, _modality(policy, task), task, greedy, num_prompts=prompts, seed=seed
    )
    rows = task.heldout[:prompts]
    right = [0] * task.answer_chars
    for completion, row in zip(ev.completions, rows, strict=True):
        got = completion.strip()
        for k, want in enumerate(row["answer"]):
            right[k] += k < len(got) and got[k] == want
    return {**ev.as_dict(), "per_position": [r / len(rows) for r in right]}


def length_base(length: int, seed: int, out: Path, quick: bool) -> dict[str, Any]:
    """The SFT base of ``(length, seed)``, built once, and its held-out evaluation."""
    folder = out / "length" / f"L{length}" / "base" / f"seed{seed}"
    cached = _load(folder / "base.json")
    if cached is not None:
        return cached
    budget, task = budget_of(length, quick), task_of(length, quick)
    cpu0, t0 = time.process_time(), time.time()
    policy, sft_steps, probe_acc = sft_to_target(task, seed, budget)
    ev = evaluate(policy, task, budget.eval_prompts, seed)
    save_policy(policy, folder / "model")
    record = {
        "length": length,
        "seed": seed,
        "model": str(folder / "model"),
        "sft_steps": sft_steps,
        "sft_target": budget.sft_target,
        "train_probe_accuracy": probe_acc,
        "eval": ev,
        "seconds": time.time() - t0,
        "cpu_seconds": time.process_time() - cpu0,
    }
    _write(folder / "base.json", record)
    log.info("L%d seed %d base: %d SFT steps, held-out %.3f", length, seed, sft_steps,
             ev["accuracy"])  # fmt: skip
    return record


def sft_to_target(
    task: SyntheticTask, seed: int, budget: LengthBudget
) -> tuple[Policy, int, float]:
    """The demo's SFT stopping rule (``maskgrpo.recipes.text_demo._sft_to_target``), any task."""
    gen_length = task.answer_chars + 1
    policy = load_policy(
        "tiny", alphabet=task.alphabet, max_length=task.max_prompt_chars + gen_length,
        device=resolve_device("cpu"), init_generator=derive_generator(seed, "init"),
        dim=TINY_DIM, n_layers=TINY_LAYERS, n_heads=TINY_HEADS, positions=POSITIONS,
    )  # fmt: skip
    modality = _modality(policy, task)
    greedy = sampler_settings(TrainConfig(), task.answer_chars, greedy=True)
    probe = copy.copy(task)
    probe.heldout = task.train[-PROBE_ROWS:]  # stopping rule on training prompts only
    accuracy = 0.0

    def reached_target(step: int) -> bool:
        nonlocal accuracy
        if step % (SFT_CHECK_FINE if accuracy >= 0.02 else SFT_CHECK):
            return False
        ev = evaluate_task(policy.model, modality, probe, greedy, num_prompts=PROBE_ROWS)
        accuracy = ev.accuracy
        log.info("SFT L%d seed %d step %d: training-prompt accuracy %.3f, reward %.3f",
                 task.answer_chars, seed, step, accuracy, ev.reward)  # fmt: skip
        return accuracy >= budget.sft_target

    losses = train_sft(
        policy.model, modality, task.train, gen_length=gen_length, steps=budget.sft_max_steps,
        batch_size=64, lr=SFT_LR, seed=derive_seed(seed, "sft"), should_stop=reached_target,
        schedule="constant",
    )  # fmt: skip
    return policy, len(losses), accuracy


def run_dir(length: int, strategy: str, gamma: float, seed: int, out: Path, quick: bool) -> Path:
    tag = budget_of(length, quick).tag
    return out / "length" / f"L{length}" / f"{strategy}-g{gamma}-{tag}" / f"seed{seed}"


def length_run(
    length: int, strategy: str, gamma: float, seed: int, out: Path, quick: bool
) -> dict[str, Any]:
    """One MaskGRPO run from the base of ``(length, seed)``; cached in its ``result.json``."""
    folder = run_dir(length, strategy, gamma, seed, out, quick)
    cached = _load(folder / "result.json")
    if cached is not None:
        return cached
    base = length_base(length, BASE_SEED, out, quick)
    budget, task = budget_of(length, quick), task_of(length, quick)
    cfg = train_config(length, strategy, gamma, seed, budget, folder / "grpo", base["model"])
    policy = load_policy(base["model"], alphabet=task.alphabet, max_length=0)
    trainer = MaskGRPOTrainer(
        policy.model, RewardSet(task.rewards, task.weights), args=cfg,
        train_dataset=task.train, processing_class=policy.tokenizer,
        modality=_modality(policy, task),
    )  # fmt: skip
    checkpoints = folder / "grpo" / "checkpoints"
    resume = checkpoints.is_dir() and any(checkpoints.glob("checkpoint-*"))
    if not resume and (folder / "grpo").exists():
        shutil.rmtree(folder / "grpo")  # a run stopped before its first checkpoint
    cpu0, t0 = time.process_time(), time.time()
    result = trainer.train(resume_from_checkpoint=True if resume else None).metrics
    final = evaluate(trainer.policy, task, budget.eval_prompts, seed)
    metrics = read_metrics(result["metrics"])
    record = {
        "length": length,
        "strategy": strategy,
        "gamma": gamma,
        "seed": seed,
        "steps": result["steps"],
        "rollouts_per_step": cfg.per_device_train_batch_size,
        "resumed": resume,
        "commit": commit(),
        "sft_steps": base["sft_steps"],
        "sft_target": base["sft_target"],
        "sft_max_steps": budget.sft_max_steps,
        "base_cpu_seconds": base["cpu_seconds"],
        "seconds": time.time() - t0,
        "cpu_seconds": time.process_time() - cpu0,
        "base": base["eval"],
        "final": final,
        "reward": [m["reward_mean"] for m in metrics],
        "kl": [m["kl"] for m in metrics],
        "clip_fraction": [m["clip_fraction"] for m in metrics],
        "config": dataclasses.asdict(cfg),
    }
    _write(folder / "result.json", record)
    log.info("L%d %s g%s seed %d: %.3f -> %.3f (%d steps, %.0f s)", length, strategy, gamma, seed,
             base["eval"]["accuracy"], final["accuracy"], result["steps"], record["seconds"])  # fmt: skip
    return record


def train_config(
    length: int, strategy: str, gamma: float, seed: int, budget: LengthBudget, out: Path,
    model: str,
) -> TrainConfig:  # fmt: skip
    """The demo's MaskGRPO recipe with this length's budget and completion length."""
    demo = DemoConfig(
        seed=seed, output_dir=str(out.parent), device="cpu", grpo_steps=budget.steps,
        estimator=strategy, gamma=gamma, max_seconds=0.0,
    )  # fmt: skip
    return dataclasses.replace(
        demo_train_config(demo),
        model=model,
        output_dir=str(out),
        overwrite=False,
        max_completion_length=length + 1,
        learning_rate=LEARNING_RATE,
        warmup_steps=WARMUP,
        per_device_train_batch_size=budget.prompts_per_step * 8,
        eval_every=0,
        sample_every=0,
        save_steps=SAVE_EVERY,
        save_total_limit=1,
        report_to="none",
    )


def run_parallel(
    seeds: list[int], out: Path, quick: bool, lengths: tuple[int, ...], jobs: int
) -> None:
    """Every ``(length, seed)`` (its four runs) in its own ``study.py length`` process, ``jobs``
    at a time, one torch thread each. The first job of a length builds the length's shared base
    (longest length first); the length's other jobs wait for that base before they start."""
    script = Path(__file__).resolve().parent / "study.py"
    order = sorted(lengths, reverse=True)
    queue = [(n, seeds[0]) for n in order] + [(n, s) for n in order[::-1] for s in seeds[1:]]
    out_root = out.parent if quick else out  # study.py adds "quick" itself
    builders: dict[int, Future[int]] = {}

    def one(item: tuple[int, int]) -> int:
        n, s = item
        base = out / "length" / f"L{n}" / "base" / f"seed{BASE_SEED}" / "base.json"
        if s != seeds[0]:
            while not base.is_file() and not builders[n].done():
                time.sleep(5)
        cmd = [sys.executable, str(script), "length", "--lengths", str(n), "--seeds", str(s),
               "--out", str(out_root), "--threads", "1", *(["--quick"] if quick else [])]  # fmt: skip
        log_path = out / "length" / "logs" / f"L{n}-seed{s}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("a") as sink:
            done = subprocess.run(cmd, stdout=sink, stderr=subprocess.STDOUT)
        log.info("L%d seed %d finished (exit %d, log %s)", n, s, done.returncode, log_path)
        return done.returncode

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = []
        for item in queue:
            futures.append(pool.submit(one, item))
            if item[1] == seeds[0]:
                builders[item[0]] = futures[-1]
        codes = [f.result() for f in futures]
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    log.info("CPU time of the length processes: %.0f s", children.ru_utime + children.ru_stime)
    failed = [q for q, c in zip(queue, codes, strict=True) if c]
    if failed:
        raise RuntimeError(f"length runs failed for (length, seed) {failed}: see their logs")


def study(
    seeds: list[int], out: Path, quick: bool, lengths: tuple[int, ...] = LENGTHS, run: bool = True
) -> dict[int, dict[str, list[dict]]]:
    """Every run of ``lengths``, seed by seed: ``{length: {estimator: runs}}``. With
    ``run=False`` only the runs that finished (a missing one is left out, not run)."""
    runs: dict[int, dict[str, list[dict]]] = {}
    for length in lengths:
        runs[length] = {name: [] for name, _, _ in ESTIMATORS}
        for seed in seeds:
            for name, strategy, gamma in ESTIMATORS:
                if run:
                    record = length_run(length, strategy, gamma, seed, out, quick)
                else:
                    path = run_dir(length, strategy, gamma, seed, out, quick) / "result.json"
                    record = _load(path)
                if record is not None:
                    runs[length][name].append(record)
    return runs
