"""Exact math of the E-step on a table language model whose distributions are known in closed form."""

import math

import numpy as np
import pytest

from nemo_latent_thoughts.sampler import weights
from nemo_latent_thoughts.sampler.backend import Sample, request_seed
from nemo_latent_thoughts.sampler.importance import ChunkInput, infer
from nemo_latent_thoughts.tokens import LatentTokenIds

IDS = LatentTokenIds(bos=0, eos=1, sol=2, eol=3, prior=4, post=5)
LATENTS = [6, 7, 8]
Q = np.array([0.5, 0.3, 0.2])          # proposal q(z | x): one latent token, then EOL
P_Z = np.array([0.2, 0.3, 0.5])        # prior p(z)
P_X_GIVEN_Z = np.array([0.1, 0.4, 0.7])  # p(x | z) for the chunk's text x = [9]
LOG_P_X = math.log(float((P_Z * P_X_GIVEN_Z).sum()))


def tempered(probs, temperature):
    """softmax(log probs / temperature): the table model's distribution at another temperature."""
    p = probs ** (1 / temperature)
    return p / p.sum()


class TableBackend:
    """A closed-form 'language model' behind the Backend protocol (test double)."""

    capabilities = frozenset()

    def sample(self, prompts, num_samples, max_new_tokens, stop_token_id, seeds, temperature=1.0):
        out = []
        for seed in seeds:
            row = []
            for k in range(num_samples):
                z = int(np.random.default_rng(request_seed(seed, k)).choice(3, p=tempered(Q, temperature)))
                row.append(Sample([LATENTS[z]], stopped=True))
            out.append(row)
        return out

    def score(self, sequences, spans, temperature=1.0):
        scores = []
        for seq, (start, end) in zip(sequences, spans):
            z = LATENTS.index(seq[start] if seq[start] != IDS.prior else seq[start + 1])
            if seq[start] == IDS.prior:  # PRIOR z EOL x: the model's own joint, never tempered here
                assert temperature == 1
                scores.append(math.log(P_Z[z]) + math.log(P_X_GIVEN_Z[z]))
            else:                        # z EOL after the posterior prompt
                assert seq[start - 1] == IDS.post
                scores.append(math.log(tempered(Q, temperature)[z]))
        return scores

    def close(self):
        pass


def chunks(n):
    return [ChunkInput(doc_id=f"d{i}", chunk_idx=0, tokens=[9], context=[]) for i in range(n)]


def run(n, k, temperature=1.0):
    return infer(TableBackend(), IDS, chunks(n), num_samples=k, max_new_tokens=4, max_prompt_tokens=64,
                 max_context_tokens=64, seed=0, round_=1, num_tokens=10, temperature=temperature)


@pytest.mark.parametrize("temperature", [1.0, 0.5])
def test_log_weights_equal_analytic_p_over_q(temperature):
    q = tempered(Q, temperature)
    for result in run(50, 4, temperature):
        for z, lw in zip(result.samples, result.log_w):
            i = LATENTS.index(z[0])
            assert lw == pytest.approx(math.log(P_Z[i] * P_X_GIVEN_Z[i] / q[i]), abs=1e-12)


def test_a_colder_proposal_draws_its_mode_more_often_and_its_elbo_stays_a_bound():
    """At temperature 0.5, q's mode (latent 6) is drawn more often; weights against the tempered q
    keep ELBO_K below log p(x), tightening with K, and the resampled latents follow p(z | x)."""
    share = {t: np.mean([z[0] == 6 for r in run(400, 4, t) for z in r.samples]) for t in (1.0, 0.5)}
    assert share[0.5] > share[1.0] + 0.1
    means = {k: np.mean([weights.elbo(r.log_w) for r in run(400, k, 0.5)]) for k in (1, 4, 64)}
    assert all(m <= LOG_P_X + 0.01 for m in means.values()) and means[1] < means[4] < means[64]
    chosen = np.bincount([LATENTS.index(r.samples[r.chosen][0]) for r in run(2000, 64, 0.5)], minlength=3)
    posterior = P_Z * P_X_GIVEN_Z / (P_Z * P_X_GIVEN_Z).sum()
    assert np.abs(chosen / chosen.sum() - posterior).max() < 0.03


def test_resampling_frequencies_match_softmax_of_log_weights():
    log_w = np.log(np.array([0.1, 0.25, 0.05, 0.6])) + 3.0
    draws = 20000
    counts = np.bincount([weights.resample(log_w, np.random.default_rng(s)) for s in range(draws)], minlength=4)
    expected = weights.normalized(log_w) * draws
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 16.27  # chi-square, 3 degrees of freedom, p = 0.001


def test_elbo_is_below_log_px_rises_with_k_and_approaches_it():
    means = {k: np.mean([weights.elbo(r.log_w) for r in run(400, k)]) for k in (1, 2, 4, 16, 64)}
    assert all(m <= LOG_P_X + 0.01 for m in means.values()), (means, LOG_P_X)
    assert means[1] < means[2] < means[4] < means[16] < means[64]
    assert LOG_P_X - means[64] < 0.02


def test_rejections_resampling_and_ess():
    log_w = weights.log_weights([1.0, 2.0, 3.0], [0.0, 0.0, 0.0], [True, False, True])
    assert log_w[1] == -np.inf
    p = np.array([1.0, math.e ** 2]) / (1 + math.e ** 2)  # softmax of log weights 1 and 3
    assert weights.effective_sample_size(log_w) == pytest.approx(1 / (p ** 2).sum())
    assert weights.elbo(log_w) == pytest.approx(math.log((math.e + math.e ** 3) / 3))
    all_rejected = weights.log_weights([1.0, 2.0], [0.0, 0.0], [False, False])
    assert weights.resample(all_rejected, np.random.default_rng(0)) is None
    assert weights.elbo(all_rejected) == -math.inf and weights.effective_sample_size(all_rejected) == 0.0


def test_the_k_samples_of_a_chunk_come_from_distinct_seeds_and_are_reproducible():
    first, again = run(200, 4), run(200, 4)
    assert [r.samples for r in first] == [r.samples for r in again]
    assert [r.chosen for r in first] == [r.chosen for r in again]
    assert sum(len({z[0] for z in r.samples}) > 1 for r in first) > 150


class TruncatingBackend(TableBackend):
    """The table model, except that latent 8 never reaches EOL (it hits max_new_tokens)."""

    def sample(self, prompts, num_samples, max_new_tokens, stop_token_id, seeds, temperature=1.0):
        return [[Sample(s.token_ids, stopped=s.token_ids != [8]) for s in row]
                for row in super().sample(prompts, num_samples, max_new_tokens, stop_token_id, seeds, temperature)]


@pytest.mark.parametrize("keep", [False, True])
def test_truncated_samples_are_rejected_or_kept_and_scored_with_their_eol(keep):
    results = infer(TruncatingBackend(), IDS, chunks(50), num_samples=4, max_new_tokens=4, max_prompt_tokens=64,
                    max_context_tokens=64, seed=0, round_=1, num_tokens=10, keep_truncated=keep)
    truncated = [(r, k) for r in results for k, s in enumerate(r.samples) if s == [8]]
    assert len(truncated) > 10 and all(not r.stopped[k] for r, k in truncated)
    for r, k in truncated:
        if keep:  # the same weight as the table model's stopped latent 8: log p(z, x) - log q(z | x)
            assert r.log_w[k] == pytest.approx(math.log(P_Z[2] * P_X_GIVEN_Z[2] / Q[2]))
        else:
            assert r.log_w[k] == -np.inf and r.log_q[k] is None
    assert any(r.latent == [8] for r in results) == keep
