"""Regenerate ``docs/results.md``: the MaskGRPO study on this project's toy tasks.

Usage: python benchmarks/study.py PART [--quick] [--seeds 0 1 2] [--out runs/study]

PART is one of ablation, truncation, kl, emerge_vs_maskgit, fidelity, speed, length, report.
``length`` (see ``study_length.py``) runs the estimators at answer lengths 4, 8 and 16; its
``--lengths`` runs a subset (each length's runs are its own), ``--jobs 2`` runs two
``(length, seed)`` pairs side by side, and ``--collect`` writes the section from the runs that
finished (it names the missing ones). Every run
writes its own JSON under ``--out`` (``--out/quick`` with ``--quick``) and is reused if it exists;
each part also writes ``sections/<part>.json``, from which ``docs/results.md`` is rebuilt (a full
result replaces a smoke one). Plots go to ``docs/results/``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import shlex
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import study_length  # noqa: E402
import study_length_report  # noqa: E402
import study_report  # noqa: E402
from study_fidelity import FidelityConfig, run_fidelity  # noqa: E402
from study_speed import run_speed  # noqa: E402
from study_train import (  # noqa: E402
    ABLATION,
    IMAGE_GAMMAS,
    IMAGE_TOKENIZERS,
    TEXT_GAMMAS,
    Budget,
    image_run,
    text_run,
)

ROOT = Path(__file__).resolve().parent.parent
PARTS = ("ablation", "truncation", "kl", "emerge_vs_maskgit", "fidelity", "speed", "length")
log = logging.getLogger("study")


def _cached(path: Path, compute: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    if path.is_file():
        return json.loads(path.read_text())
    result = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2))
    return result


def part_ablation(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    budget = Budget.of(args.quick)
    runs = {
        name: [text_run(s, g, seed, out, budget) for seed in args.seeds] for name, s, g in ABLATION
    }
    return study_report.ablation_section(runs, args.plot_dir, args.tag)


def part_truncation(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    budget = Budget.of(args.quick)
    text = {
        g: [text_run("fading", g, seed, out, budget) for seed in args.seeds] for g in TEXT_GAMMAS
    }
    ibudget = Budget.of(args.quick, image=True)
    image = {
        g: [image_run("emerge", g, seed, out, ibudget) for seed in args.image_seeds]
        for g in IMAGE_GAMMAS
    }
    return study_report.truncation_section(text, image, args.plot_dir, args.tag)


def part_kl(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    budget = Budget.of(args.quick)
    runs = {
        name: [text_run(s, g, seed, out, budget) for seed in args.seeds] for name, s, g in ABLATION
    }
    return study_report.kl_section(runs, args.plot_dir, args.tag)


def part_emerge(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    budget = Budget.of(args.quick, image=True)
    runs = {
        f"{s}, {k}": [image_run(s, 0.8, seed, out, budget, k) for seed in args.image_seeds]
        for k in IMAGE_TOKENIZERS
        for s in ("emerge", "maskgit")
    }
    return study_report.emerge_section(runs, args.plot_dir, args.tag)


def part_fidelity(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    results = {}
    for noise in (0.05,) if args.quick else (0.02, 0.05, 0.15):
        cfg = (
            FidelityConfig(
                completion_length=3,
                completions=32,
                replicates=2,
                fit_steps=60,
                noise=noise,
                seed=args.seeds[0],
            )
            if args.quick
            else FidelityConfig(noise=noise, seed=args.seeds[0])
        )
        path = out / "fidelity" / f"noise{noise}-L{cfg.completion_length}-seed{cfg.seed}.json"
        results[str(noise)] = _cached(path, lambda c=cfg: run_fidelity(c))
    return study_report.fidelity_section(results)


def part_speed(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    path = out / "speed" / f"seed{args.seeds[0]}.json"
    return study_report.speed_section(_cached(path, lambda: run_speed(args.quick, args.seeds[0])))


def part_length(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    lengths = tuple(args.lengths or study_length.LENGTHS)
    if args.jobs > 1 and not args.collect:
        study_length.run_parallel(args.seeds, out, args.quick, lengths, args.jobs)
    runs = study_length.study(args.seeds, out, args.quick, lengths, run=not args.collect)
    return study_length_report.length_section(runs, args.plot_dir, args.tag, args.seeds)


HANDLERS = {
    "ablation": part_ablation,
    "truncation": part_truncation,
    "kl": part_kl,
    "emerge_vs_maskgit": part_emerge,
    "fidelity": part_fidelity,
    "speed": part_speed,
    "length": part_length,
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("part", choices=(*PARTS, "report"))
    parser.add_argument("--quick", action="store_true", help="a smoke run: few steps, one seed")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument(
        "--image-seeds",
        type=int,
        nargs="+",
        default=None,
        help="seeds of the image runs (default: --seeds); image runs cost 3-5 minutes each",
    )
    parser.add_argument(
        "--lengths",
        type=int,
        nargs="+",
        choices=study_length.LENGTHS,
        default=None,
        help="length part: answer lengths to run (default: all); the section needs all of them",
    )
    parser.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="length part: (length, seed) pairs run side by side, each in its own process",
    )
    parser.add_argument(
        "--collect",
        action="store_true",
        help="length part: write the section from the runs that finished, run nothing",
    )
    parser.add_argument("--out", default="runs/study", help="folder of the runs' JSON results")
    parser.add_argument("--docs", default=str(ROOT / "docs"), help="where results.md is written")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (1 is fastest on a shared 2-core machine)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(args.threads)
    if args.quick:
        args.seeds = args.seeds[:1]
    if args.image_seeds is None or args.quick:
        args.image_seeds = args.seeds
    out = Path(args.out) / ("quick" if args.quick else "")
    docs = Path(args.docs)
    args.plot_dir = docs / "results"
    args.plot_dir.mkdir(parents=True, exist_ok=True)
    args.tag = "smoke" if args.quick else "full"
    given = list(argv if argv is not None else sys.argv[1:])
    command = "python benchmarks/study.py " + shlex.join(
        [
            a
            for i, a in enumerate(given)
            if not (a.startswith("--docs") or given[i - 1 : i] == ["--docs"])
        ]
    )
    if args.jobs < 1:
        parser.error(f"--jobs {args.jobs}: give 1 or more processes")
    if args.part == "length" and set(args.lengths or ()) not in (set(), set(study_length.LENGTHS)):
        study_length.study(args.seeds, out, args.quick, tuple(args.lengths))
        print("runs done; `python benchmarks/study.py length` (all lengths) writes the section")
        return
    if args.part != "report":
        section = HANDLERS[args.part](args, out)
        section.update(
            quick=args.quick,
            command=command,
            seeds=args.seeds,
            image_seeds=args.image_seeds,
            threads=torch.get_num_threads(),
        )
        name = f"{args.part}{'_smoke' if args.quick else ''}.json"
        sections = Path(args.out) / "sections"
        sections.mkdir(parents=True, exist_ok=True)
        (sections / name).write_text(json.dumps(section, indent=2, default=_plain))
        print(section.get("markdown", ""))
    path = study_report.write_results(
        Path(args.out) / "sections", docs / "results.md", (*PARTS, *study_report.EXTERNAL)
    )
    print(f"wrote {path}")


def _plain(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.asdict(obj)
    return str(obj)


if __name__ == "__main__":
    main()
