"""Deterministic chunking of a document (DESIGN.md 1.1).

A document is split into paragraphs at newlines, paragraphs into sentences with an *untrained*
Punkt splitter (no model download), and consecutive sentences are grouped into chunks of
`1 + Poisson(mean)` sentences, capped. The whitespace between two sentences opens the next one, so
the chunks concatenate back to the exact text. The grouping RNG is seeded from the text and a
global seed: the same text always gives the same chunks, in whatever order or shard it comes.
"""

from __future__ import annotations

import functools
import re

import numpy as np

from nemo_latent_thoughts.seeding import stable_seed

_LINE = re.compile(r"[^\n]+")


@functools.lru_cache(maxsize=1)
def _punkt():
    """The untrained Punkt splitter (default parameters, no data files).

    Its decision at a candidate boundary depends only on the short context string it is given,
    so memoising that decision changes no output and halves the time on typical text.
    """
    from nltk.tokenize.punkt import PunktSentenceTokenizer

    class MemoPunkt(PunktSentenceTokenizer):
        @functools.lru_cache(maxsize=1 << 18)
        def text_contains_sentbreak(self, text: str) -> bool:
            return super().text_contains_sentbreak(text)

    return MemoPunkt()


def sentence_ends(text: str) -> list[int]:
    """End offsets of the sentences of `text` (paragraphs split at newlines, then Punkt)."""
    ends = []
    for line in _LINE.finditer(text):
        start = line.start()
        ends.extend(start + end for _, end in _punkt().span_tokenize(line.group()))
    return ends


def document_rng(text: str, seed: int) -> np.random.Generator:
    """The chunking RNG of one document: seeded by its text and the global seed only."""
    return np.random.default_rng([seed, stable_seed(text)])


def chunk_text(text: str, seed: int, mean_sentences: float = 7.0, max_sentences: int = 20) -> list[str]:
    """Split `text` into chunks of 1 + Poisson(mean_sentences) sentences (at most max_sentences).

    `"".join(chunk_text(text, ...)) == text` always holds.
    """
    ends = sentence_ends(text)
    if not ends:
        return [text] if text else []
    ends[-1] = len(text)  # trailing whitespace stays with the last sentence
    rng = document_rng(text, seed)
    chunks, start, i = [], 0, 0
    while i < len(ends):
        size = min(1 + int(rng.poisson(mean_sentences)), max_sentences, len(ends) - i)
        i += size
        chunks.append(text[start:ends[i - 1]])
        start = ends[i - 1]
    return chunks
