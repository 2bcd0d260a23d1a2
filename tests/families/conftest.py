"""The published LLaDA, Dream and MMaDA code at a tiny size, built once per test session.

``build_fixtures.py`` (beside the checkout in ``../shared/fixtures/remote_models``, or the folder
named by ``$MASKGRPO_REMOTE_MODELS``) writes five model folders in seconds from the modeling
files that ship with the hub checkpoints: ``llada``, ``llada_legacy``, ``dream``,
``dream_fasttok``, ``mmada``. Loaded models are cached per session for read-only tests.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from families_support import FIXTURES

from maskgrpo.models.hf import HFPolicy, load_hf_policy

REPO_ROOT = Path(__file__).resolve().parents[2]


def _builder() -> Path:
    env = os.environ.get("MASKGRPO_REMOTE_MODELS")
    root = Path(env) if env else REPO_ROOT.parent / "shared" / "fixtures" / "remote_models"
    return root / "build_fixtures.py"


@pytest.fixture(scope="session")
def remote_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Folder holding the five fixture model folders."""
    builder = _builder()
    if not builder.is_file():
        pytest.skip(
            f"{builder} not found: check out the shared fixtures beside the repository or set "
            "MASKGRPO_REMOTE_MODELS to the remote_models folder"
        )
    out = tmp_path_factory.mktemp("remote_models")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, str(builder), "--out", str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    for name in FIXTURES:
        assert (out / name / "config.json").is_file(), done.stdout
    return out


@pytest.fixture(scope="session")
def loaded(remote_models: Path) -> Callable[[str], HFPolicy]:
    """``loaded(name)``: the fixture loaded once per session. Tests must not change it."""
    cache: dict[str, HFPolicy] = {}

    def load(name: str) -> HFPolicy:
        if name not in cache:
            cache[name] = load_hf_policy(str(remote_models / name), trust_remote_code=True)
        return cache[name]

    return load
