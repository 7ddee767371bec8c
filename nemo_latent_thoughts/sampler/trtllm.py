"""`TRTLLMBackend`: sampling and scoring with TensorRT-LLM's LLM API (PyTorch backend).

Written against TensorRT-LLM 1.2 (`tensorrt_llm/llmapi/llm.py`, `tensorrt_llm/sampling_params.py`;
see docs/tensorrt-llm-1.2-api.md). `tensorrt_llm` is imported only when the backend is built.

- Prompts go in as lists of Python ints with `skip_tokenizer_init=True`; no text crosses.
- Sampling: one request per (prompt, k), `temperature` (estep.temperature), `top_p=1.0`, `top_k=0` (off), its own
  `seed`, `end_id` = EOL; `finish_reason == "stop"` marks a sample that ended at EOL, `"length"` one
  that hit `max_tokens`. (TensorRT-LLM 1.2's default sampler ignores per-request seeds, so samples
  differ but are not reproducible there; releases with per-request seeding honour them.)
- Scoring by teacher forcing from the engine's context logits (`return_context_logits=True`,
  one generated token), with KV-cache block reuse disabled: reuse truncates context logits. The
  length of the returned logits is checked against every sequence.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch

from nemo_latent_thoughts.optional import require
from nemo_latent_thoughts.sampler.backend import Sample, check_spans, request_seed


class TRTLLMBackend:
    """A Hugging Face directory (e.g. an M-step's hf/ export) served by TensorRT-LLM."""

    capabilities = frozenset({"batched", "gpu"})

    def __init__(self, model_dir: str | Path, dtype: str = "auto", free_gpu_memory_fraction: float = 0.8):
        require("tensorrt_llm", "estep.backend=trtllm")
        from tensorrt_llm import LLM, SamplingParams
        from tensorrt_llm.llmapi import KvCacheConfig

        self._sampling_params = SamplingParams
        self._llm = LLM(model=str(model_dir), skip_tokenizer_init=True, dtype=dtype,
                        kv_cache_config=KvCacheConfig(enable_block_reuse=False,
                                                      free_gpu_memory_fraction=free_gpu_memory_fraction))

    def sample(self, prompts: Sequence[Sequence[int]], num_samples: int, max_new_tokens: int,
               stop_token_id: int, seeds: Sequence[int], temperature: float = 1.0) -> list[list[Sample]]:
        inputs, params = [], []
        for prompt, seed in zip(prompts, seeds):
            for k in range(num_samples):
                inputs.append([int(t) for t in prompt])
                params.append(self._sampling_params(
                    max_tokens=max_new_tokens, temperature=temperature, top_p=1.0, top_k=0, seed=request_seed(seed, k),
                    end_id=stop_token_id, pad_id=stop_token_id, stop_token_ids=[stop_token_id],
                    include_stop_str_in_output=False, detokenize=False))
        outputs = self._llm.generate(inputs, params, use_tqdm=False)
        samples = [Sample([int(t) for t in out.outputs[0].token_ids if t != stop_token_id],
                          out.outputs[0].finish_reason == "stop") for out in outputs]
        return [samples[i * num_samples:(i + 1) * num_samples] for i in range(len(prompts))]

    def score(self, sequences: Sequence[Sequence[int]], spans: Sequence[tuple[int, int]],
              temperature: float = 1.0) -> list[float]:
        check_spans(sequences, spans)
        params = self._sampling_params(max_tokens=1, return_context_logits=True, detokenize=False,
                                       end_id=0, pad_id=0)
        outputs = self._llm.generate([[int(t) for t in seq] for seq in sequences], params, use_tqdm=False)
        scores = []
        for seq, (start, end), out in zip(sequences, spans, outputs):
            logits = out.context_logits
            if logits is None or logits.shape[0] != len(seq):
                raise RuntimeError(f"TensorRT-LLM returned context logits of shape "
                                   f"{None if logits is None else tuple(logits.shape)} for {len(seq)} tokens; "
                                   "is KV-cache block reuse on?")
            logp = torch.log_softmax(logits[start - 1:end - 1].float() / temperature, dim=-1)
            targets = torch.as_tensor(seq[start:end], device=logp.device)
            scores.append(logp.gather(-1, targets[:, None]).sum().item())
        return scores

    def close(self) -> None:
        self._llm.shutdown()
