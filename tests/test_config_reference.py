"""docs/configuration.md is generated from the config classes and must be current."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_configuration_reference_is_current() -> None:
    spec = importlib.util.spec_from_file_location(
        "config_reference", ROOT / "scripts" / "config_reference.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    expected = module.reference()
    actual = (ROOT / "docs" / "configuration.md").read_text()
    assert actual == expected, "run: python scripts/config_reference.py > docs/configuration.md"
    for name in ("per_device_train_batch_size", "num_iterations", "reward_funcs", "`lr`"):
        assert name in actual


def test_every_config_file_loads() -> None:
    """configs/*.yaml load with their command's config (the recipes: tests/test_dry_run.py)."""
    from maskgrpo.config import DemoConfig, SFTConfig, TrainConfig, load_config

    files = sorted((ROOT / "configs").glob("*.yaml"))
    assert files
    for path in files:
        cls = (
            SFTConfig if "sft" in path.name else DemoConfig if "demo" in path.name else TrainConfig
        )
        load_config(cls, path)
