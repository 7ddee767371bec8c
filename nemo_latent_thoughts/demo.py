"""The CPU demo: every pipeline stage that exists, on the synthetic corpus, in `run_dir`."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from nemo_latent_thoughts import config as config_lib
from nemo_latent_thoughts import fileio, testing
from nemo_latent_thoughts.config import Config
from nemo_latent_thoughts.tokens import encode_raw, load_tokenizer

log = logging.getLogger(__name__)


def run(cfg: Config) -> Path:
    """Run the demo; each finished stage is skipped on a rerun. Returns the run directory."""
    run_dir = Path(cfg.run_dir)
    config_lib.save_config(cfg, run_dir)
    corpus = run_dir / "corpus.jsonl"
    if not corpus.exists():
        count = fileio.write_jsonl(corpus, testing.generate_corpus(cfg.synthetic))
        log.info("wrote %d synthetic documents to %s", count, corpus)
    docs = [json.loads(line) for line in corpus.open(encoding="utf-8")]
    tokenizer_dir = Path(cfg.tokenizer.path) if cfg.tokenizer.path else run_dir / "tokenizer"
    if not cfg.tokenizer.path and not tokenizer_dir.exists():
        testing.train_tokenizer((d["text"] for d in docs), tokenizer_dir, cfg.tokenizer.vocab_size)
        log.info("trained a %d-token BPE tokenizer in %s", cfg.tokenizer.vocab_size, tokenizer_dir)
    tokenizer = load_tokenizer(tokenizer_dir)
    num_tokens = sum(map(len, encode_raw(tokenizer, [d["text"] for d in docs])))
    log.info("corpus: %d documents, %d tokens (vocabulary %d)", len(docs), num_tokens, len(tokenizer))
    print(f"demo results are in {run_dir.resolve()}")
    return run_dir
