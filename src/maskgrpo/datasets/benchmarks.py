"""The benchmark registry: each benchmark's default prompt template, and which are generated.

The configuration checks (:class:`maskgrpo.config.EvalConfig`) and the evaluation runner
(:mod:`maskgrpo.evaluation.benchmark`) both read these tables; neither imports the other.
"""

from __future__ import annotations

from .templates import (
    CODE_TEMPLATE,
    COUNTDOWN_TEMPLATE,
    GSM8K_TEMPLATE,
    MATH_TEMPLATE,
    SUDOKU_TEMPLATE,
    PromptTemplate,
)

__all__ = ["BENCHMARKS", "GENERATED", "PAPER_GEN_LENGTH", "PLAIN_TEMPLATE", "TEMPLATES"]

PLAIN_TEMPLATE = PromptTemplate("plain")
TEMPLATES = {
    t.name: t
    for t in (
        GSM8K_TEMPLATE,
        MATH_TEMPLATE,
        CODE_TEMPLATE,
        COUNTDOWN_TEMPLATE,
        SUDOKU_TEMPLATE,
        PLAIN_TEMPLATE,
    )
}
# Default template of each benchmark (MaskGRPO, arXiv 2510.02880, asks for boxed answers).
BENCHMARKS = {
    "gsm8k": GSM8K_TEMPLATE.name,
    "math500": MATH_TEMPLATE.name,
    "mbpp": CODE_TEMPLATE.name,
    "humaneval": CODE_TEMPLATE.name,
    "countdown": COUNTDOWN_TEMPLATE.name,
    "sudoku": SUDOKU_TEMPLATE.name,
}
GENERATED = ("countdown", "sudoku")
PAPER_GEN_LENGTH = 256  # completion length of the paper's text evaluations
