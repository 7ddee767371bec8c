"""Prepare + write throughput against a Megatron-style preprocessing baseline, and dataset fetch rate.

Both pipelines turn the same JSONL corpus into a megatron-core indexed dataset with the same
tokenizer and the same number of worker processes, in one run:

- ours: `nlt prepare` (untrained-Punkt sentences -> chunks) + `nlt write` (raw-only data);
- baseline: the way Megatron-LM's `tools/preprocess_data.py` drives megatron-core's
  `IndexedDatasetBuilder` (a process pool mapping JSON lines 32 at a time; with
  `--split-sentences`, a first pass that splits every document into sentences and a second that
  tokenizes sentence by sentence), with the same untrained Punkt splitter (the trained English
  model it would download cannot be fetched here). Measured with and without sentence splitting.

Then random-access fetch rate of `LatentThoughtsDataset` vs megatron-core's `GPTDataset` on the
same raw data. Prints tokens/s, samples/s and the ratios (targets: >= 1.0 and >= 0.8).

    python benchmarks/bench_prepare.py [--docs 20000] [--workers 2]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from nemo_latent_thoughts import fileio, testing
from nemo_latent_thoughts.config import SyntheticConfig, load_config
from nemo_latent_thoughts.data.chunking import sentence_ends
from nemo_latent_thoughts.data.prepare import prepare
from nemo_latent_thoughts.data.writer import write_dataset
from nemo_latent_thoughts.tokens import latent_token_ids, load_tokenizer

_worker = {}


def _init(tokenizer_dir: str) -> None:
    _worker["tokenizer"] = load_tokenizer(tokenizer_dir)


def _split(line: str) -> str:
    text = json.loads(line)["text"]
    ends = list(sentence_ends(text))
    return json.dumps({"text": [text[a:b] for a, b in zip([0] + ends[:-1], ends)]})


def _encode(line: str):
    text = json.loads(line)["text"]
    sentences = text if isinstance(text, list) else [text]
    tokenizer = _worker["tokenizer"]
    ids, lengths = [], []
    for sentence in sentences:
        tokens = tokenizer(sentence, add_special_tokens=False)["input_ids"]
        if tokens:
            ids.extend(tokens)
            lengths.append(len(tokens))
    ids.append(tokenizer.eos_token_id)
    lengths[-1] += 1
    return ids, lengths


def baseline(corpus: Path, out: Path, tokenizer_dir: Path, workers: int, split_sentences: bool) -> int:
    """Megatron-style preprocessing; returns the number of tokens written."""
    from megatron.core.datasets.indexed_dataset import DType, IndexedDatasetBuilder

    ctx = multiprocessing.get_context("spawn")
    source = corpus
    if split_sentences:
        source = out.with_suffix(".ss.jsonl")
        with ctx.Pool(workers) as pool, open(corpus, encoding="utf-8") as fin, open(source, "w") as fout:
            for doc in pool.imap(_split, fin, 32):
                fout.write(doc + "\n")
    tokens = 0
    vocab = len(load_tokenizer(tokenizer_dir))
    builder = IndexedDatasetBuilder(f"{out}.bin", dtype=DType.optimal_dtype(vocab))
    with ctx.Pool(workers, initializer=_init, initargs=(str(tokenizer_dir),)) as pool, open(source, encoding="utf-8") as fin:
        for ids, lengths in pool.imap(_encode, fin, 32):
            builder.add_document(ids, lengths)
            tokens += len(ids)
    builder.finalize(f"{out}.idx")
    return tokens


def ours(cfg) -> int:
    """`nlt prepare` + `nlt write` (raw-only, one split); returns the number of tokens written."""
    prepare(cfg)
    data = write_dataset(replace(cfg, write=replace(cfg.write, valid_fraction=0.0)))
    return json.loads((data / "manifest.json").read_text())["splits"]["train"]["raw_tokens"]


def timed(fn, *args):
    start = time.perf_counter()
    result = fn(*args)
    return result, time.perf_counter() - start


def fetch_rates(prefix: str, tokenizer, seq: int, samples: int) -> tuple[float, float]:
    from megatron.core.datasets.blended_megatron_dataset_builder import BlendedMegatronDatasetBuilder
    from megatron.core.datasets.gpt_dataset import GPTDataset, GPTDatasetConfig
    from megatron.core.tokenizers.text.libraries.null_tokenizer import NullTokenizer

    from nemo_latent_thoughts.data.dataset import build_datasets

    gpt_cfg = GPTDatasetConfig(random_seed=1, sequence_length=seq, blend=([prefix], None), split="1,0,0",
                               tokenizer=NullTokenizer(len(tokenizer) - 1), reset_position_ids=False,
                               reset_attention_mask=False, eod_mask_loss=False, create_attention_mask=False)
    gpt, _, _ = BlendedMegatronDatasetBuilder(GPTDataset, [samples, None, None], lambda: True, gpt_cfg).build()
    ours_ds, _ = build_datasets([(prefix, 1.0)], None, sequence_length=seq, seed=1,
                                token_ids=latent_token_ids(tokenizer), train_samples=samples)
    order = np.random.default_rng(0).permutation(samples)
    rates = []
    for ds in (gpt, ours_ds):
        ds[0]
        start = time.perf_counter()
        for i in order:
            ds[int(i)]
        rates.append(samples / (time.perf_counter() - start))
    return rates[0], rates[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--docs", type=int, default=20000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seq", type=int, default=2048)
    parser.add_argument("--samples", type=int, default=2000)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        docs = testing.generate_corpus(SyntheticConfig(num_docs=args.docs, seed=0))
        corpus = tmp / "corpus.jsonl"
        fileio.write_jsonl(corpus, docs)
        tokenizer = testing.train_tokenizer((d["text"] for d in docs[:500]), tmp / "tok", vocab_size=512)
        megabytes = corpus.stat().st_size / 1e6
        print(f"corpus: {args.docs} documents, {megabytes:.1f} MB; workers: {args.workers}")

        results = {}
        for name, fn, fn_args in [
            ("baseline", baseline, (corpus, tmp / "base", tmp / "tok", args.workers, False)),
            ("baseline --split-sentences", baseline, (corpus, tmp / "base_ss", tmp / "tok", args.workers, True)),
            ("ours: prepare + write", ours, (load_config(None, [f"run_dir={tmp / 'run'}", f"data.corpus=[{corpus}]",
                                                                f"tokenizer.path={tmp / 'tok'}",
                                                                f"data.workers={args.workers}"]),)),
        ]:
            tokens, seconds = timed(fn, *fn_args)
            results[name] = tokens / seconds
            print(f"{name:28s} {tokens:9d} tokens in {seconds:6.2f} s = {tokens / seconds:10.0f} tokens/s")
        ours_rate = results["ours: prepare + write"]
        print(f"ratio ours / baseline:                  {ours_rate / results['baseline']:.2f}")
        print(f"ratio ours / baseline --split-sentences: {ours_rate / results['baseline --split-sentences']:.2f}"
              "  (target >= 1.0)")

        gpt_rate, latent_rate = fetch_rates(str(tmp / "run" / "data" / "train"), tokenizer, args.seq, args.samples)
        print(f"fetch: GPTDataset {gpt_rate:8.0f} samples/s, LatentThoughtsDataset {latent_rate:8.0f} samples/s "
              f"(seq {args.seq}), ratio {latent_rate / gpt_rate:.2f} (target >= 0.8)")


if __name__ == "__main__":
    main()
