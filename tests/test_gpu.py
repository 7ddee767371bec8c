"""The core on a CUDA GPU (no NeMo, no Bridge): megatron-core without the CPU shims, and the HF
E-step backend, against their CPU results. Run by the GPU check (`benchmarks/gpu_check`)."""

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.gpu


def test_megatron_model_on_gpu_has_the_hf_exports_logits(trained_model):
    from transformers import LlamaForCausalLM

    from nemo_latent_thoughts import megatron_cpu
    from nemo_latent_thoughts.model.convert import import_hf
    from nemo_latent_thoughts.model.megatron import gpt_model, load_state

    megatron_cpu.initialize(seed=0)  # nccl, no CPU shims
    state, shape = import_hf(trained_model)
    model = gpt_model(shape).cuda().eval()
    load_state(model, {k: v.cuda() for k, v in state.items()})
    hf = LlamaForCausalLM.from_pretrained(trained_model, local_files_only=True).cuda().eval()
    tokens = torch.randint(0, shape.vocab_size, (2, 48), device="cuda")
    with torch.no_grad():
        ours = model(tokens, torch.arange(48, device="cuda").expand(2, 48), megatron_cpu.causal_mask(48).cuda())
        theirs = hf(tokens).logits
    assert torch.allclose(ours, theirs, atol=1e-3)


def test_hf_backend_scores_on_gpu_equal_cpu_scores(trained_model):
    from nemo_latent_thoughts.sampler.hf import HFBackend

    rng = np.random.default_rng(0)
    sequences = [rng.integers(0, 300, size=n).tolist() for n in (9, 40, 17, 64)]
    spans = [(2, 9), (10, 40), (1, 17), (32, 64)]
    cpu, gpu = HFBackend(trained_model), HFBackend(trained_model, device="cuda")
    assert np.allclose(gpu.score(sequences, spans), cpu.score(sequences, spans), atol=1e-3)
    samples = gpu.sample([[0, 5, 6, 7], [0, 9]], 4, 12, stop_token_id=-1, seeds=[1, 2])
    assert [len(row) for row in samples] == [4, 4]
    assert all(len(s.token_ids) == 12 and not s.stopped for row in samples for s in row)
    assert len({tuple(s.token_ids) for s in samples[0]}) > 1  # each request has its own seed
