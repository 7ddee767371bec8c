"""FAKE for tests: the part of TensorRT-LLM 1.2's LLM API that `TRTLLMBackend` uses.

Mirrors tensorrt_llm/llmapi/llm.py (`LLM`, `LLM.generate`, `LLM.shutdown`), tensorrt_llm/
sampling_params.py (`SamplingParams`) and tensorrt_llm/executor/result.py (`RequestOutput`,
`CompletionOutput`), backed by a transformers model on CPU. Behaviours reproduced on purpose:
`skip_tokenizer_init=True` needs `end_id`; greedy decoding when temperature, top_p and top_k are all
None; `top_k=-1` is invalid; stop tokens are stripped from `token_ids` unless
`include_stop_str_in_output`; and, with KV-cache block reuse on (the default), context logits come
back one row short (the known truncation bug the adapter must avoid).
"""

from dataclasses import dataclass, field
from typing import Any, List, Optional, Union

import torch

from tensorrt_llm.llmapi import KvCacheConfig

__version__ = "1.2.0+fake"

_LLM_KWARGS = {"kv_cache_config", "max_batch_size", "max_num_tokens", "max_seq_len", "max_beam_width",
               "enable_chunked_prefill"}


@dataclass(slots=True, kw_only=True)
class SamplingParams:
    """Mirrors tensorrt_llm/sampling_params.py `SamplingParams` (fields and defaults used here)."""

    end_id: Optional[int] = None
    pad_id: Optional[int] = None
    max_tokens: int = 32
    stop_token_ids: Optional[List[int]] = None
    include_stop_str_in_output: bool = False
    n: int = 1
    temperature: Optional[float] = None
    top_p: Optional[float] = None
    top_k: Optional[int] = None
    seed: Optional[int] = None
    return_context_logits: bool = False
    detokenize: bool = True

    def __post_init__(self):
        if self.top_k is not None and self.top_k < 0:
            raise ValueError(f"top_k must be a non-negative integer, got {self.top_k}")


@dataclass
class CompletionOutput:
    """Mirrors tensorrt_llm/executor/result.py `CompletionOutput`."""

    index: int
    text: str = ""
    token_ids: List[int] = field(default_factory=list)
    finish_reason: Optional[str] = None
    stop_reason: Optional[Union[int, str]] = None


@dataclass
class RequestOutput:
    """Mirrors tensorrt_llm/executor/result.py `RequestOutput`."""

    request_id: int
    prompt: Optional[str]
    prompt_token_ids: List[int]
    outputs: List[CompletionOutput]
    context_logits: Optional[torch.Tensor] = None
    finished: bool = True


class LLM:
    """Mirrors tensorrt_llm/llmapi/llm.py `LLM` (constructor, generate, shutdown)."""

    def __init__(self, model, tokenizer=None, tokenizer_mode="auto", skip_tokenizer_init=False,
                 trust_remote_code=False, tensor_parallel_size=1, dtype="auto", revision=None,
                 tokenizer_revision=None, **kwargs: Any):
        from transformers import AutoModelForCausalLM

        unknown = set(kwargs) - _LLM_KWARGS
        if unknown:
            raise ValueError(f"Unknown LLM arguments: {sorted(unknown)}")
        self.skip_tokenizer_init = skip_tokenizer_init
        self.kv_cache_config = kwargs.get("kv_cache_config") or KvCacheConfig()
        self.model = AutoModelForCausalLM.from_pretrained(str(model), local_files_only=True).eval()
        self._next_id = 0

    def generate(self, inputs, sampling_params=None, use_tqdm=True, lora_request=None, prompt_adapter_request=None,
                 kv_cache_retention_config=None, disaggregated_params=None, scheduling_params=None, cache_salt=None):
        """Mirrors `LLM.generate`: one prompt (list[int]) or a batch (list[list[int]])."""
        single = isinstance(inputs, list) and (not inputs or not isinstance(inputs[0], list))
        batch = [inputs] if single else inputs
        params = sampling_params if isinstance(sampling_params, list) else [sampling_params or SamplingParams()] * len(batch)
        if len(params) != len(batch):
            raise ValueError("The number of sampling_params must match the number of prompts")
        outputs = [self._one(prompt, p) for prompt, p in zip(batch, params)]
        return outputs[0] if single else outputs

    @torch.no_grad()
    def _one(self, prompt: List[int], p: SamplingParams) -> RequestOutput:
        if not all(isinstance(t, int) for t in prompt):
            raise TypeError("prompt token ids must be Python ints")
        if self.skip_tokenizer_init and p.end_id is None:
            raise ValueError("tokenizer is required to reset end_id if it is None, or you can explicitly specify the end_id")
        greedy = p.temperature is None and p.top_p is None and p.top_k is None
        if (p.top_k or 0) > 0 or (p.top_p is not None and p.top_p < 1.0):
            raise NotImplementedError("the fake samples from the full softmax only (top_k off, top_p 1)")
        generator = torch.Generator().manual_seed(p.seed if p.seed is not None else 0)
        stops = set(p.stop_token_ids or []) | {p.end_id}
        context_logits = self.model(torch.tensor([prompt])).logits[0] if p.return_context_logits else None
        if context_logits is not None and self.kv_cache_config.enable_block_reuse:
            context_logits = context_logits[:-1]  # the truncation bug with block reuse on
        tokens, reason, stop = [], "length", None
        for _ in range(p.max_tokens):
            logits = self.model(torch.tensor([prompt + tokens])).logits[0, -1].float()
            if greedy:
                token = int(logits.argmax())
            else:
                probs = torch.softmax(logits / (p.temperature or 1.0), -1)
                token = int(torch.multinomial(probs, 1, generator=generator))
            if token in stops:
                reason, stop = "stop", token
                if p.include_stop_str_in_output:
                    tokens.append(token)
                break
            tokens.append(token)
        self._next_id += 1
        return RequestOutput(self._next_id, None, list(prompt),
                             [CompletionOutput(0, token_ids=tokens, finish_reason=reason, stop_reason=stop)],
                             context_logits=context_logits)

    def shutdown(self) -> None:
        """Mirrors `LLM.shutdown`."""
        self.model = None
