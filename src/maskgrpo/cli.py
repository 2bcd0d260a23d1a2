"""The ``maskgrpo`` command line: ``sft``, ``train``, ``generate``, ``eval``, ``merge``, ``demo``.

Every command takes one typed config: ``--config file.yaml`` sets fields, and any field can be
overridden with ``--field value``; ``maskgrpo <command> --help`` documents each field.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from .config import (
    DemoConfig,
    EvalConfig,
    GenerateConfig,
    SFTConfig,
    TrainConfig,
    add_config_arguments,
    config_from_args,
)
from .merge import MergeConfig

__all__ = ["main"]

log = logging.getLogger("maskgrpo")


def _out(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def _sft(cfg: SFTConfig, _: argparse.Namespace) -> None:
    from .trainer.interrupt import TrainingInterrupted
    from .trainer.run import run_sft

    try:
        _out(json.dumps(run_sft(cfg), indent=2))
    except TrainingInterrupted as stop:
        sys.stderr.write(f"maskgrpo sft: {stop}\n")
        raise SystemExit(128 + stop.signum) from None


def _train(cfg: TrainConfig, args: argparse.Namespace) -> None:
    from .trainer.distributed import is_main
    from .trainer.grpo import TrainingAborted
    from .trainer.interrupt import TrainingInterrupted
    from .trainer.run import run_train

    if args.dry_run:
        from .trainer.dry_run import dry_run

        _out(json.dumps(dry_run(cfg, say=_out), indent=2))
        return
    try:
        summary = run_train(cfg)
        if is_main():  # one summary per launch, not one per process
            _out(json.dumps(summary, indent=2))
    except TrainingInterrupted as stop:
        sys.stderr.write(f"maskgrpo train: {stop}\n")
        raise SystemExit(128 + stop.signum) from None
    except TrainingAborted as err:
        sys.stderr.write(f"maskgrpo train: aborted: {err}\n")
        raise SystemExit(1) from None


def _generate(cfg: GenerateConfig, _: argparse.Namespace) -> None:
    from .trainer.run import run_generate

    for row in run_generate(cfg):
        _out(json.dumps(row))


def _eval(cfg: EvalConfig, _: argparse.Namespace) -> None:
    from .trainer.run import run_eval

    result = run_eval(cfg)
    if isinstance(result, dict):  # a benchmark: result.json of the evaluation harness
        lo, hi = result["pass@1_bootstrap95"]
        pass_k = "".join(f", pass@{k} {v:.3f}" for k, v in result["pass@k"].items() if k != "1")
        _out(
            f"{cfg.dataset}: pass@1 {result['pass@1']:.3f} (95% CI {lo:.3f}-{hi:.3f}){pass_k}, "
            f"mean reward {result['mean_reward']:.3f} over {result['n_prompts']} prompts x "
            f"{result['n_samples']} samples; results in {cfg.output_dir}"
        )
        return
    lo, hi = result.ci95
    _out(
        f"accuracy {result.accuracy:.3f} (95% CI {lo:.3f}-{hi:.3f}) on {result.n} held-out prompts; "
        f"mean reward {result.reward:.3f}"
    )


def _merge(cfg: MergeConfig, _: argparse.Namespace) -> None:
    from .merge import run_merge

    _out(json.dumps(run_merge(cfg), indent=2))


def _demo(cfg: DemoConfig, _: argparse.Namespace) -> None:
    if cfg.modality == "image":
        from .recipes.image_demo import run_image_demo

        run_image_demo(cfg, say=_out)
    else:
        from .recipes.text_demo import run_demo

        run_demo(cfg, say=_out)


COMMANDS: dict[str, tuple[type, Callable[[Any, argparse.Namespace], None], str]] = {
    "sft": (SFTConfig, _sft, "masked-diffusion SFT of a base policy"),
    "train": (TrainConfig, _train, "MaskGRPO reinforcement learning"),
    "generate": (GenerateConfig, _generate, "sample completions from a model"),
    "eval": (EvalConfig, _eval, "held-out accuracy with a 95% interval"),
    "merge": (MergeConfig, _merge, "write a LoRA output folder as a plain merged model"),
    "demo": (DemoConfig, _demo, "SFT a tiny model, then MaskGRPO; accuracy before and after"),
}


def _leave_process_group() -> None:
    """After an ``accelerate launch`` run, leave the process group before exit."""
    if "torch" in sys.modules:
        from .trainer.distributed import shutdown

        shutdown()


def _check_inputs(command: str, cfg: Any) -> None:
    """File-system inputs checked before any work: the output folder and a local model folder."""
    from .trainer.file_checks import check_model_folder
    from .trainer.outputs import check_not_a_training_run, check_output_dir

    out_dir = getattr(cfg, "output_dir", None)
    if command != "generate" and isinstance(out_dir, str):
        check_output_dir(out_dir)
    benchmark = getattr(cfg, "is_benchmark", False)
    if command == "eval" and benchmark and isinstance(out_dir, str):  # writes samples.jsonl
        check_not_a_training_run(out_dir)
    model = getattr(cfg, "model", None)
    if isinstance(model, str) and model != "tiny":
        check_model_folder(model)


def _fail(command: str, message: str, code: int = 2) -> NoReturn:
    """One line on stderr and exit ``code``: bad input never shows a traceback."""
    sys.stderr.write(f"maskgrpo {command}: error: {message}\n")
    raise SystemExit(code)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="maskgrpo", description=__doc__, allow_abbrev=False)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (cls, _, text) in COMMANDS.items():
        p = sub.add_parser(
            name,
            help=text.replace("%", "%%"),
            description=(cls.__doc__ or text).strip().replace("%", "%%"),
            allow_abbrev=False,  # a prefix such as --lr must not silently pick --lr-scheduler-type
        )
        add_config_arguments(p, cls)
        if name == "train":
            p.add_argument(
                "--dry-run",
                action="store_true",
                help="Check a run on a CPU before renting GPUs: load and validate the data, the "
                "template and the rewards, check the config, build the model (a tiny model of "
                "the same architecture when the weights are not here) and run one step, "
                "writing to a temporary folder.",
            )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    cls, run, _ = COMMANDS[args.command]
    try:
        cfg: Any = config_from_args(cls, args)
        _check_inputs(args.command, cfg)
    except ValueError as err:
        _fail(args.command, str(err))
    if getattr(cfg, "threads", 0) > 0:
        import torch

        torch.set_num_threads(cfg.threads)
    try:
        run(cfg, args)
    except ValueError as err:
        _fail(args.command, str(err))
    except OSError as err:  # a missing file, a full disk, a permission: the message says which
        _fail(args.command, str(err), 1)
    except KeyboardInterrupt:
        _fail(args.command, "interrupted", 130)
    finally:
        _leave_process_group()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
