"""Few-shot prompts as token ids, in plain and latent mode (DESIGN.md 1.6), in two templates.

`qa` (GSM8K/MATH):
    plain:   Question: Q1\\nAnswer: S1 The answer is A1.\\n\\n ... Question: Q\\nAnswer:
    latent:  Question: Q1\\nAnswer:SOL PRIOR S1 EOL The answer is A1.\\n\\n ... Question: Q\\nAnswer:SOL PRIOR
In latent mode the exemplars' worked solutions are their latent thoughts, and the prompt ends with
SOL PRIOR: the model writes a thought, closes it with EOL, then states its answer.

`statement` (the synthetic corpus's own style, for questions `CONTEXT What is EXPR?`):
    plain:   C1 Then E1 = A1. ... C Then E =
    latent:  C1 SOL PRIOR S1 EOL Then E1 = A1. ... C SOL PRIOR E =
In latent mode the thought is opened with the expression (as the program teacher's thoughts are),
so the model works it out step by step before the statement; in plain mode it must state the value
at once, as the compressed corpus does.
"""

from __future__ import annotations

import re
from typing import Sequence

from nemo_latent_thoughts.errors import NLTError
from nemo_latent_thoughts.eval.data import EvalItem
from nemo_latent_thoughts.tokens import LatentTokenIds, encode_raw

TEMPLATES = ("qa", "statement")
STOP_TEXT = {"qa": "Question:", "statement": "."}
_STATEMENT = re.compile(r"\A(.*?)\s*What is (.+)\?\Z", re.DOTALL)


def _statement(item: EvalItem) -> tuple[str, str]:
    match = _STATEMENT.match(item.question)
    if not match:
        raise NLTError(f"{item.where}: the statement template needs questions 'CONTEXT What is EXPR?'; "
                       "use eval.template=qa for this file")
    return match.group(1), match.group(2)


def _pieces(ids: LatentTokenIds, item: EvalItem, mode: str, template: str, shot: bool) -> list:
    """Text pieces and special ids of one exemplar (`shot`) or of the question to answer."""
    latent = mode == "latent"
    if template == "qa":
        head = f"Question: {item.question}\nAnswer:"
        if not shot:
            return [head, ids.sol, ids.prior] if latent else [head]
        tail = f" The answer is {item.answer}.\n\n"
        return [head, ids.sol, ids.prior, " " + item.solution, ids.eol, tail] if latent else [f"{head} {item.solution}{tail}"]
    context, expression = _statement(item)
    if not shot:
        return [context, ids.sol, ids.prior, f"{expression} ="] if latent else [f"{context} Then {expression} ="]
    tail = f" Then {expression} = {item.answer}. "
    return [context, ids.sol, ids.prior, item.solution, ids.eol, tail] if latent else [context + tail]


def prompt_ids(tokenizer, ids: LatentTokenIds, shots: Sequence[EvalItem], item: EvalItem, mode: str,
               max_tokens: int, template: str = "qa") -> list[int]:
    """BOS + exemplars + question, left-truncated to `max_tokens` (BOS kept)."""
    pieces = [p for shot in shots for p in _pieces(ids, shot, mode, template, True)]
    pieces += _pieces(ids, item, mode, template, False)
    encoded = iter(encode_raw(tokenizer, [p for p in pieces if isinstance(p, str)]))
    tokens = [t for p in pieces for t in (next(encoded) if isinstance(p, str) else [p])]
    return [ids.bos] + tokens[-(max_tokens - 1):]


def answer_text(tokenizer, ids: LatentTokenIds, generated: Sequence[int], mode: str,
                template: str = "qa") -> tuple[str, str]:
    """(thought, answer) of a generation: in latent mode the answer is what follows EOL.

    The answer ends at the template's stop text (a new `Question:`, or the statement's full stop).
    """
    generated = list(generated)
    thought: list[int] = []
    if mode == "latent" and ids.eol in generated:
        cut = generated.index(ids.eol)
        thought, generated = generated[:cut], generated[cut + 1:]
    text = tokenizer.decode(generated, skip_special_tokens=True)
    return tokenizer.decode(thought, skip_special_tokens=True).strip(), text.split(STOP_TEXT[template])[0].strip()
