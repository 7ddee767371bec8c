"""TRTLLMBackend against a fake of TensorRT-LLM 1.2's LLM API (tests/fakes), and the real engine on a GPU."""

import sys
from pathlib import Path

import pytest
import torch

from nemo_latent_thoughts.sampler.hf import HFBackend
from nemo_latent_thoughts.sampler.importance import ChunkInput, infer
from nemo_latent_thoughts.tokens import latent_token_ids, load_tokenizer

FAKES = str(Path(__file__).parent / "fakes")


@pytest.fixture
def fake_trtllm(monkeypatch):
    """Put the fake `tensorrt_llm` on the path for one test, and forget it afterwards."""
    monkeypatch.syspath_prepend(FAKES)
    yield
    for name in [m for m in sys.modules if m == "tensorrt_llm" or m.startswith("tensorrt_llm.")]:
        del sys.modules[name]


def sequences_and_spans():
    seqs = [[0, 5, 6, 7, 8, 9, 10], [0, 11, 12], [0, 5, 6, 7, 20, 21, 22, 23]]
    return seqs, [(1, 7), (2, 3), (4, 8)]


def test_scores_match_the_hf_backend(fake_trtllm, trained_model):
    from nemo_latent_thoughts.sampler.trtllm import TRTLLMBackend

    backend = TRTLLMBackend(trained_model)
    assert backend._llm.kv_cache_config.enable_block_reuse is False  # reuse truncates context logits
    seqs, spans = sequences_and_spans()
    reference = HFBackend(trained_model).score(seqs, spans)
    assert backend.score(seqs, spans) == pytest.approx(reference, abs=1e-4)
    backend.close()


def test_truncated_context_logits_are_caught(fake_trtllm, trained_model):
    from tensorrt_llm.llmapi import KvCacheConfig

    from nemo_latent_thoughts.sampler.trtllm import TRTLLMBackend

    backend = TRTLLMBackend(trained_model)
    backend._llm.kv_cache_config = KvCacheConfig(enable_block_reuse=True)
    with pytest.raises(RuntimeError, match="block reuse"):
        backend.score(*sequences_and_spans())


def test_samples_stop_at_eol_limit_and_differ_per_request(fake_trtllm, trained_model):
    from nemo_latent_thoughts.sampler.trtllm import TRTLLMBackend

    backend = TRTLLMBackend(trained_model)
    samples = backend.sample([[0, 5, 6, 7]], 4, 6, stop_token_id=-1, seeds=[1])[0]
    assert all(len(s.token_ids) == 6 and not s.stopped for s in samples)
    assert len({tuple(s.token_ids) for s in samples}) > 1
    eol_everywhere = backend.sample([[0, 5]], 2, 50, stop_token_id=samples[0].token_ids[0], seeds=[1])[0]
    assert eol_everywhere[0].stopped and samples[0].token_ids[0] not in eol_everywhere[0].token_ids


def test_an_estep_pass_runs_on_the_adapter(fake_trtllm, trained_model, tokenizer_dir):
    from nemo_latent_thoughts.sampler.trtllm import TRTLLMBackend

    tokenizer = load_tokenizer(tokenizer_dir)
    chunk = ChunkInput("d", 1, tokenizer("Then a*b = 12.")["input_ids"], tokenizer("Let a = 3 and b = 4.")["input_ids"])
    results = infer(TRTLLMBackend(trained_model), latent_token_ids(tokenizer), [chunk], num_samples=3, max_new_tokens=12,
                    max_prompt_tokens=256, max_context_tokens=256, seed=0, round_=1, num_tokens=len(tokenizer))
    assert len(results[0].samples) == 3 and len(results[0].log_w) == 3


@pytest.mark.trtllm
def test_real_engine_scores_its_samples_like_the_hf_backend(trained_model, tokenizer_dir):
    """On a GPU with TensorRT-LLM: sample with the engine, score with both backends."""
    from nemo_latent_thoughts.sampler.trtllm import TRTLLMBackend

    ids = latent_token_ids(load_tokenizer(tokenizer_dir))
    engine = TRTLLMBackend(trained_model)
    try:
        prompt = [ids.bos, 5, 6, 7, ids.sol, ids.post]
        samples = engine.sample([prompt], 4, 32, stop_token_id=ids.eol, seeds=[7])[0]
        seqs = [prompt + s.token_ids + [ids.eol] for s in samples]
        spans = [(len(prompt), len(seq)) for seq in seqs]
        hf = HFBackend(trained_model, device="cuda").score(seqs, spans)
        assert engine.score(seqs, spans) == pytest.approx(hf, abs=2e-2)  # engine kernels vs transformers
    finally:
        engine.close()
    assert torch.cuda.is_available()
