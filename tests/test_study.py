"""The study harness: exact enumeration, the reference sampler, and the quick parts' smoke runs."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

from study_fidelity import exact_logprob, toy_spec  # noqa: E402
from study_speed import reference_generate  # noqa: E402

from maskgrpo.models.tiny import TinyConfig, TinyDiffusionLM  # noqa: E402
from maskgrpo.rng import derive_generator  # noqa: E402
from maskgrpo.sampling.llada import generate  # noqa: E402


class _Out:
    def __init__(self, logits: Tensor) -> None:
        self.logits = logits


class ContextFree(nn.Module):
    """Logits depend on the position only, never on the tokens: ``(B, W, V)``."""

    def __init__(self, table: Tensor) -> None:
        super().__init__()
        self.table = table  # (W, V)

    def forward(self, ids: Tensor) -> _Out:
        return _Out(self.table.expand(ids.shape[0], -1, -1).clone())


def test_exact_likelihood_of_a_context_free_model_is_the_product_of_marginals() -> None:
    _, spec = toy_spec()
    width, prompt = 5, 2
    table = torch.randn((width, spec.vocab_size), generator=derive_generator(0, "t"))
    model = ContextFree(table)
    seqs = torch.randint(
        spec.mask_id + 1, spec.vocab_size, (6, width), generator=derive_generator(1, "t")
    )
    logp, elbo = exact_logprob(model, seqs, prompt, spec)
    probs = table.double().clone()
    probs[:, spec.mask_id] = float("-inf")
    marg = torch.log_softmax(probs, -1)  # (W, V), the mask id excluded like the sampler
    want = torch.stack([sum(marg[n, int(s[n])] for n in range(prompt, width)) for s in seqs])
    torch.testing.assert_close(logp, want)
    torch.testing.assert_close(elbo, want)  # every order gives the same product


def test_exact_likelihood_hand_case_two_orders() -> None:
    """L=2, a model whose second token depends on whether the first is visible."""
    _, spec = toy_spec()

    class Dependent(nn.Module):
        def forward(self, ids: Tensor) -> _Out:
            logits = torch.zeros((*ids.shape, spec.vocab_size))
            seen = (ids[:, 1] != spec.mask_id).float()  # position 1 visible?
            logits[:, 2, spec.vocab_size - 1] = 2.0 * seen  # boost the last id at position 2
            return _Out(logits)

    seqs = torch.tensor([[spec.vocab_size - 1] * 3])
    logp, _ = exact_logprob(Dependent(), seqs, 1, spec)
    k = spec.vocab_size - 1  # ids the sampler may emit
    p_plain = 1 / k
    p_boost = math.exp(2) / (math.exp(2) + k - 1)
    want = 0.5 * p_plain * p_plain + 0.5 * p_plain * p_boost  # order (1,2) or (2,1)
    assert float(logp[0]) == pytest.approx(math.log(want), rel=1e-9)


def _tiny(spec_vocab: int, width: int) -> TinyDiffusionLM:
    gen = derive_generator(0, "tiny")
    model = TinyDiffusionLM(
        TinyConfig(vocab_size=spec_vocab, dim=16, n_layers=1, n_heads=2, max_length=width)
    )
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen))
    return model.eval()


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_reference_sampler_matches_batched(temperature: float) -> None:
    _, spec = toy_spec()
    model = _tiny(spec.vocab_size, 3 + 8)
    prompts = torch.randint(
        spec.mask_id + 1, spec.vocab_size, (5, 3), generator=derive_generator(2, "p")
    )
    kw = {"gen_length": 8, "steps": 4, "block_length": 4, "temperature": temperature}

    def gens() -> list[torch.Generator]:
        return [derive_generator(3, b) for b in range(5)]

    batched = generate(model, prompts, mask_id=spec.mask_id, generator=gens(), **kw).sequences
    ref = reference_generate(model, prompts, mask_id=spec.mask_id, generators=gens(), **kw)
    assert torch.equal(batched, ref)


@pytest.mark.parametrize("part", ["fidelity", "speed", "emerge_vs_maskgit"])
def test_quick_parts_write_their_json(part: str, tmp_path: Path) -> None:
    out, docs = tmp_path / "runs", tmp_path / "docs"
    subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "study.py"),
            part,
            "--quick",
            "--seeds",
            "0",
            "--out",
            str(out),
            "--docs",
            str(docs),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    section = json.loads((out / "sections" / f"{part}_smoke.json").read_text())
    assert section["quick"] and section["markdown"]
    if part == "emerge_vs_maskgit":  # both samplers at both codebook sizes, with diversity
        results = sorted((out / "quick" / "image").glob("*/seed0/result.json"))
        assert [r.parent.parent.name for r in results] == [
            "emerge-g0.8-s3",
            "emerge-g0.8-s3-K1024",
            "maskgit-g0.8-s3",
            "maskgit-g0.8-s3-K1024",
        ]
        assert section["markdown"].count("| emerge, K") == 1 + 1
        for r in results:
            record = json.loads(r.read_text())
            assert record["steps"] == 3 and set(record["diversity_at_base"]) == {
                "emerge",
                "maskgit",
            }
    else:
        assert list((out / "quick" / part).glob("*.json"))
    assert "SMOKE RUN" in (docs / "results.md").read_text()


def test_results_writer_keeps_hand_written_sections(tmp_path: Path) -> None:
    """Sections measured by other commands (rollout speed, RL with fast rollouts) have no
    section file: regenerating results.md keeps their text, and names the command when absent."""
    import study_report

    speed, rl = (study_report.TITLES[k] for k in study_report.EXTERNAL)
    target = tmp_path / "results.md"
    target.write_text(f"# Results\n\n## {speed}\n\nmeasured 17.6x\n\n## {rl}\n\nthree seeds\n")
    sections = tmp_path / "sections"
    sections.mkdir()
    study_report.write_results(sections, target, ("speed", *study_report.EXTERNAL))
    text = target.read_text()
    assert f"## {speed}\n\nmeasured 17.6x" in text and f"## {rl}\n\nthree seeds" in text
    assert "Not yet run. Command: `python benchmarks/study.py speed" in text
    target.write_text("# Results\n")
    study_report.write_results(sections, target, study_report.EXTERNAL)
    assert "Not yet run. Command: `python benchmarks/rollout_speed.py" in target.read_text()


def test_smoke_section_does_not_replace_a_full_result_in_the_document(tmp_path: Path) -> None:
    """A smoke run written into another ``--out`` leaves the document's full result in place;
    a full section file replaces it, and a smoke one fills a part that has no result yet."""
    import study_report

    title = study_report.TITLES["length"]
    target = tmp_path / "results.md"
    target.write_text(f"# Results\n\n## {title}\n\nthirty-six runs\n")
    sections = tmp_path / "sections"
    sections.mkdir()

    def section(name: str, quick: bool, text: str) -> None:
        record = {"quick": quick, "command": "c", "threads": 1, "markdown": text}
        (sections / name).write_text(json.dumps(record))

    section("length_smoke.json", True, "two steps")
    study_report.write_results(sections, target, ("length", "kl"))
    text = target.read_text()
    assert "thirty-six runs" in text and "two steps" not in text
    section("kl_smoke.json", True, "kl smoke")
    study_report.write_results(sections, target, ("length", "kl"))
    assert "SMOKE RUN" in target.read_text() and "kl smoke" in target.read_text()
    section("length.json", False, "new full result")
    study_report.write_results(sections, target, ("length", "kl"))
    text = target.read_text()
    assert "new full result" in text and "thirty-six runs" not in text
