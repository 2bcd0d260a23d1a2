"""Image training end to end on tiny settings: SFT, one MaskGRPO step, the demo pipeline."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from maskgrpo.config import DemoConfig, TrainConfig
from maskgrpo.logprobs import split_head, token_logprobs
from maskgrpo.modalities.base import SamplerSettings
from maskgrpo.modalities.image import ImageModality, ImageSampling, image_token_spec
from maskgrpo.models import TinyConfig, TinyDiffusionLM
from maskgrpo.models.mmada_image import WithEndOfImage
from maskgrpo.recipes.image_demo import ImageRecipe, run_image_demo
from maskgrpo.rewards.combine import RewardSet
from maskgrpo.rewards.geneval import make_geneval_reward
from maskgrpo.tasks.shapes.quantizer import fit_quantizer
from maskgrpo.tasks.shapes.world import WorldConfig, split_specs
from maskgrpo.tokenizer import WordTokenizer
from maskgrpo.trainer.grpo import make_rollout, train_grpo
from maskgrpo.trainer.image_training import evaluate_images, rollout_diversity, train_image_sft

WORLD = WorldConfig(image_size=24)
K = 32
SETTINGS = SamplerSettings(36, 4, 36, 1.0, "emerge")


@pytest.fixture(scope="module")
def setup() -> tuple[ImageModality, list[dict]]:
    split = split_specs(0, WORLD)
    specs = split.train["colors"]
    tok = WordTokenizer.from_prompts(s["prompt"] for s in specs)
    quant = fit_quantizer(K, seed=0, config=WORLD, num_images=60)
    mod = ImageModality(
        tok,
        image_token_spec(tok, K),
        quant,
        prompt_tokens=6,
        num_tokens=36,
        sampling=ImageSampling("emerge", 1.0),
    )
    return mod, specs


def tiny(mod: ImageModality, extra: int = 0) -> TinyDiffusionLM:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        cfg = TinyConfig(
            vocab_size=mod.spec.vocab_size,
            dim=32,
            n_layers=1,
            n_heads=2,
            max_length=mod.prompt_width + mod.num_tokens + extra,
        )
        return TinyDiffusionLM(cfg).eval()


def grpo_config(**kw: object) -> TrainConfig:
    args: dict = dict(
        max_steps=1,
        per_device_train_batch_size=6,
        num_generations=3,
        num_iterations=2,
        gamma=0.8,
        strategy="random",
        beta=0.01,
        learning_rate=1e-2,
        temperature=1.0,
        max_completion_length=36,
        diffusion_steps=4,
        sample_every=0,
    )
    args.update(kw)
    return TrainConfig(**args)


def rewards() -> RewardSet:
    return RewardSet([make_geneval_reward(WORLD, partial=True), make_geneval_reward(WORLD)])


def test_one_grpo_step_changes_parameters(setup: tuple) -> None:
    mod, specs = setup
    model = tiny(mod)
    rows = [{"prompt": s["prompt"], "spec": s} for s in specs]
    before = [p.detach().clone() for p in model.parameters()]
    history = train_grpo(
        grpo_config(), model, modality=mod, rows=rows, rewards=rewards(), settings=SETTINGS
    )
    assert len(history) == 1 and history[0]["tokens_scored"] > 0
    changed = any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    assert changed


def test_rollout_scores_only_image_tokens_on_the_code_softmax(setup: tuple) -> None:
    mod, specs = setup
    model = tiny(mod)
    rows = [{"prompt": s["prompt"], "spec": s} for s in specs[:2]]
    ro = make_rollout(
        grpo_config(beta=0.0),
        0,
        model=model,
        ref_model=None,
        modality=mod,
        rows=rows,
        rewards=rewards(),
        settings=SETTINGS,
    )
    assert ro.vocab_range == mod.vocab_range
    for view, old in zip(ro.views, ro.old_logp, strict=True):
        scored = view.scored[0]
        assert not bool(scored[:, : mod.prompt_width].any())  # prompt and <soi> never scored
        assert bool((old[scored] <= 0).all()) and bool((old[~scored] == 0).all())
        # the code softmax: log-probs above log(1/V) on average for an untrained model
        assert float(old[scored].mean()) > -np.log(mod.spec.vocab_size)
    assert all(isinstance(c, np.ndarray) and c.dtype == np.uint8 for c in ro.completions)


class _Spy(torch.nn.Module):
    """Records every input the wrapped model sees."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model
        self.seen: list[torch.Tensor] = []

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None):
        self.seen.append(input_ids.clone())
        return self.model(input_ids, attention_mask)


