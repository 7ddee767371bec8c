"""`HFBackend`: the transformers reference backend (CPU and small GPUs).

Sampling is batched with a KV cache and left padding; each distinct prompt is prefilled once and
its cache shared by its K samples; each request draws from the full softmax at the temperature
asked (no top-k, no top-p) with its own `torch.Generator`, so results do not depend on which other
requests share the batch's random stream. Finished requests leave the batch. Scoring is teacher forcing:
sequences sharing the tokens before their span share one prefill of them, and a prefix that extends
another prefills only its own tokens; only span positions go through the output layer, so long
sequences with large vocabularies fit in memory.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Sequence

import torch

from nemo_latent_thoughts.sampler.backend import Sample, check_spans, request_seed


def _batches(items: list, size: int):
    for start in range(0, len(items), size):
        yield items[start:start + size]


class HFBackend:
    """A Hugging Face causal LM (e.g. the M-step's `hf/` export) as an E-step backend."""

    capabilities = frozenset({"batched"})

    def __init__(self, model_dir: str | Path, device: str = "cpu", dtype: torch.dtype = torch.float32,
                 batch_size: int = 32, score_batch_size: int = 16):
        from transformers import AutoModelForCausalLM

        from nemo_latent_thoughts.model.convert import require_hf_dir

        require_hf_dir(model_dir, "estep.model")
        self.model = AutoModelForCausalLM.from_pretrained(str(model_dir), local_files_only=True,
                                                          dtype=dtype).to(device).eval()
        self.device = torch.device(device)
        self.vocab_size = self.model.config.vocab_size
        self.batch_size, self.score_batch_size = batch_size, score_batch_size

    def sample(self, prompts: Sequence[Sequence[int]], num_samples: int, max_new_tokens: int,
               stop_token_id: int, seeds: Sequence[int], temperature: float = 1.0) -> list[list[Sample]]:
        flat = [(prompt, request_seed(seed, k)) for prompt, seed in zip(prompts, seeds) for k in range(num_samples)]
        samples = self.generate([p for p, _ in flat], [s for _, s in flat], max_new_tokens, stop_token_id, temperature)
        return [samples[i * num_samples:(i + 1) * num_samples] for i in range(len(prompts))]

    @torch.no_grad()
    def generate(self, prompts: Sequence[Sequence[int]], seeds: Sequence[int], max_new_tokens: int,
                 stop_token_id: int, temperature: float = 1.0) -> list[Sample]:
        """One continuation of each prompt, drawn with its own request seed (what a server's request gets)."""
        order = sorted(range(len(prompts)), key=lambda r: (-len(prompts[r]), r))  # similar lengths share a batch
        results: dict[int, Sample] = {}
        for batch in _batches(order, self.batch_size):
            samples = self._sample_batch([prompts[r] for r in batch], [seeds[r] for r in batch], max_new_tokens,
                                         stop_token_id, temperature)
            results.update(zip(batch, samples))
        return [results[r] for r in range(len(prompts))]

    def _forward(self, ids, mask, positions, cache, keep_last: bool):
        """One model call on the running batch; returns last-position logits or hidden states."""
        if keep_last:
            return self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device),
                              position_ids=positions.to(self.device), past_key_values=cache, use_cache=True,
                              logits_to_keep=1).logits[:, -1]
        return self.model.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device),
                                position_ids=positions.to(self.device), past_key_values=cache,
                                use_cache=True).last_hidden_state

    def _sample_batch(self, prompts, seeds, max_new_tokens: int, stop: int, temperature: float) -> list[Sample]:
        """Prefill each distinct prompt once, share its KV cache among its samples, then decode."""
        from transformers import DynamicCache

        distinct = list(dict.fromkeys(tuple(p) for p in prompts))
        row_of = {p: row for row, p in enumerate(distinct)}
        width = max(map(len, distinct))
        ids = torch.zeros(len(distinct), width, dtype=torch.long)
        mask = torch.zeros(len(distinct), width, dtype=torch.long)
        for row, prompt in enumerate(distinct):
            ids[row, width - len(prompt):] = torch.as_tensor(prompt)
            mask[row, width - len(prompt):] = 1
        cache = DynamicCache()
        logits = self._forward(ids, mask, (mask.cumsum(-1) - 1).clamp(min=0), cache, keep_last=True)
        rows = [row_of[tuple(p)] for p in prompts]
        cache.batch_select_indices(torch.as_tensor(rows, device=self.device))
        mask, logits = mask[rows], logits[rows]

        generators = [torch.Generator().manual_seed(seed) for seed in seeds]
        tokens: list[list[int]] = [[] for _ in prompts]
        stopped = [False] * len(prompts)
        active = list(range(len(prompts)))  # rows of the running batch -> request index
        for _ in range(max_new_tokens):
            probs = torch.softmax(logits.float() / temperature, dim=-1).cpu()
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
            logits = self._forward(torch.as_tensor(next_ids)[:, None], mask, mask.sum(-1, keepdim=True) - 1, cache,
                                   keep_last=True)
        return [Sample(t, s) for t, s in zip(tokens, stopped)]

    @torch.no_grad()
    def score(self, sequences: Sequence[Sequence[int]], spans: Sequence[tuple[int, int]],
              temperature: float = 1.0) -> list[float]:
        """Teacher-forced span log-probs of softmax(logits / temperature). Sequences that share the
        tokens before their span (the K samples of a chunk) share one prefill of that prefix through
        the KV cache, and a prefix that extends another group's prefix (the E-step's q prompt
        `BOS c SOL EOL x SOL POST` extends its p prefix `BOS c SOL`) is prefilled as that prefix's
        cache plus its own remaining tokens."""
        groups: dict[tuple[int, ...], list[int]] = {}
        check_spans(sequences, spans)
        for i, (seq, (start, _)) in enumerate(zip(sequences, spans)):
            groups.setdefault(tuple(seq[:start]), []).append(i)
        scores = [0.0] * len(sequences)
        chain: list[tuple[tuple[int, ...], object]] = []  # the prefixes of the current one, with their caches
        for prefix in sorted(groups):  # a prefix sorts before every sequence it starts
            while chain and prefix[:len(chain[-1][0])] != chain[-1][0]:
                chain.pop()
            cache, first = self._prefill(prefix, *(chain[-1] if chain else ((), None)))
            chain.append((prefix, cache))
            for batch in _batches(groups[prefix], self.score_batch_size):
                targets = [sequences[i][len(prefix):spans[i][1]] for i in batch]
                scores_of_batch = self._score_targets(copy.deepcopy(cache), len(prefix), first, targets, temperature)
                for i, value in zip(batch, scores_of_batch):
                    scores[i] = value
        return scores

    def _prefill(self, prefix: tuple[int, ...], done: tuple[int, ...], cache):
        """The KV cache of `prefix` (from the cache of its start `done`, if any) and the logits of
        the token after it."""
        from transformers import DynamicCache

        cache = DynamicCache() if cache is None else copy.deepcopy(cache)
        ids = torch.as_tensor(prefix[len(done):])[None]
        logits = self._forward(ids, torch.ones(1, len(prefix), dtype=torch.long),
                               torch.arange(len(done), len(prefix))[None], cache, keep_last=True)
        return cache, logits.float()[0]

    def _score_targets(self, cache, start: int, first: torch.Tensor, targets: list[Sequence[int]],
                       temperature: float) -> list[float]:
        """Sum of log p(target | prefix) for continuations of one prefill (`cache` of `start` tokens,
        `first`: the logits after it); `cache` is consumed."""
        first = torch.log_softmax(first / temperature, -1)
        scores = [first[t[0]].item() for t in targets]
        width = max(len(t) for t in targets) - 1
        if width == 0:
            return scores
        cache.batch_repeat_interleave(len(targets))
        ids = torch.zeros(len(targets), width, dtype=torch.long)
        mask = torch.cat([torch.ones(len(targets), start, dtype=torch.long),
                          torch.zeros(len(targets), width, dtype=torch.long)], dim=1)
        for row, t in enumerate(targets):
            ids[row, :len(t) - 1] = torch.as_tensor(t[:-1])
            mask[row, start:start + len(t) - 1] = 1
        positions = torch.arange(start, start + width)[None].expand(len(targets), -1)
        hidden = self._forward(ids, mask, positions, cache, keep_last=False)
        for row, t in enumerate(targets):
            if len(t) > 1:
                logits = self.model.lm_head(hidden[row, :len(t) - 1]).float()
                target = torch.as_tensor(t[1:], device=logits.device)
                scores[row] += torch.log_softmax(logits / temperature, -1).gather(-1, target[:, None]).sum().item()
        return scores

    def close(self) -> None:
        del self.model
