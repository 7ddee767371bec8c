"""Few-shot prompts as token ids, in plain and latent mode (DESIGN.md 1.6).

    plain:   Question: Q1\nAnswer: S1 The answer is A1.\n\n ... Question: Q\nAnswer:
    latent:  Question: Q1\nAnswer:SOL PRIOR S1 EOL The answer is A1.\n\n ... Question: Q\nAnswer:SOL PRIOR

In latent mode the exemplars' worked solutions are their latent thoughts, and the prompt ends with
SOL PRIOR: the model writes a thought, closes it with EOL, then states its answer.
"""

from __future__ import annotations

from typing import Sequence

from nemo_latent_thoughts.eval.data import EvalItem
from nemo_latent_thoughts.tokens import LatentTokenIds, encode_raw

STOP_TEXT = "Question:"


def final_answer(item: EvalItem) -> str:
    return f" The answer is {item.answer}."


def prompt_ids(tokenizer, ids: LatentTokenIds, shots: Sequence[EvalItem], item: EvalItem, mode: str,
               max_tokens: int) -> list[int]:
    """BOS + exemplars + question, left-truncated to `max_tokens` (BOS kept)."""
    pieces: list = []
    for shot in shots:
        if mode == "latent":
            pieces += [f"Question: {shot.question}\nAnswer:", ids.sol, ids.prior, " " + shot.solution, ids.eol,
                       final_answer(shot) + "\n\n"]
        else:
            pieces += [f"Question: {shot.question}\nAnswer: {shot.solution}{final_answer(shot)}\n\n"]
    pieces += [f"Question: {item.question}\nAnswer:"] + ([ids.sol, ids.prior] if mode == "latent" else [])
    texts = [p for p in pieces if isinstance(p, str)]
    encoded = iter(encode_raw(tokenizer, texts))
    tokens = [t for p in pieces for t in (next(encoded) if isinstance(p, str) else [p])]
    return [ids.bos] + tokens[-(max_tokens - 1):]


def answer_text(tokenizer, ids: LatentTokenIds, generated: Sequence[int], mode: str) -> tuple[str, str]:
    """(thought, answer) of a generation: in latent mode the answer is what follows EOL."""
    generated = list(generated)
    thought: list[int] = []
    if mode == "latent" and ids.eol in generated:
        cut = generated.index(ids.eol)
        thought, generated = generated[:cut], generated[cut + 1:]
    text = tokenizer.decode(generated, skip_special_tokens=True)
    return tokenizer.decode(thought, skip_special_tokens=True), text.split(STOP_TEXT)[0].strip()
