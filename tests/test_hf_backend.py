"""HFBackend: exact teacher-forced scores, honest sampling (full softmax, per-request seeds), limits."""

import numpy as np
import pytest
import torch

from nemo_latent_thoughts.sampler import hf
from nemo_latent_thoughts.sampler.hf import HFBackend


@pytest.fixture(scope="module")
def backend(trained_model):
    return HFBackend(trained_model, batch_size=8, score_batch_size=3)


@pytest.mark.parametrize("temperature, rows_per_pass", [(1.0, None), (0.5, None), (1.0, 3)])
def test_scores_equal_a_plain_forward_pass(backend, temperature, rows_per_pass, monkeypatch):
    if rows_per_pass:  # the output layer over 3 span positions at a time, as for a large vocabulary
        monkeypatch.setattr(hf, "LOGITS_PER_PASS", backend.vocab_size * rows_per_pass)
    rng = np.random.default_rng(0)
    sequences = [rng.integers(0, 300, size=n).tolist() for n in (5, 17, 40, 9, 33)]
    spans = [(1, 5), (3, 17), (10, 30), (8, 9), (1, 33)]
    prefix = rng.integers(0, 300, size=12).tolist()  # four continuations sharing one prefill
    sequences += [prefix + rng.integers(0, 300, size=n).tolist() for n in (1, 6, 3, 9)]
    spans += [(12, 13), (12, 18), (12, 15), (12, 21)]
    longer = prefix + sequences[-1][12:19]  # prefixes extending that one (the E-step's q prompt extends p's)
    sequences += [longer + rng.integers(0, 300, size=4).tolist(), longer[:15] + [7, 8], longer + [5]]
    spans += [(19, 23), (15, 17), (19, 20)]
    sequences.append(prefix[:7])
    spans.append((7, 7))  # an empty span scores 0
    scores = backend.score(sequences, spans, temperature)
    for seq, (start, end), score in zip(sequences, spans, scores):
        with torch.no_grad():
            logp = torch.log_softmax(backend.model(torch.tensor([seq])).logits[0].float() / temperature, -1)
        expected = sum(logp[t - 1, seq[t]].item() for t in range(start, end))
        assert score == pytest.approx(expected, abs=1e-4)
    with pytest.raises(ValueError, match="does not fit"):
        backend.score([[1, 2]], [(0, 2)])


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_first_tokens_follow_the_full_softmax(backend, temperature):
    prompt = [0, 5, 6, 7]
    samples = backend.sample([prompt], 2000, 1, stop_token_id=-1, seeds=[123], temperature=temperature)[0]
    counts = np.bincount([s.token_ids[0] for s in samples], minlength=backend.vocab_size)
    with torch.no_grad():
        logits = backend.model(torch.tensor([prompt])).logits[0, -1].float()
        probs = torch.softmax(logits / temperature, -1).numpy()
    top = np.argsort(probs)[::-1][:8]  # the likeliest tokens, each expected >= a few times
    expected = probs[top] * 2000
    keep = expected >= 5
    observed, expected = counts[top][keep], expected[keep]
    rest_obs, rest_exp = 2000 - observed.sum(), 2000 - expected.sum()
    chi2 = ((observed - expected) ** 2 / expected).sum() + (rest_obs - rest_exp) ** 2 / max(rest_exp, 1e-9)
    assert chi2 < 30  # chi-square with <= 8 degrees of freedom at p < 0.001 is 26.1; top-k would fail badly
    assert len(set(counts.nonzero()[0])) > 10  # not truncated to a few tokens


def test_k_samples_differ_and_seeds_reproduce(backend):
    prompts = [[0, 5, 6, 7, 8], [0, 9, 10]]
    first = backend.sample(prompts, 4, 12, stop_token_id=1, seeds=[1, 2])
    again = backend.sample(prompts, 4, 12, stop_token_id=1, seeds=[1, 2])
    assert first == again
    assert len({tuple(s.token_ids) for s in first[0]}) > 1
    assert backend.sample(prompts, 4, 12, stop_token_id=1, seeds=[3, 2])[0] != first[0]


def test_limit_without_stop_is_not_stopped(backend):
    samples = backend.sample([[0, 5, 6]], 3, 4, stop_token_id=-1, seeds=[0])[0]
    assert all(len(s.token_ids) == 4 and not s.stopped for s in samples)
