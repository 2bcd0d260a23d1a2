"""``maskgrpo eval --dataset ...``: the paper's benchmarks through :func:`.harness.evaluate`.

The order is fixed so broken inputs fail in seconds: rows are loaded and validated by their
recipe (:mod:`maskgrpo.datasets`), the reward set is built (code rewards check the sandbox),
and only then is the model loaded. The protocol (model, dataset, files, sampler settings,
template, system prompt, few-shot count, samples, seed, k) is written into ``result.json``.

Prompt layout: the template's system prompt (or ``system_prompt``) is the system turn of the
tokenizer's chat template; the few-shot examples and the question are one user turn. A
tokenizer without a chat template gets the system prompt as plain text before the user turn.
Few-shot examples are the first rows of ``few_shot_file`` (file datasets) or rows generated
with a seed derived from ``dataset_seed`` (countdown, sudoku), answered in the template's format.

Sample ``j`` of prompt ``i`` draws from ``derive_generator(seed, i, j)``, so a completion does
not depend on the batch size or on which other prompts share its batch.

Left out: multi-process evaluation and hub datasets offline (pass a local ``data_file``).
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ..config import EvalConfig
from ..datasets import RecipeOptions, load_recipe, validate_rows
from ..datasets.benchmarks import (
    BENCHMARKS,
    GENERATED,
    PAPER_GEN_LENGTH,
    PLAIN_TEMPLATE,
    TEMPLATES,
    PromptTemplate,
)
from ..datasets.puzzles import countdown_rows, sudoku_rows
from ..datasets.validation import check_countdown, check_sudoku
from ..modalities.base import SamplerSettings
from ..rewards import (
    RewardSet,
    countdown_reward,
    paper_code_rewards,
    paper_gsm8k_rewards,
    paper_math_rewards,
    sudoku_reward,
)
from ..rng import derive_generator, derive_seed
from ..sandbox import SandboxUnavailableError
from .harness import EvalProtocol, GenerateFn, evaluate

__all__ = [
    "BENCHMARKS",
    "TEMPLATES",
    "BenchmarkGenerator",
    "benchmark_protocol",
    "benchmark_rewards",
    "benchmark_rows",
    "run_benchmark",
]

log = logging.getLogger(__name__)

Row = dict[str, Any]


def _boxed(text: str) -> str:
    return f"\\boxed{{{text}}}"


def _shot_answer(dataset: str, row: Row) -> str:
    """A worked answer for a few-shot example, in the format the rewards read."""
    if dataset == "gsm8k":
        steps = re.sub(r"<<[^>]*>>", "", str(row["solution"])).rsplit("####", 1)[0].strip()
        return f"{steps}\nThe answer is {_boxed(str(row['answer']))}."
    if dataset == "math500":
        return str(row.get("solution") or _boxed(str(row["answer"])))
    if dataset == "mbpp":
        return f"```python\n{row.get('code', '')}\n```"
    if dataset == "humaneval":
        return f"```python\n{row['code_prompt']}{row.get('canonical_solution', '')}```"
    return _boxed(str(row["solution"]))


def _generated(dataset: str, n: int, seed: int, template: PromptTemplate) -> list[Row]:
    if dataset == "countdown":
        rows = countdown_rows(n, seed, template=template)
        validate_rows(rows, [check_countdown])
    else:
        rows = sudoku_rows(n, seed, template=template)
        validate_rows(rows, [check_sudoku])
    return rows


def _raw_rows(
    cfg: EvalConfig, template: PromptTemplate, *, source: str, limit: int, seed: int
) -> list[Row]:
    """Validated rows of ``cfg.dataset`` with prompts rendered as plain text by ``template``."""
    if cfg.dataset in GENERATED:
        return _generated(cfg.dataset, limit or cfg.num_prompts, seed, template)
    opts = RecipeOptions(source=source or None, limit=limit or None, template=template)
    return load_recipe(cfg.dataset, opts)


def benchmark_template(cfg: EvalConfig) -> PromptTemplate:
    """The named template, or the dataset's default."""
    name = cfg.template or BENCHMARKS[cfg.dataset]
    if name not in TEMPLATES:
        raise ValueError(f"template={name!r} is unknown; choose one of {sorted(TEMPLATES)}")
    return TEMPLATES[name]


