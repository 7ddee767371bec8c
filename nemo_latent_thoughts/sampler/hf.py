"""`HFBackend`: the transformers reference backend (CPU and small GPUs).

Sampling is batched with a KV cache and left padding; each request draws from the full softmax
at temperature 1 (no top-k, no top-p) with its own `torch.Generator`, so results do not depend on
which other requests share the batch's random stream. Finished requests leave the batch. Scoring
is one teacher-forced pass with right padding; only the span positions go through the output
layer, so long sequences with large vocabularies fit in memory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch

from nemo_latent_thoughts.errors import NLTError
from nemo_latent_thoughts.sampler.backend import Sample, request_seed


def _batches(items: list, size: int):
    for start in range(0, len(items), size):
        yield items[start:start + size]


class HFBackend:
    """A Hugging Face causal LM (e.g. the M-step's `hf/` export) as an E-step backend."""

    capabilities = frozenset({"batched"})

    def __init__(self, model_dir: str | Path, device: str = "cpu", dtype: torch.dtype = torch.float32,
                 batch_size: int = 32, score_batch_size: int = 16):
        from transformers import AutoModelForCausalLM

        if not Path(model_dir, "config.json").is_file():
            raise NLTError(f"estep.model '{model_dir}' is not a Hugging Face model directory (no config.json); "
                           "point it at an M-step's hf/ export")
        self.model = AutoModelForCausalLM.from_pretrained(str(model_dir), local_files_only=True,
                                                          torch_dtype=dtype).to(device).eval()
        self.device = torch.device(device)
        self.vocab_size = self.model.config.vocab_size
        self.batch_size, self.score_batch_size = batch_size, score_batch_size

    @torch.no_grad()
    def sample(self, prompts: Sequence[Sequence[int]], num_samples: int, max_new_tokens: int,
               stop_token_id: int, seeds: Sequence[int]) -> list[list[Sample]]:
        requests = [(i, k) for i in range(len(prompts)) for k in range(num_samples)]
        requests.sort(key=lambda r: (-len(prompts[r[0]]), r))  # similar lengths share a batch
        results: dict[tuple[int, int], Sample] = {}
        for batch in _batches(requests, self.batch_size):
            samples = self._sample_batch([prompts[i] for i, _ in batch],
                                         [request_seed(seeds[i], k) for i, k in batch], max_new_tokens, stop_token_id)
            results.update(zip(batch, samples))
        return [[results[(i, k)] for k in range(num_samples)] for i in range(len(prompts))]

    def _sample_batch(self, prompts, seeds, max_new_tokens: int, stop: int) -> list[Sample]:
        from transformers import DynamicCache

        size, width = len(prompts), max(map(len, prompts))
        ids = torch.zeros(size, width, dtype=torch.long)
        mask = torch.zeros(size, width, dtype=torch.long)
        for row, prompt in enumerate(prompts):
            ids[row, width - len(prompt):] = torch.as_tensor(prompt)
            mask[row, width - len(prompt):] = 1
        generators = [torch.Generator().manual_seed(seed) for seed in seeds]
        tokens: list[list[int]] = [[] for _ in prompts]
        stopped = [False] * size
        active = list(range(size))  # rows of the running batch -> request index
        cache = DynamicCache()
        step_ids, positions = ids, (mask.cumsum(-1) - 1).clamp(min=0)
        for _ in range(max_new_tokens):
            logits = self.model(input_ids=step_ids.to(self.device), attention_mask=mask.to(self.device),
                                position_ids=positions.to(self.device), past_key_values=cache, use_cache=True,
                                logits_to_keep=1).logits[:, -1]
            probs = torch.softmax(logits.float(), dim=-1).cpu()
            keep, next_ids = [], []
            for row, request in enumerate(active):
                token = int(torch.multinomial(probs[row], 1, generator=generators[request]))
                if token == stop:
                    stopped[request] = True
                    continue
                tokens[request].append(token)
                if len(tokens[request]) < max_new_tokens:
                    keep.append(row)
                    next_ids.append(token)
            if not keep:
                break
            if len(keep) < len(active):
                cache.batch_select_indices(torch.as_tensor(keep, device=self.device))
                mask = mask[keep]
                active = [active[row] for row in keep]
            mask = torch.cat([mask, torch.ones(len(active), 1, dtype=torch.long)], dim=1)
            positions = mask.sum(-1, keepdim=True) - 1
            step_ids = torch.as_tensor(next_ids)[:, None]
        return [Sample(t, s) for t, s in zip(tokens, stopped)]

    @torch.no_grad()
    def score(self, sequences: Sequence[Sequence[int]], spans: Sequence[tuple[int, int]]) -> list[float]:
        for seq, (start, end) in zip(sequences, spans):
            if not 1 <= start <= end <= len(seq):
                raise ValueError(f"span ({start}, {end}) does not fit a sequence of {len(seq)} tokens")
        order = sorted(range(len(sequences)), key=lambda i: -len(sequences[i]))
        scores = [0.0] * len(sequences)
        for batch in _batches(order, self.score_batch_size):
            width = max(len(sequences[i]) for i in batch)
            ids = torch.zeros(len(batch), width, dtype=torch.long)
            mask = torch.zeros(len(batch), width, dtype=torch.long)
            for row, i in enumerate(batch):
                ids[row, :len(sequences[i])] = torch.as_tensor(sequences[i])
                mask[row, :len(sequences[i])] = 1
            hidden = self.model.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device)).last_hidden_state
            for row, i in enumerate(batch):
                start, end = spans[i]
                logits = self.model.lm_head(hidden[row, start - 1:end - 1]).float()
                targets = torch.as_tensor(sequences[i][start:end], device=logits.device)
                scores[i] = torch.log_softmax(logits, -1).gather(-1, targets[:, None]).sum().item()
        return scores

    def close(self) -> None:
        del self.model
