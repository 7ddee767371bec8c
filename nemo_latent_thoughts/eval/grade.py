"""Grading with math-verify (`\\frac{1}{2}` equals `0.5`, `1,000` equals `1000`), in two forms, as
lm-evaluation-harness reports GSM8K:

- flexible: the last answer math-verify finds anywhere in the text (lm-eval's flexible-extract);
- strict: only an answer in the template's own form (lm-eval's strict-match): `The answer is A.`
  for `qa` (a number for GSM8K, as `gsm8k_cot`'s regex; for MATH also the last `\\boxed{}`), the
  statement's value (`... = A`) for `statement`.
"""

from __future__ import annotations

import re
from typing import Optional

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


STRICT_GSM8K = re.compile(r"The answer is (\-?[0-9\.\,]+)\.")  # gsm8k_cot's strict-match, its full stop a full stop
STRICT_MATH = re.compile(r"The answer is (.+?)\.?\s*$", re.MULTILINE)
STRICT_STATEMENT = re.compile(r"(?:\A|=)\s*(-?[0-9][0-9,]*)\s*\Z")


def strict_answer(item: EvalItem, answer_text: str, template: str) -> Optional[str]:
    """The answer in the template's own form, or None when the text does not state one."""
    if template == "statement":
        match = STRICT_STATEMENT.search(answer_text)
        return match.group(1) if match else None
    if item.kind == "math":
        boxed = last_boxed(answer_text)
        match = STRICT_MATH.search(answer_text)
        return boxed if boxed is not None else match.group(1) if match else None
    match = STRICT_GSM8K.search(answer_text)
    return match.group(1) if match else None


def last_boxed(text: str) -> Optional[str]:
    """The content of the last `\\boxed{...}` (braces balanced), or None."""
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    depth, i = 0, start + len("\\boxed")
    for j in range(i, len(text)):
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        if depth == 0:
            return text[i + 1:j]
    return None


def is_strict_correct(item: EvalItem, answer_text: str, template: str) -> bool:
    """Whether the answer stated in the template's form equals the item's."""
    found = strict_answer(item, answer_text, template)
    if found is None:
        return False
    return is_correct(item, f"${found}$" if item.kind == "math" else found.rstrip(".").replace(",", ""))
