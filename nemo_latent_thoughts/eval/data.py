"""Evaluation files: GSM8K-format (`question`, `answer` ending `#### N`) and MATH-format
(`problem`, `solution` with `\\boxed{}`) JSONL, detected per file from the first record."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from nemo_latent_thoughts.errors import NLTError


@dataclass(frozen=True)
class EvalItem:
    """One question, its worked solution (used when it is a few-shot exemplar) and its final answer."""

    question: str
    solution: str
    answer: str
    kind: str  # gsm8k or math
    where: str  # FILE:LINE


def last_boxed(text: str) -> Optional[str]:
    """The content of the last `\\boxed{...}` (or `\\fbox{...}`) in `text`, braces balanced."""
    start = max(text.rfind("\\boxed{"), text.rfind("\\fbox{"))
    if start < 0:
        return None
    i = text.index("{", start) + 1
    depth = 1
    for j in range(i, len(text)):
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        if depth == 0:
            return text[i:j].strip() or None
    return None


def _item(record: dict, where: str) -> EvalItem:
    if "question" in record:
        question, answer = record.get("question"), record.get("answer")
        if not isinstance(question, str) or not isinstance(answer, str) or "####" not in answer:
            raise ValueError("GSM8K format needs string fields question and answer, the answer ending '#### N'")
        solution, final = answer.rsplit("####", 1)
        if not final.strip():
            raise ValueError("nothing after '####' in answer")
        return EvalItem(question.strip(), solution.strip(), final.strip().replace(",", ""), "gsm8k", where)
    if "problem" in record:
        problem, solution = record.get("problem"), record.get("solution")
        if not isinstance(problem, str) or not isinstance(solution, str):
            raise ValueError("MATH format needs string fields problem and solution")
        final = last_boxed(solution)
        if final is None:
            raise ValueError("MATH format needs a \\boxed{...} answer in solution")
        return EvalItem(problem.strip(), solution.strip(), final, "math", where)
    raise ValueError("neither GSM8K (question, answer) nor MATH (problem, solution) fields")


def load_items(path: str | Path, on_bad_record: str = "error") -> tuple[list[EvalItem], list[str]]:
    """The items of one file and the `FILE:LINE: problem` of each skipped record."""
    try:
        f = open(path, "rb")
    except OSError as e:
        raise NLTError(f"eval.data: cannot read {path}: {e.strerror}") from None
    items, skipped = [], []
    with f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            try:
                record = json.loads(line.decode("utf-8"))  # UnicodeDecodeError is a ValueError
                if not isinstance(record, dict):
                    raise ValueError("not a JSON object")
                items.append(_item(record, where))
            except ValueError as e:
                if on_bad_record == "error":
                    raise NLTError(f"{where}: {e} (fix it, or set eval.on_bad_record=skip)") from None
                skipped.append(f"{where}: {e}")
    kinds = {item.kind for item in items}
    if len(kinds) > 1:
        raise NLTError(f"{path}: mixes GSM8K and MATH records; keep one format per file")
    return items, skipped
