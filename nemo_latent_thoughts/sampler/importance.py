"""One E-step pass over a batch of chunks: K proposals each, teacher-forced scores, resampling.

For chunk x_i with preceding raw chunks c (DESIGN.md 1.4):

    proposal prompt (q):  BOS c SOL EOL x_i SOL POST           left-truncated to max_prompt_tokens
    log q(z | x):         log-probs of z EOL after that prompt
    log p(z, x):          log-probs of PRIOR z EOL x_i after BOS c SOL (c left-truncated)

Backend-agnostic: any `Backend` (HF, TensorRT-LLM, or a closed-form table model in tests).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from nemo_latent_thoughts.sampler import weights
from nemo_latent_thoughts.sampler.backend import Backend
from nemo_latent_thoughts.seeding import stable_seed
from nemo_latent_thoughts.tokens import LatentTokenIds


@dataclass(frozen=True)
class ChunkInput:
    """A chunk's raw tokens, the raw tokens of the chunks before it, and its identity."""

    doc_id: str
    chunk_idx: int
    tokens: list[int]
    context: list[int]


@dataclass(frozen=True)
class ChunkResult:
    """The K samples of one chunk, their weights, and the resampled latent (None: all rejected)."""

    samples: list[list[int]]
    stopped: list[bool]
    valid: list[bool]
    log_p: list[Optional[float]]
    log_q: list[Optional[float]]
    log_w: np.ndarray
    chosen: Optional[int]
    failed: bool = False
    """A server could not be asked for the samples (soft-failed: the chunk stays raw)."""

    @property
    def latent(self) -> Optional[list[int]]:
        return None if self.chosen is None else self.samples[self.chosen]


def chunk_seed(seed: int, round_: int, doc_id: str, chunk_idx: int) -> int:
    """The sampling/resampling seed of one chunk: independent of batching, sharding and order."""
    return stable_seed(seed, round_, doc_id, chunk_idx)


def proposal_prompt(ids: LatentTokenIds, chunk: ChunkInput, max_tokens: int) -> list[int]:
    prompt = [ids.bos, *chunk.context, ids.sol, ids.eol, *chunk.tokens, ids.sol, ids.post]
    return prompt[-max_tokens:]


def joint_sequence(ids: LatentTokenIds, chunk: ChunkInput, z: Sequence[int],
                   max_context_tokens: int) -> tuple[list[int], tuple[int, int]]:
    """BOS c SOL PRIOR z EOL x with the span from PRIOR to the end; c keeps its last tokens."""
    context = [ids.bos, *chunk.context]
    prefix = (context[-max_context_tokens:] if max_context_tokens else []) + [ids.sol]
    target = [ids.prior, *z, ids.eol, *chunk.tokens]
    return prefix + target, (len(prefix), len(prefix) + len(target))


def infer(backend: Backend, ids: LatentTokenIds, chunks: Sequence[ChunkInput], *, num_samples: int,
          max_new_tokens: int, max_prompt_tokens: int, max_context_tokens: int, seed: int,
          round_: int, num_tokens: int, keep_truncated: bool = False, temperature: float = 1.0) -> list[ChunkResult]:
    """Sample, score and resample latents for `chunks`, proposing from q at `temperature`.

    A sample is rejected (weight -inf) when it is empty or holds a special token or an id >=
    `num_tokens` (the tokenizer's size: the model's padded vocabulary rows are not tokens), and,
    unless `keep_truncated`, when it reached `max_new_tokens` without EOL. A kept truncated sample
    is scored (and laid out) with the EOL it would have needed.
    """
    prompts = [proposal_prompt(ids, c, max_prompt_tokens) for c in chunks]
    seeds = [chunk_seed(seed, round_, c.doc_id, c.chunk_idx) for c in chunks]
    samples = backend.sample(prompts, num_samples, max_new_tokens, ids.eol, seeds, temperature)
    forbidden = {ids.sol, ids.eol, ids.prior, ids.post, ids.bos, ids.eos}

    def valid(tokens: list[int]) -> bool:
        return bool(tokens) and max(tokens) < num_tokens and not forbidden.intersection(tokens)

    sequences, spans, owners = [], [], []
    for i, (chunk, prompt) in enumerate(zip(chunks, prompts)):
        for k, s in enumerate(samples[i]):
            if not (s.stopped or keep_truncated) or not valid(s.token_ids):
                continue  # rejected: weight -inf, no need to score
            sequences.append(prompt + s.token_ids + [ids.eol])
            spans.append((len(prompt), len(prompt) + len(s.token_ids) + 1))
            joint, span = joint_sequence(ids, chunk, s.token_ids, max_context_tokens)
            sequences.append(joint)
            spans.append(span)
            owners.append((i, k))
    if not sequences:
        scores = []
    elif temperature == 1:  # q and p(z, x) in one call
        scores = backend.score(sequences, spans)
    else:  # q (even entries) at its own temperature, p(z, x) (odd) the model's
        scores = [0.0] * len(sequences)
        scores[0::2] = backend.score(sequences[0::2], spans[0::2], temperature)
        scores[1::2] = backend.score(sequences[1::2], spans[1::2])
    log_q = {owner: scores[2 * j] for j, owner in enumerate(owners)}
    log_p = {owner: scores[2 * j + 1] for j, owner in enumerate(owners)}

    results = []
    for i in range(len(chunks)):
        keys = [(i, k) for k in range(num_samples)]
        accepted = [key in log_q for key in keys]
        log_w = weights.log_weights([log_p.get(key, 0.0) for key in keys], [log_q.get(key, 0.0) for key in keys],
                                    accepted)
        chosen = weights.resample(log_w, np.random.default_rng(seeds[i]))
        results.append(ChunkResult(
            samples=[s.token_ids for s in samples[i]], stopped=[s.stopped for s in samples[i]],
            valid=[valid(s.token_ids) for s in samples[i]],
            log_p=[log_p.get(key) for key in keys], log_q=[log_q.get(key) for key in keys],
            log_w=log_w, chosen=chosen, failed=any(s.failed for s in samples[i])))
    return results