def benchmark_rows(cfg: EvalConfig) -> tuple[list[Row], str]:
    """Validated rows of the benchmark (user turns) and the system prompt; loads no model."""
    base = benchmark_template(cfg)
    shots: list[tuple[str, str]] = []
    if cfg.few_shot:
        shot_seed = derive_seed(cfg.dataset_seed, "few_shot")  # generated datasets only
        examples = _raw_rows(
            cfg, PLAIN_TEMPLATE, source=cfg.few_shot_file, limit=cfg.few_shot, seed=shot_seed
        )
        if len(examples) < cfg.few_shot:
            raise ValueError(
                f"few_shot={cfg.few_shot} but {cfg.few_shot_file!r} has {len(examples)} rows; "
                "lower --few-shot or use a larger file"
            )
        shots = [(str(r["prompt"]), _shot_answer(cfg.dataset, r)) for r in examples]
    user = dataclasses.replace(base, system="", few_shot=tuple(shots))
    rows = _raw_rows(cfg, user, source=cfg.data_file, limit=cfg.limit, seed=cfg.dataset_seed)
    system = cfg.system_prompt or base.system
    log.info("%s: %d rows, template %s, %d shots", cfg.dataset, len(rows), base.name, len(shots))
    return rows, system


def benchmark_rewards(cfg: EvalConfig) -> RewardSet:
    """The paper's reward set for the dataset; the first reward decides pass/fail."""
    if cfg.dataset == "gsm8k":
        return paper_gsm8k_rewards()
    if cfg.dataset == "math500":
        return paper_math_rewards()
    if cfg.dataset == "countdown":
        return RewardSet([countdown_reward], [1.0])
    if cfg.dataset == "sudoku":
        return RewardSet([sudoku_reward], [1.0])
    try:
        return paper_code_rewards(allow_unsafe=cfg.allow_unsafe_code)
    except SandboxUnavailableError as err:
        raise ValueError(
            f"{err} (maskgrpo eval: --allow-unsafe-code true accepts that risk)"
        ) from err


def sampler_settings_for(cfg: EvalConfig) -> SamplerSettings:
    """``max_completion_length`` 0 = the paper's 256; ``diffusion_steps``, ``block_length`` 0 =
    that length."""
    return SamplerSettings.from_config(cfg, PAPER_GEN_LENGTH)


def _default_source(cfg: EvalConfig) -> str:
    if cfg.dataset in GENERATED:
        return f"generated(dataset_seed={cfg.dataset_seed})"
    return "hub default of the recipe"


def benchmark_protocol(cfg: EvalConfig, system: str) -> EvalProtocol:
    settings = sampler_settings_for(cfg)
    return EvalProtocol(
        gen_length=settings.gen_length,
        steps=settings.steps,
        block_length=settings.block_length,
        temperature=settings.temperature,
        n_shots=cfg.few_shot,
        template=benchmark_template(cfg).name,
        n_samples=cfg.samples,
        seed=cfg.seed,
        k_values=tuple(cfg.k),
        model=cfg.model,
        dataset=cfg.dataset,
        data_file=cfg.data_file or _default_source(cfg),
        few_shot_file=cfg.few_shot_file if cfg.few_shot else "",
        system_prompt=system,
        remasking=settings.remasking,
        kv_cache=settings.kv_cache,
        kv_cache_refresh=settings.kv_cache_refresh,
        parallel_threshold=settings.parallel_threshold,
    )


