"""The shapes world (specs, splits, tag mix, renderer) and the patch quantizer."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from maskgrpo.tasks.shapes.quantizer import PatchQuantizer, fit_quantizer
from maskgrpo.tasks.shapes.world import (
    DEFAULT_TAG_MIX,
    TAGS,
    WorldConfig,
    all_specs,
    load_tag_mix,
    render,
    sample_specs,
    split_specs,
)


def test_spec_format_and_phrasing() -> None:
    prompts = {s["prompt"] for t in TAGS for s in all_specs(t)}
    assert "a photo of two circles" in prompts
    assert "a photo of four crosses" in prompts
    assert "a photo of a blue square" in prompts
    assert "a photo of a triangle left of a square" in prompts
    assert "a photo of a red circle and a green bar" in prompts
    for tag in TAGS:
        for spec in all_specs(tag):
            assert spec["tag"] == tag and set(spec) <= {"tag", "include", "exclude", "prompt"}
            assert all({"class", "count"} <= set(r) for r in spec["include"])
    counting = all_specs("counting")[0]
    assert counting["exclude"] == [{"class": counting["include"][0]["class"], "count": 3}]
    position = all_specs("position")[0]
    assert position["include"][1]["position"] == ["left of", 0]


def test_split_is_fixed_by_seed_and_disjoint() -> None:
    a, b, c = split_specs(0), split_specs(0), split_specs(1)
    assert a == b and a != c
    for tag in TAGS:
        train = {s["prompt"] for s in a.train[tag]}
        held = {s["prompt"] for s in a.heldout[tag]}
        assert train and held and not train & held
        assert train | held == {s["prompt"] for s in all_specs(tag)}


def test_tag_mix_matches_evaluation_metadata(shared_data: Path) -> None:
    path = shared_data / "geneval" / "evaluation_metadata.jsonl"
    if path.exists():
        measured = load_tag_mix(path)
        for tag in TAGS:
            assert measured[tag] == pytest.approx(DEFAULT_TAG_MIX[tag], abs=1e-12)
    n = 1000
    specs = sample_specs(split_specs(0).train, n, np.random.default_rng(0))
    counts = Counter(s["tag"] for s in specs)
    for tag in TAGS:
        assert abs(counts[tag] - n * DEFAULT_TAG_MIX[tag]) <= 1
    custom = sample_specs(split_specs(0).train, 10, np.random.default_rng(0), {"colors": 1.0})
    assert {s["tag"] for s in custom} == {"colors"}


def test_render_is_seeded_and_leaves_global_rng_alone() -> None:
    spec = all_specs("counting")[-1]  # four of a class, the tightest layout
    state = np.random.get_state(legacy=False)["state"]["key"].copy()
    a = render(spec, np.random.default_rng(5))
    b = render(spec, np.random.default_rng(5))
    assert np.array_equal(a, b) and a.dtype == np.uint8 and a.shape == (32, 32, 3)
    assert np.array_equal(np.random.get_state(legacy=False)["state"]["key"], state)
    big = render(spec, np.random.default_rng(5), WorldConfig(image_size=48, max_size=14))
    assert big.shape == (48, 48, 3)
    with pytest.raises(ValueError, match="not in this world"):
        render(
            {"include": [{"class": "bench", "count": 1}], "prompt": "x"}, np.random.default_rng()
        )


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    rng = np.random.default_rng(3)
    specs = [s for t in TAGS for s in all_specs(t)][::7]
    return np.stack([render(s, rng) for s in specs])  # (B, 32, 32, 3)


@pytest.mark.parametrize("num_codes", [16, 1024])
def test_quantizer_round_trip(images: np.ndarray, num_codes: int, tmp_path: Path) -> None:
    q = fit_quantizer(num_codes, seed=0, num_images=300)
    assert q.num_codes == num_codes and q.patch_size == 4
    codes = q.encode(images)
    assert codes.shape == (len(images), 64) and codes.dtype == torch.long
    assert 0 <= int(codes.min()) and int(codes.max()) < num_codes
    decoded = q.decode(codes)
    assert decoded.shape == images.shape and decoded.dtype == torch.uint8
    assert torch.equal(q.encode(decoded), codes)  # decoding is a fixed point of encoding
    q.save(tmp_path / "q.safetensors")
    again = PatchQuantizer.load(tmp_path / "q.safetensors")
    assert torch.equal(again.codebook, q.codebook)


def test_quantizer_fit_is_deterministic_and_validates() -> None:
    a = fit_quantizer(64, seed=0, num_images=200)
    b = fit_quantizer(64, seed=0, num_images=200)
    assert torch.equal(a.codebook, b.codebook)
    bg = torch.tensor(WorldConfig().background, dtype=torch.uint8)
    assert (a.codebook[0] == bg).all()  # code 0 is the background patch
    with pytest.raises(ValueError, match="num_codes"):
        fit_quantizer(4, seed=0)
    with pytest.raises(ValueError, match="strip mask"):
        a.decode(torch.full((1, 64), 64))
    with pytest.raises(ValueError, match="square grid"):
        a.decode(torch.zeros((1, 10), dtype=torch.long))


SNAPPED = WorldConfig(image_size=32, snap=8)


def test_snapped_layout_puts_one_whole_object_per_cell() -> None:
    from maskgrpo.rewards.geneval import make_geneval_reward

    rng = np.random.default_rng(0)
    specs = [s for t in TAGS for s in all_specs(t, SNAPPED)][::3]
    images = np.stack([render(s, rng, SNAPPED) for s in specs])  # (B, 32, 32, 3)
    bg = np.asarray(SNAPPED.background, dtype=np.uint8)
    fg = (images != bg).any(-1)  # (B, 32, 32)
    # the last row and column of every 8x8 cell are background: objects never cross cells
    assert not fg[:, 7::8, :].any() and not fg[:, :, 7::8].any()
    reward = make_geneval_reward(SNAPPED)
    assert reward([s["prompt"] for s in specs], list(images), spec=specs) == [1.0] * len(specs)
    # one code per cell: background + 6 shape patterns (bars both ways) x 6 colours, exact
    q = fit_quantizer(37, seed=0, config=SNAPPED, patch_size=8)
    codes = q.encode(images)
    assert codes.shape == (len(specs), 16)
    assert torch.equal(q.decode(codes), torch.from_numpy(images))
    with pytest.raises(ValueError, match="distinct patterns"):
        fit_quantizer(64, seed=0, config=SNAPPED, patch_size=8)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"snap": 4}, "snap must be"),
        ({"snap": 12}, "snap must be"),
        ({"image_size": 16, "snap": 8, "max_size": 7}, "too few cells"),
    ],
)
def test_snapped_world_rejects_bad_grids(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        WorldConfig(**{"image_size": 32, **kwargs})


def test_cover_sampling_reaches_every_spec_before_repeating() -> None:
    pool = split_specs(0, SNAPPED, heldout_fraction=0.5).heldout
    distinct = sum(len(v) for v in pool.values())
    assert distinct >= 300  # the image demo's held-out set
    specs = sample_specs(pool, 2000, np.random.default_rng(1), cover=True)
    counts = Counter(s["tag"] for s in specs)
    for tag in TAGS:
        assert abs(counts[tag] - 2000 * DEFAULT_TAG_MIX[tag]) <= 1
        per_prompt = Counter(s["prompt"] for s in specs if s["tag"] == tag)
        assert len(per_prompt) == min(len(pool[tag]), counts[tag])
        assert max(per_prompt.values()) - min(per_prompt.values()) <= 1  # cycled evenly
    assert len({s["prompt"] for s in specs}) == distinct
    plain = sample_specs(pool, 2000, np.random.default_rng(1))
    assert len({s["prompt"] for s in plain}) < distinct  # with replacement misses some
