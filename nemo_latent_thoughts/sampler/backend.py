"""The `Backend` protocol: sample token ids and score sequences by teacher forcing.

Everything crosses the boundary as token ids, never text (re-tokenising text changes sequences).
Log-probabilities used in importance weights always come from `score`, one teacher-forced pass of
the same model, never from a sampling engine's own log-probs (DESIGN.md 3.3).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence

from nemo_latent_thoughts.seeding import stable_seed


@dataclass(frozen=True)
class Sample:
    """One sampled continuation: its tokens (without the stop token) and whether it stopped; `failed`:
    a server could not be asked for it (no tokens; its chunk stays raw)."""

    token_ids: list[int]
    stopped: bool
    failed: bool = False


class Backend(Protocol):
    """What the E-step needs from an inference engine."""

    capabilities: frozenset[str]
    """Names of optional features, e.g. {"batched", "gpu"}."""

    def sample(self, prompts: Sequence[Sequence[int]], num_samples: int, max_new_tokens: int,
               stop_token_id: int, seeds: Sequence[int], temperature: float = 1.0) -> list[list[Sample]]:
        """`num_samples` continuations of every prompt at `temperature`, top-p 1, no top-k.

        Sample k of prompt i is drawn with `request_seed(seeds[i], k)`, so the samples of one
        prompt differ and the same seeds give the same samples. A continuation ends at
        `stop_token_id` (stopped) or after `max_new_tokens` tokens (not stopped).
        """

    def score(self, sequences: Sequence[Sequence[int]], spans: Sequence[tuple[int, int]],
              temperature: float = 1.0) -> list[float]:
        """Sum of log p(sequence[t] | sequence[:t]) over t in [start, end) of each span, p the
        softmax of the logits / `temperature` (vLLM's and servers' prompt log-probs: 1 only)."""

    def close(self) -> None:
        """Release the engine."""


class SampledAndScored:
    """One backend samples, another scores (e.g. vLLM samples, HFBackend scores, faster on CPU)."""

    def __init__(self, sampler: Backend, scorer: Backend):
        self.sampler, self.scorer = sampler, scorer
        self.capabilities = sampler.capabilities

    def sample(self, *args, **kwargs) -> list[list[Sample]]:
        return self.sampler.sample(*args, **kwargs)

    def score(self, sequences: Sequence[Sequence[int]], spans: Sequence[tuple[int, int]],
              temperature: float = 1.0) -> list[float]:
        return self.scorer.score(sequences, spans, temperature)

    def close(self) -> None:
        self.sampler.close()
        self.scorer.close()


def check_spans(sequences: Sequence[Sequence[int]], spans: Sequence[tuple[int, int]]) -> None:
    """ValueError unless every span (start, end) of `score` fits its sequence with a token before it."""
    for seq, (start, end) in zip(sequences, spans):
        if not 1 <= start <= end <= len(seq):
            raise ValueError(f"span ({start}, {end}) does not fit a sequence of {len(seq)} tokens")


def require_unit_temperature(temperature: float, engine: str) -> None:
    """ValueError for an engine whose prompt log-probs are the model's own (temperature 1) only."""
    if temperature != 1:
        raise ValueError(f"{engine} scores at temperature 1 only (estep.scorer=hf scores at others)")


def request_seed(seed: int, k: int) -> int:
    """The seed of sample `k` of a prompt whose seed is `seed` (63 bits, well mixed)."""
    return stable_seed(seed, k)
