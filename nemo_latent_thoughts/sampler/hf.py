"""`HFBackend`: the transformers reference backend (CPU and small GPUs).

Sampling is batched with a KV cache and left padding; each distinct prompt is prefilled once and
its cache shared by its K samples; each request draws from the full softmax at the temperature
asked (no top-k, no top-p) with its own `torch.Generator`, so results do not depend on which other
requests share the batch's random stream. Finished requests leave the batch. Scoring is teacher forcing
in batches of `score_batch_size` sequences, in the same way: each distinct prefix (the tokens before
a span) of a batch is prefilled once and shared by the sequences that start with it; only span
positions go through the output layer, so long sequences with large vocabularies fit in memory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch

from nemo_latent_thoughts.sampler.backend import Sample, check_spans, request_seed


LOGITS_PER_PASS = 1 << 24
"""Scoring puts at most this many logits (64 MiB in float32) through the output layer at once."""


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

    def _prefill(self, prompts: Sequence[Sequence[int]]):
        """Prefill each distinct prompt once (left-padded into one batch) and give every prompt its
        row: (KV cache, attention mask, logits of the token after the prompt), one row per prompt."""
        from transformers import DynamicCache

        distinct = list(dict.fromkeys(tuple(p) for p in prompts))
        width = max(map(len, distinct))
        ids = torch.zeros(len(distinct), width, dtype=torch.long)
        mask = torch.zeros(len(distinct), width, dtype=torch.long)
        for row, prompt in enumerate(distinct):
            ids[row, width - len(prompt):] = torch.as_tensor(prompt)
            mask[row, width - len(prompt):] = 1
        cache = DynamicCache()
        logits = self._forward(ids, mask, (mask.cumsum(-1) - 1).clamp(min=0), cache, keep_last=True)
        row_of = {p: row for row, p in enumerate(distinct)}
        rows = [row_of[tuple(p)] for p in prompts]
        cache.batch_select_indices(torch.as_tensor(rows, device=self.device))
        return cache, mask[rows], logits[rows]

    def _sample_batch(self, prompts, seeds, max_new_tokens: int, stop: int, temperature: float) -> list[Sample]:
        """Prefill each distinct prompt once, share its KV cache among its samples, then decode."""
        cache, mask, logits = self._prefill(prompts)
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
        """Teacher-forced span log-probs of softmax(logits / temperature), in batches of
        `score_batch_size` sequences taken in the order of the tokens before their span (shortest
        first): the K samples of a prompt share a batch and one prefill of their prefix, and
        prefixes of similar lengths share the rest of the batch."""
        check_spans(sequences, spans)
        order = sorted(range(len(sequences)), key=lambda i: (spans[i][0], tuple(sequences[i][:spans[i][0]])))
        scores = [0.0] * len(sequences)
        for batch in _batches(order, self.score_batch_size):
            values = self._score_batch([sequences[i][:spans[i][0]] for i in batch],
                                       [sequences[i][spans[i][0]:spans[i][1]] for i in batch], temperature)
            for i, value in zip(batch, values):
                scores[i] = value
        return scores

    def _score_batch(self, prefixes: list[Sequence[int]], targets: list[Sequence[int]],
                     temperature: float) -> list[float]:
        """Sum of log p(target | prefix) for each pair: each distinct prefix prefilled once, then
        one pass over the targets on their prefixes' caches."""
        cache, mask, first = self._prefill(prefixes)
        first = torch.log_softmax(first.float() / temperature, -1)
        scores = [first[row, t[0]].item() if t else 0.0 for row, t in enumerate(targets)]
        if max(map(len, targets)) <= 1:
            return scores
        hidden, added = self._extend(cache, mask, [t[:-1] for t in targets])
        hidden = hidden[added.bool().to(hidden.device)]  # the span positions, row by row
        following = torch.as_tensor([token for t in targets for token in t[1:]], device=hidden.device)
        rows_per_pass = max(1, LOGITS_PER_PASS // self.vocab_size)  # bounds the logits' memory
        logp = torch.cat([torch.log_softmax(self.model.lm_head(h).float() / temperature, -1).gather(-1, y[:, None])[:, 0]
                          for h, y in zip(hidden.split(rows_per_pass), following.split(rows_per_pass))])
        for row, values in enumerate(logp.split([max(len(t) - 1, 0) for t in targets])):
            scores[row] += values.sum().item()
        return scores

    def _extend(self, cache, mask: torch.Tensor, tokens: list[Sequence[int]]):
        """Feed each row of the batch its own tokens (right-padded) after its cache: their hidden
        states [rows, width, hidden] and the mask of the positions that hold a token."""
        width = max(map(len, tokens))
        ids = torch.zeros(len(tokens), width, dtype=torch.long)
        added = torch.zeros(len(tokens), width, dtype=torch.long)
        for row, t in enumerate(tokens):
            if len(t):
                ids[row, :len(t)] = torch.as_tensor(t)
                added[row, :len(t)] = 1
        positions = mask.sum(-1, keepdim=True) + torch.arange(width)[None]  # after each row's own tokens
        hidden = self._forward(ids, torch.cat([mask, added], dim=1), positions, cache, keep_last=False)
        return hidden, added

    def close(self) -> None:
        del self.model