def test_end_of_image_wrapper_shows_eoi_and_keeps_the_layout(setup: tuple, tmp_path: Path) -> None:
    mod, specs = setup
    eoi = mod.spec.eoi_id
    inner = tiny(mod, extra=1)
    wrapped = WithEndOfImage(inner, eoi).eval()
    ids = mod.encode_prompts([specs[0]["prompt"], ""], torch.device("cpu"))
    seqs = mod.rollout(wrapped, ids, SETTINGS, torch.Generator().manual_seed(0))
    assert seqs.shape == (2, mod.prompt_width + mod.num_tokens) and eoi not in seqs
    with torch.no_grad():
        full = inner(torch.cat([seqs, torch.full((2, 1), eoi)], dim=1)).logits
        assert torch.equal(wrapped(seqs).logits, full[:, :-1])
        # the model does attend to <eoi>: without it the logits differ
        assert not torch.allclose(inner(seqs).logits, full[:, :-1])
        pad = torch.ones_like(seqs)
        assert torch.equal(wrapped(seqs, attention_mask=pad).logits, full[:, :-1])
    # scoring takes the full-logits path and matches a hand computation on the code softmax
    assert split_head(wrapped) is None
    scored = torch.zeros_like(seqs, dtype=torch.bool)
    scored[:, mod.prompt_width :: 3] = True
    noisy = torch.where(scored, mod.spec.mask_id, seqs)
    lo, hi = mod.vocab_range or (0, 0)
    got = token_logprobs(wrapped, noisy, seqs, scored, vocab_range=mod.vocab_range)
    with torch.no_grad():
        logits = inner(torch.cat([noisy, torch.full((2, 1), eoi)], dim=1)).logits[:, :-1, lo:hi]
        want = logits.log_softmax(-1).gather(-1, (seqs - lo).clamp(0, hi - lo - 1)[..., None])[
            ..., 0
        ]
    assert torch.allclose(got[scored], want[scored], atol=1e-5)
    # one MaskGRPO step through the wrapper: every forward ends with <eoi>, parameters change
    spy = _Spy(inner)
    before = [p.detach().clone() for p in inner.parameters()]
    rows = [{"prompt": s["prompt"], "spec": s} for s in specs]
    history = train_grpo(
        grpo_config(),
        WithEndOfImage(spy, eoi),
        modality=mod,
        rows=rows,
        rewards=rewards(),
        settings=SETTINGS,
    )
    assert history[0]["tokens_scored"] > 0 and spy.seen
    assert all(bool((x[:, -1] == eoi).all()) and int((x == eoi).sum()) == len(x) for x in spy.seen)
    assert any(not torch.equal(a, b) for a, b in zip(before, inner.parameters(), strict=True))
    # saving writes the wrapped model, loadable on its own
    wrapped.save_pretrained(str(tmp_path / "ckpt"))
    again = TinyDiffusionLM.from_pretrained(tmp_path / "ckpt").eval()
    with torch.no_grad():
        assert torch.equal(again(seqs).logits, inner(seqs).logits)
    with pytest.raises(ValueError, match="eoi_id=-1"):
        WithEndOfImage(inner, -1)


def test_sft_eval_and_diversity(setup: tuple) -> None:
    mod, specs = setup
    model = tiny(mod)
    losses = train_image_sft(
        model, mod, specs, world=WORLD, steps=3, batch_size=4, lr=1e-3, seed=0, cond_dropout=0.5
    )
    assert len(losses) == 3 and all(np.isfinite(losses))
    ev = evaluate_images(model, mod, specs[:4], SETTINGS, world=WORLD, seed=0)
    assert ev.n == 4 and 0 <= ev.ci95[0] <= ev.accuracy <= ev.ci95[1] <= 1
    again = evaluate_images(model, mod, specs[:4], SETTINGS, world=WORLD, seed=0)
    assert all(np.array_equal(a, b) for a, b in zip(ev.images, again.images, strict=True))
    div = rollout_diversity(model, mod, specs[:2], SETTINGS, world=WORLD, group_size=3, seed=0)
    assert 0.0 <= div["zero_std_fraction"] <= 1.0 and div["mean_group_std"] >= 0.0


def test_image_demo_smoke(tmp_path: Path) -> None:
    recipe = ImageRecipe(
        codebook_size=32,
        tags=("colors",),
        dim=32,
        n_layers=1,
        n_heads=2,
        sft_steps=2,
        sft_batch=4,
        steps=4,
        prompts_per_step=2,
        group_size=2,
        mu=1,
        diversity_prompts=2,
        grid_prompts=3,
    )
    cfg = DemoConfig(output_dir=str(tmp_path), eval_prompts=4, grpo_steps=1, max_seconds=0.0)
    lines: list[str] = []
    summary = run_image_demo(cfg, lines.append, recipe)
    saved = json.loads((tmp_path / "summary.json").read_text())
    assert saved["steps"] == summary["steps"] == 1
    for key in ("task", "base", "final", "steps", "seconds"):
        assert key in saved
    assert {"accuracy", "reward"} <= set(saved["base"]) and {"accuracy", "reward"} <= set(
        saved["final"]
    )
    assert set(saved["diversity_at_base"]) == {"emerge", "maskgit"}
    assert (tmp_path / "samples.png").stat().st_size > 0
    assert any("base" in line for line in lines)
