"""Grading with math-verify: `\\frac{1}{2}` equals `0.5`, `1,000` equals `1000`."""

from __future__ import annotations

from math_verify import parse, verify

from nemo_latent_thoughts.eval.data import EvalItem


def gold(item: EvalItem):
    return parse(f"${item.answer}$" if item.kind == "math" else item.answer)


def has_answer(text: str) -> bool:
    """Whether math-verify finds an answer in `text` (in latent mode, a model may answer only in its thought)."""
    return bool(parse(text))


def is_correct(item: EvalItem, answer_text: str) -> bool:
    """Whether the final answer math-verify extracts from `answer_text` equals the item's."""
    predicted = parse(answer_text)
    return bool(predicted) and verify(gold(item), predicted)
