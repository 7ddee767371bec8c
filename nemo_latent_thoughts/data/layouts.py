"""Token layouts of a chunk with a latent thought (DESIGN.md 1.3).

    prior layout:      SOL PRIOR z EOL x         (thought first: learns p(z, x))
    posterior layout:  SOL EOL x SOL POST z EOL  (text first: learns q(z | x))

A chunk without a latent is its raw text. A document is BOS + layouts of its chunks + EOS.
"""

from __future__ import annotations

import numpy as np

from nemo_latent_thoughts.tokens import LatentTokenIds

PRIOR_EXTRA = 3  # special tokens the prior layout adds around z and x
POSTERIOR_EXTRA = 5


def prior_layout(ids: LatentTokenIds, z, x) -> np.ndarray:
    return np.concatenate([[ids.sol, ids.prior], z, [ids.eol], x]).astype(np.int64)


def posterior_layout(ids: LatentTokenIds, z, x) -> np.ndarray:
    return np.concatenate([[ids.sol, ids.eol], x, [ids.sol, ids.post], z, [ids.eol]]).astype(np.int64)


def interleaved_sequence(ids: LatentTokenIds, earlier: list[tuple[list[int] | None, list[int]]], z: list[int],
                         x: list[int]) -> tuple[list[int], tuple[int, int]]:
    """A chunk in the context the M-step trains it in: BOS, each earlier (thought, chunk) in the prior
    layout (a chunk without a thought as raw text), then `SOL PRIOR z EOL x`; the span from PRIOR."""
    context = [ids.bos] + [int(t) for zx in earlier for t in (zx[1] if zx[0] is None else prior_layout(ids, *zx))]
    return context + [int(t) for t in prior_layout(ids, z, x)], (len(context) + 1, len(context) + len(z) + 3 + len(x))


def document_layout(ids: LatentTokenIds, raw: np.ndarray, latents: np.ndarray, spans: np.ndarray,
                    prior: np.ndarray) -> np.ndarray:
    """One document laid out for training.

    raw: BOS x_1 .. x_n EOS; latents: the z_i of chunks that have one, concatenated; spans:
    `[n, 2]` (len(x_i), len(z_i) or -1); prior: one bool per chunk with a latent (True: prior
    layout, False: posterior layout).
    """
    pieces, pos, lat, k = [raw[:1]], 1, 0, 0
    for raw_len, latent_len in spans:
        x = raw[pos:pos + raw_len]
        pos += raw_len
        if latent_len < 0:
            pieces.append(x)
            continue
        z = latents[lat:lat + latent_len]
        lat += latent_len
        pieces.append(prior_layout(ids, z, x) if prior[k] else posterior_layout(ids, z, x))
        k += 1
    pieces.append(raw[pos:])
    return np.concatenate(pieces).astype(np.int64)
