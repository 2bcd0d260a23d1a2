"""Prompt templates: a system prompt, optional few-shot examples and an optional chat template.

When a tokenizer with ``apply_chat_template`` is given, the prompt is rendered as chat messages
(system, then one user/assistant pair per shot, then the question) with the generation prompt
appended. Without one, the same parts are joined as plain text.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol


class ChatTokenizer(Protocol):
    """Anything with the ``transformers`` ``apply_chat_template`` method."""

    def apply_chat_template(self, conversation: Any, **kwargs: Any) -> Any: ...


@dataclass(frozen=True)
class PromptTemplate:
    """How a question becomes a prompt.

    Attributes:
        name: recorded in evaluation results so runs name their prompt format.
        system: system prompt (instructions on reasoning and answer format).
        instruction: format string with ``{question}``; the user turn.
        few_shot: (question, answer) examples shown before the question.
    """

    name: str
    system: str = ""
    instruction: str = "{question}"
    few_shot: Sequence[tuple[str, str]] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if "{question}" not in self.instruction:
            raise ValueError(
                f"PromptTemplate {self.name!r} instruction {self.instruction!r} lacks "
                "'{question}'; add the placeholder where the question goes."
            )

    def messages(self, question: str, n_shots: int | None = None) -> list[dict[str, str]]:
        """Chat messages: system, few-shot pairs (first ``n_shots``), then the question."""
        shots = list(self.few_shot if n_shots is None else self.few_shot[:n_shots])
        out = [{"role": "system", "content": self.system}] if self.system else []
        for shot_q, shot_a in shots:
            out.append({"role": "user", "content": self.instruction.format(question=shot_q)})
            out.append({"role": "assistant", "content": shot_a})
        out.append({"role": "user", "content": self.instruction.format(question=question)})
        return out

    def render(
        self,
        question: str,
        tokenizer: ChatTokenizer | None = None,
        n_shots: int | None = None,
    ) -> str:
        """Prompt text, through the tokenizer's chat template when one is given."""
        messages = self.messages(question, n_shots)
        if tokenizer is not None and hasattr(tokenizer, "apply_chat_template"):
            text = tokenizer.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=True
            )
            return str(text)
        parts = [m["content"] for m in messages]
        return "\n\n".join(parts)


REASONING_SYSTEM = (
    "You are a careful problem solver. Think step by step, then give the final answer "
    "as \\boxed{answer}."
)
CODE_SYSTEM = (
    "You are an expert Python programmer. Write a complete, self-contained solution in a "
    "single ```python code block."
)

GSM8K_TEMPLATE = PromptTemplate("gsm8k-boxed", REASONING_SYSTEM)
MATH_TEMPLATE = PromptTemplate("math-boxed", REASONING_SYSTEM)
CODE_TEMPLATE = PromptTemplate("code-fenced", CODE_SYSTEM)
COUNTDOWN_TEMPLATE = PromptTemplate(
    "countdown-boxed",
    "Combine the given numbers with + - * / and brackets, using each exactly once, to reach "
    "the target. Think step by step, then give the expression as \\boxed{expression}.",
)
SUDOKU_TEMPLATE = PromptTemplate(
    "sudoku4-boxed",
    "Solve the 4x4 Sudoku: each row, column and 2x2 box holds 1-4 once. 0 marks an empty "
    "cell. Give the solved grid as 16 digits, row by row, in \\boxed{}.",
)
