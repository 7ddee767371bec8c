"""The CPU demo: every pipeline stage that exists, on the synthetic corpus, in `run_dir`.

synthetic corpus -> tokenizer -> `prepare` (chunks) -> program-teacher latents (warm start) ->
`write` (Megatron bin/idx, raw baseline and latent-augmented) -> `train` (round 0's M-step on the
tiny model, exported to Hugging Face format) -> `estep` (round 1: K latents per chunk from that
model, importance-resampled) -> `write` + `train` (round 1's M-step, from the base model again).
"""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path

from nemo_latent_thoughts import config as config_lib
from nemo_latent_thoughts import fileio, testing
from nemo_latent_thoughts.config import Config, DataSource
from nemo_latent_thoughts.data.prepare import prepare
from nemo_latent_thoughts.data.writer import write_dataset
from nemo_latent_thoughts.estep import run_estep
from nemo_latent_thoughts.teacher.run import LATENTS, run_teacher
from nemo_latent_thoughts.train.trainer import train

log = logging.getLogger(__name__)


def run(cfg: Config) -> Path:
    """Run the demo; each finished stage is skipped on a rerun. Returns the run directory."""
    run_dir = Path(cfg.run_dir)
    config_lib.save_config(cfg, run_dir)
    corpus = Path(cfg.data.corpus[0])
    if not corpus.exists():
        count = fileio.write_jsonl(corpus, testing.generate_corpus(cfg.synthetic))
        log.info("wrote %d synthetic documents to %s", count, corpus)
    tokenizer_dir = Path(cfg.tokenizer.path)
    if not tokenizer_dir.exists():
        texts = (json.loads(line)["text"] for line in corpus.open(encoding="utf-8"))
        testing.train_tokenizer(texts, tokenizer_dir, cfg.tokenizer.vocab_size)
        log.info("trained a %d-token BPE tokenizer in %s", cfg.tokenizer.vocab_size, tokenizer_dir)

    prepare(cfg)
    latents = run_teacher(cfg) / LATENTS
    write_dataset(replace(cfg, write=replace(cfg.write, latents=[], out_dir=str(run_dir / "raw" / "data"))))
    data_dir = write_dataset(replace(cfg, write=replace(cfg.write, latents=[str(latents)], model="program_teacher",
                                                        out_dir=str(run_dir / "round_00" / "data"))))

    mstep = _mstep(cfg, data_dir, run_dir / "round_00" / "mstep")
    estep = run_estep(replace(cfg, estep=replace(cfg.estep, model=str(mstep / "hf"), round=1,
                                                 out_dir=str(run_dir / "round_01" / "estep"))))
    round_1 = write_dataset(replace(cfg, write=replace(cfg.write, latents=[str(estep / "shard_*.jsonl")], round=1,
                                                       model=str(mstep / "hf"), out_dir=str(run_dir / "round_01" / "data"))))
    _mstep(cfg, round_1, run_dir / "round_01" / "mstep")
    print(f"demo results are in {run_dir.resolve()}")
    return run_dir


def _mstep(cfg: Config, data_dir: Path, out_dir: Path) -> Path:
    """Train one round's M-step on `data_dir` (from the base model) and log its result."""
    has_valid = json.loads((data_dir / "manifest.json").read_text())["splits"]["valid"]["documents"] > 0
    out = train(replace(cfg, training=replace(
        cfg.training, out_dir=str(out_dir), train_data=[DataSource(path=str(data_dir / "train"))],
        valid_data=[DataSource(path=str(data_dir / "valid"))] if has_valid else [])))
    done = json.loads((out / "done.json").read_text())
    log.info("M-step %s: %d steps, validation loss %s, model in %s", out_dir.parent.name, done["steps"],
             done["valid_loss"], out / "hf")
    return out
