"""Pull final answers out of model completions and normalise numbers.

The answer of a completion is looked for, in order: the last ``\\boxed{...}`` (braces balanced),
the last ``<answer>...</answer>`` block, the last ``#### x`` line (the GSM8K gold format), and
finally the last number anywhere in the text. A minus sign may be ASCII ``-`` or the Unicode
minus ``−`` (U+2212), small or full-width hyphen-minus (U+FE63, U+FF0D).

:func:`score_rows` applies a per-row scorer so that a completion that is not a string (``None``,
bytes, a number: a broken generation pipeline) gets ``None`` without touching its neighbours.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from fractions import Fraction
from typing import Any

MINUS_SIGNS = "\u2212\ufe63\uff0d"  # read as "-"

_ANSWER_TAG = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
_HASHES = re.compile(r"####\s*([^\n]+)")
_NUMBER = re.compile(
    rf"[-{MINUS_SIGNS}]?\$?\s?\d[\d,]*(?:\.\d+)?(?:\s*/\s*\d+)?|[-{MINUS_SIGNS}]?\.\d+"
)
_LATEX_FRAC = re.compile(r"^\\d?frac\{\s*(-?[\d.,]+)\s*\}\{\s*(-?[\d.,]+)\s*\}$")
_MINUS = str.maketrans(dict.fromkeys(MINUS_SIGNS, "-"))
_WRAPPERS = re.compile(r"\\(?:text|mathrm|textbf|mbox)\{([^{}]*)\}")


def score_rows(
    score: Callable[..., float | None], completions: Sequence[Any], *columns: Sequence[Any]
) -> list[float | None]:
    """``score(completion, *row)`` for each row; ``None`` where the completion is not a string."""
    rows = zip(completions, *columns, strict=True)
    return [score(c, *rest) if isinstance(c, str) else None for c, *rest in rows]


def last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` (or ``\\fbox{...}``) with balanced braces."""
    start = max(text.rfind("\\boxed{"), text.rfind("\\fbox{"))
    if start < 0:
        return None
    i = text.index("{", start) + 1
    depth = 1
    for j in range(i, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return text[i:j].strip()
    return None


def answer_tag(text: str) -> str | None:
    """Content of the last ``<answer>...</answer>`` block."""
    found = _ANSWER_TAG.findall(text)
    return found[-1].strip() if found else None


def last_number(text: str) -> str | None:
    """The last number-like token (integers, decimals, ``a/b``, with ``$`` and commas)."""
    found = _NUMBER.findall(text)
    return found[-1].strip() if found else None


def extract_answer(text: str) -> str | None:
    """Final answer of a completion: boxed, then ``<answer>``, then ``#### x``, then last number."""
    for candidate in (last_boxed(text), answer_tag(text)):
        if candidate:
            return candidate
    hashes = _HASHES.findall(text)
    if hashes:
        return hashes[-1].strip()
    return last_number(text)


def normalize_number(text: str | None) -> Fraction | None:
    """Exact value of a numeric answer, or ``None`` if it is not a single number.

    Accepts ``1,234``, ``$12``, ``12.50``, ``7.0``, ``3/4``, ``\\frac{3}{4}``, ``-5``, ``50%``
    (read as 50), units in ``\\text{}``, and a trailing full stop. A longer answer (``x = 5``,
    ``5 apples``) is reduced to its last number.
    """
    if text is None:
        return None
    s = _WRAPPERS.sub(r"\1", text).strip()
    s = s.replace("$", "").replace("\\!", "").replace("\\,", "").replace("\\%", "%")
    s = s.translate(_MINUS).strip().rstrip(".").rstrip("%").strip()
    frac = _LATEX_FRAC.match(s)
    if frac:
        s = f"{frac.group(1)}/{frac.group(2)}"
    value = _parse_plain(s)
    if value is None:
        tail = last_number(s)
        value = _parse_plain(tail.replace("$", "")) if tail else None
    return value


def _parse_plain(s: str) -> Fraction | None:
    """``Fraction`` of a bare number or ``a/b`` (commas as thousands separators)."""
    s = s.replace(",", "").replace(" ", "")
    if not s:
        return None
    try:
        if "/" in s:
            num, den = s.split("/", 1)
            return Fraction(Fraction(num), Fraction(den))
        return Fraction(s)
    except (ValueError, ZeroDivisionError):
        return None