class BenchmarkGenerator:
    """``generate(prompts, n)`` for the harness: batched, one seeded generator per sample.

    Prompts are numbered in the order they are asked for (the harness asks for them in row
    order), so sample ``j`` of prompt ``i`` draws from ``derive_generator(seed, i, j)``.
    """

    def __init__(
        self,
        model: nn.Module,
        modality: Any,
        settings: SamplerSettings,
        *,
        seed: int,
        device: torch.device,
        batch_size: int,
        system_prefix: str = "",
    ) -> None:
        self.model = model.eval()
        self.modality = modality
        self.settings = settings
        self.seed = seed
        self.device = device
        self.batch_size = batch_size
        self.system_prefix = system_prefix
        self._next_prompt = 0

    def __call__(self, prompts: list[str], n: int) -> list[list[str]]:
        first = self._next_prompt
        self._next_prompt += len(prompts)
        jobs = [(i, j) for i in range(len(prompts)) for j in range(n)]
        texts: list[str] = []
        for start in range(0, len(jobs), self.batch_size):
            chunk = jobs[start : start + self.batch_size]
            texts.extend(
                self._sample(
                    [self.system_prefix + prompts[i] for i, _ in chunk],
                    [
                        derive_generator(self.seed, first + i, j, device=self.device)
                        for i, j in chunk
                    ],
                )
            )
        return [texts[i * n : (i + 1) * n] for i in range(len(prompts))]

    def _sample(self, prompts: list[str], generators: Sequence[torch.Generator]) -> list[str]:
        ids = self.modality.encode_prompts(prompts, self.device)  # (B, prompt_width)
        seqs = self.modality.rollout(self.model, ids, self.settings, generators)  # (B, P + L)
        return list(self.modality.decode(seqs[:, self.modality.prompt_width :]))


def _max_positions(config: Any) -> int | None:
    for name in ("max_position_embeddings", "max_sequence_length", "n_positions"):
        value = getattr(config, name, None)
        if isinstance(value, int):
            return value
    return None


def load_generator(cfg: EvalConfig, rows: Sequence[Row], system: str) -> BenchmarkGenerator:
    """Load the Hugging Face model and wrap it as the harness's ``generate``."""
    from ..modalities.hf_text import HFTextModality
    from ..models.hf import TORCH_DTYPES, load_hf_policy
    from ..policy import is_tiny_model, resolve_device

    if is_tiny_model(cfg.model):  # 'tiny' or a folder saved by maskgrpo sft/train
        raise ValueError(
            f"model={cfg.model!r} is the built-in synthetic-task model; benchmarks need a Hugging "
            "Face masked diffusion model, e.g. --model GSAI-ML/LLaDA-8B-Instruct "
            "--trust-remote-code true (evaluate a tiny model on its synthetic task with --dataset "
            "running_sums or sudoku4)"
        )
    if cfg.dtype not in TORCH_DTYPES:
        raise ValueError(f"dtype={cfg.dtype!r} is unknown; choose one of {sorted(TORCH_DTYPES)}")
    device = resolve_device(cfg.device)
    policy = load_hf_policy(
        cfg.model,
        trust_remote_code=cfg.trust_remote_code,
        dtype=TORCH_DTYPES[cfg.dtype],
        device=device,
        mask_token=cfg.mask_token or None,
    )
    probe = HFTextModality(policy.tokenizer, policy.spec, 1, system_prompt=system or None)
    prefix = "" if probe.use_chat_template or not system else system + "\n\n"
    width = max(len(probe.prompt_ids(prefix + str(r["prompt"]))) for r in rows)
    modality = HFTextModality(policy.tokenizer, policy.spec, width, system_prompt=system or None)
    settings = sampler_settings_for(cfg)
    limit = _max_positions(getattr(policy.model, "config", None))
    if limit is not None and width + settings.gen_length > limit:
        log.warning(
            "prompts (%d tokens) + max_completion_length (%d) exceed the model's %d positions",
            width,
            settings.gen_length,
            limit,
        )
    return BenchmarkGenerator(
        policy.model,
        modality,
        settings,
        seed=cfg.seed,
        device=device,
        batch_size=cfg.per_device_eval_batch_size,
        system_prefix=prefix,
    )


def run_benchmark(cfg: EvalConfig, *, generate: GenerateFn | None = None) -> dict[str, Any]:
    """Rows, rewards and protocol first, then the model; returns the ``result.json`` dict.

    ``generate`` replaces the model (e.g. an API client or a test double).
    """
    rows, system = benchmark_rows(cfg)
    rewards = benchmark_rewards(cfg)
    protocol = benchmark_protocol(cfg, system)
    if generate is None:
        generate = load_generator(cfg, rows, system)
    per_call = max(1, cfg.per_device_eval_batch_size // cfg.samples)
    return evaluate(generate, rows, rewards, protocol, out_dir=cfg.output_dir, batch_size=per_call)
