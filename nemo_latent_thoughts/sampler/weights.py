"""Importance weights, resampling and the ELBO of one chunk's K latent samples (DESIGN.md 1.4).

    log w_k = log p(z_k, x) - log q(z_k | x)        (-inf for a rejected sample)
    ELBO_K  = logsumexp_k(log w_k) - log K           (a lower bound on log p(x), tighter with K)

One latent is resampled from Categorical(softmax(log w)), not taken as the argmax.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import numpy as np


def log_weights(log_p: Sequence[float], log_q: Sequence[float], accepted: Sequence[bool]) -> np.ndarray:
    """log p - log q per sample; -inf where the sample was rejected (no EOL, invalid tokens)."""
    w = np.asarray(log_p, dtype=np.float64) - np.asarray(log_q, dtype=np.float64)
    return np.where(np.asarray(accepted, dtype=bool), w, -np.inf)


def normalized(log_w: np.ndarray) -> np.ndarray:
    """softmax(log w); all zeros when every sample was rejected."""
    if not np.isfinite(log_w).any():
        return np.zeros_like(log_w)
    shifted = np.exp(log_w - log_w.max())
    return shifted / shifted.sum()


def resample(log_w: np.ndarray, rng: np.random.Generator) -> Optional[int]:
    """Index of one sample drawn from softmax(log w); None when every sample was rejected."""
    probs = normalized(log_w)
    if not probs.any():
        return None
    return int(rng.choice(len(probs), p=probs))


def elbo(log_w: np.ndarray) -> float:
    """ELBO_K = logsumexp(log w) - log K (-inf when every sample was rejected)."""
    finite = log_w[np.isfinite(log_w)]
    if finite.size == 0:
        return -math.inf
    top = finite.max()
    return float(top + math.log(np.exp(finite - top).sum()) - math.log(len(log_w)))


def effective_sample_size(log_w: np.ndarray) -> float:
    """(sum w)^2 / sum w^2: between 1 (one sample carries all weight) and K; 0 if all rejected."""
    probs = normalized(log_w)
    return float(1.0 / (probs ** 2).sum()) if probs.any() else 0.0
