"""Deterministic chunking of a document (DESIGN.md 1.1).

A document is split into paragraphs at newlines, paragraphs into sentences with an *untrained*
Punkt splitter (no model download), and consecutive sentences are grouped into chunks of
`1 + Poisson(mean)` sentences, capped. The whitespace between two sentences opens the next one, so
the chunks concatenate back to the exact text. The grouping RNG is seeded from the text and a
global seed: the same text always gives the same chunks, in whatever order or shard it comes.

Punkt sees a long paragraph a window of at most `WINDOW` characters at a time, so time is linear
in the text and no regular-expression time limit of nltk's can trip on a valid document. Windows
end at whitespace; the last sentence of a window, which may run past it, is split again at the
start of the next window, so the sentences are those Punkt finds in the whole paragraph. A
"sentence" longer than a window (text with no sentence end) is cut at whitespace.
"""

from __future__ import annotations

import functools
import itertools
import re
from typing import Iterator

import numpy as np

from nemo_latent_thoughts.seeding import stable_seed

WINDOW = 1 << 16
"""The most characters of a paragraph Punkt sees at once, and the longest sentence."""

_LINE = re.compile(r"[^\n]+")
_SPACES = " \t\r\f\v"


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


def sentence_ends(text: str, window: int = WINDOW) -> Iterator[int]:
    """End offsets of the sentences of `text` (paragraphs split at newlines, then Punkt), in order."""
    for line in _LINE.finditer(text):
        yield from _paragraph_ends(text, line.start(), line.end(), window)


def _paragraph_ends(text: str, pos: int, end: int, window: int) -> Iterator[int]:
    while end - pos > window:
        stop = _window_stop(text, pos, pos + window)
        piece = text[pos:stop]
        # Breaks decided in the window's last word may differ from the whole paragraph's (Punkt
        # looks one word ahead); the ones before it do not. The next window starts after them.
        last_word = max(piece.rfind(c) for c in _SPACES) + 1
        spans = list(_punkt().span_tokenize(piece))
        final = [e for _, e in itertools.takewhile(lambda span: span[1] < last_word, spans[:-1])]
        if final:
            yield from (pos + e for e in final)
            pos += spans[len(final)][0]
        else:  # no sentence end in a whole window: cut there
            yield stop
            pos = stop
    yield from (pos + e for _, e in _punkt().span_tokenize(text[pos:end]))


def _window_stop(text: str, start: int, stop: int) -> int:
    """The end of the window `text[start:stop]`: its last whitespace in the second half, else `stop`."""
    cut = max(text.rfind(c, start + (stop - start) // 2, stop) for c in _SPACES)
    return cut if cut > start else stop


def document_rng(text: str, seed: int) -> np.random.Generator:
    """The chunking RNG of one document: seeded by its text and the global seed only."""
    return np.random.default_rng([seed, stable_seed(text)])


def chunk_text(text: str, seed: int, mean_sentences: float = 7.0, max_sentences: int = 20) -> list[str]:
    """Split `text` into chunks of 1 + Poisson(mean_sentences) sentences (at most max_sentences).

    `"".join(chunk_text(text, ...)) == text` always holds.
    """
    rng = document_rng(text, seed)
    chunks, start, previous_end, size, count = [], 0, 0, 0, 0
    for end in sentence_ends(text):
        if count == size:  # the chunk so far is full: this sentence opens the next one
            if count:
                chunks.append(text[start:previous_end])
                start = previous_end
            size, count = min(1 + int(rng.poisson(mean_sentences)), max_sentences), 0
        count, previous_end = count + 1, end
    if not count:
        return [text] if text else []
    chunks.append(text[start:])  # trailing whitespace stays with the last sentence
    return chunks
