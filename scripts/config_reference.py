"""Write docs/configuration.md: every field of every command, its default and its help, from the
config classes themselves (a test checks the file is current).

    python scripts/config_reference.py > docs/configuration.md
"""

from __future__ import annotations

import dataclasses
import sys

from maskgrpo.config import (
    DemoConfig,
    EvalConfig,
    GenerateConfig,
    MaskGRPOConfig,
    SFTConfig,
    TrainConfig,
)
from maskgrpo.config_io import renamed_fields
from maskgrpo.merge import MergeConfig

COMMANDS = (
    ("train", TrainConfig),
    ("sft", SFTConfig),
    ("eval", EvalConfig),
    ("generate", GenerateConfig),
    ("merge", MergeConfig),
    ("demo", DemoConfig),
)

INTRO = """# Configuration reference

Every command takes one typed config: `--config file.yaml` sets fields, `--field-name value`
overrides any of them, and `maskgrpo <command> --help` prints the same text as this page (which
is generated from the config classes by `python scripts/config_reference.py`). Lists take
several values (`--reward-funcs a b`, YAML `[a, b]`); booleans take `true`/`false` (`--flag`
alone means true).

`maskgrpo train` uses the names of TRL's `GRPOConfig` where the meaning is the same. Its batch:
one step generates `per_device_train_batch_size x gradient_accumulation_steps x processes`
completions (a multiple of `num_generations`; prompts per step = that / `num_generations`),
each process its contiguous slice; each of the `num_iterations` inner updates is one optimizer
step over all of them, accumulated over `gradient_accumulation_steps` micro-batches of
`per_device_train_batch_size` rows, the loss normalised over the whole batch. `max_steps`
counts these steps (TRL counts optimizer updates: here `max_steps x num_iterations`).

In Python, `maskgrpo.MaskGRPOConfig` holds the `train` fields marked "trainer" below; the others
say where the model, the rows and the rewards come from, which `MaskGRPOTrainer` takes as
arguments instead (`model`, `train_dataset`, `eval_dataset`, `reward_funcs`).
"""


def _default(f: dataclasses.Field) -> str:  # type: ignore[type-arg]
    value = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
    return f"`{value!r}`" if value != "" else "`''`"


def reference() -> str:
    trainer = {f.name for f in dataclasses.fields(MaskGRPOConfig)}
    parts = [INTRO]
    for command, cls in COMMANDS:
        parts.append(f"\n## maskgrpo {command}\n\n{(cls.__doc__ or '').splitlines()[0]}\n")
        marker = command == "train"
        head = "| field | default | | meaning |" if marker else "| field | default | meaning |"
        parts.append(head + ("\n|---|---|---|---|" if marker else "\n|---|---|---|"))
        for f in dataclasses.fields(cls):
            text = f.metadata.get("help", "").replace("|", "\\|")
            where = ("trainer" if f.name in trainer else "") if marker else None
            cells = [f"`{f.name}`", _default(f), *([where] if where is not None else []), text]
            parts.append("| " + " | ".join(cells) + " |")
        if command == "train":
            parts.append(
                "\n`--dry-run` (command line only): check the run on a CPU; see the README."
            )
    parts.append("\n## Renamed fields\n")
    parts.append("A name from before the TRL vocabulary is an error naming its replacement.\n")
    parts.append("| command | old name | now |\n|---|---|---|")
    for command, cls in COMMANDS:
        for old, new in renamed_fields(cls).items():
            parts.append(f"| {command} | `{old}` | {new} |")
    return "\n".join(parts) + "\n"


if __name__ == "__main__":
    sys.stdout.write(reference())
