"""The base model of an EM run: BoLT restarts the warm start, every round and every baseline from
one pretrained model (TinyLlama). With `base.pretrain`, the run pretrains its own on a base corpus
that holds no problem of the bootstrap corpus or the eval set, once, and caches it under a hash of
everything the weights depend on (tokenizer, data, model, training settings, seed), so runs and
seeds with equal inputs share it. A user's own base (training.init_from) keeps its tokenizer; one
without the latent-thought tokens is extended once into the run.

    run_dir/tokenizer/, extended.json       a user's tokenizer with the four tokens, and where it came from
    run_dir/base/corpus/, base/data/        the base corpus, prepared and written as raw data
    run_dir/base/base.json                  which cached model this run starts from
    base.cache_dir/<hash>/hf/               the base model (a `nlt train` output directory)
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from dataclasses import replace
from pathlib import Path
from typing import Optional

from nemo_latent_thoughts import fileio, locks, testing
from nemo_latent_thoughts.config import Config, DataSource
from nemo_latent_thoughts.em.plan import DONE, MANIFEST
from nemo_latent_thoughts.errors import NLTError

log = logging.getLogger(__name__)

BASE_SEED = 2_000_003  # the generated base corpus uses synthetic.seed + this: never the corpus's seed
POINTER = "base.json"
EXTENDED = "extended.json"


def write_synthetic_base_corpus(cfg: Config, exclude: set[tuple]) -> list[str]:
    """Generate `base.corpus`'s first file (unless it exists) from the corpus's process; returns its texts."""
    b = cfg.base
    if not Path(b.corpus[0]).exists():
        s = replace(cfg.synthetic, num_docs=b.synthetic_docs, seed=cfg.synthetic.seed + BASE_SEED)
        docs = (testing.generate_skills_corpus(s, exclude) if b.style == "skills" else
                testing.generate_corpus(s, working_fraction=b.working_fraction, exclude=exclude))
        fileio.write_jsonl(b.corpus[0], docs)
    return [json.loads(line)[cfg.data.text_field] for line in open(b.corpus[0], encoding="utf-8")]


def run_tokenizer(cfg: Config) -> Config:
    """`cfg` with the run's tokenizer: tokenizer.path itself when it has the latent-thought tokens (the
    synthetic corpus's is trained with them), else that tokenizer extended once into run_dir/tokenizer,
    its origin recorded in run_dir/tokenizer/EXTENDED (M-steps grow the embeddings to match)."""
    from nemo_latent_thoughts.tokens import SPECIAL_TOKENS, extend_tokenizer, load_tokenizer

    source, target = Path(cfg.tokenizer.path).absolute(), Path(cfg.run_dir).absolute() / "tokenizer"
    if cfg.synthetic.enabled or source == target:
        return cfg
    run_cfg = replace(cfg, tokenizer=replace(cfg.tokenizer, path=str(target)))
    if (target / EXTENDED).exists():
        made_from = json.loads((target / EXTENDED).read_text())["source"]
        if made_from != str(source):
            raise NLTError(f"{target} was extended from tokenizer '{made_from}', not '{source}'; use a new run_dir "
                           "for another tokenizer")
        return run_cfg
    tokenizer = load_tokenizer(source, extend=False)
    added = [t for t in SPECIAL_TOKENS if t not in tokenizer.get_vocab()]
    if not added:
        return cfg
    extend_tokenizer(tokenizer)
    with fileio.atomic_path(target) as tmp:
        tokenizer.save_pretrained(str(tmp))
        fileio.write_json(tmp / EXTENDED, {"source": str(source), "added": added, "size": len(tokenizer)})
    log.info("em: tokenizer '%s' extended with %s into %s", source, ", ".join(added), target)
    return run_cfg


def base_model(cfg: Config) -> Optional[str]:
    """The model every M-step of the run starts from: the pretrained base, or training.init_from."""
    if not cfg.base.pretrain:
        return cfg.training.init_from
    return json.loads((Path(cfg.run_dir) / "base" / POINTER).read_text())["model"]


def _digest(paths: list[Path], settings: dict) -> str:
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    for path in paths:
        digest.update(f"{path.name}:{fileio.sha256(path)}".encode())
    return digest.hexdigest()[:16]


def pretrain_base(cfg: Config, out: Path) -> None:
    """Prepare and write the base corpus under `out`, train (or find) the cached base, point to it."""
    from nemo_latent_thoughts.data.prepare import prepare
    from nemo_latent_thoughts.data.writer import write_dataset
    from nemo_latent_thoughts.train.trainer import train

    b = cfg.base
    data = out / "data"
    base_cfg = replace(cfg, seed=b.seed,
                       data=replace(cfg.data, corpus=b.corpus, chunks_dir=str(out / "corpus")),
                       write=replace(cfg.write, latents=[], out_dir=str(data), model="", round=0))
    if not (out / "corpus" / MANIFEST).exists():
        prepare(base_cfg)
    if not (data / MANIFEST).exists():
        write_dataset(base_cfg)
    has_valid = json.loads((data / MANIFEST).read_text())["splits"]["valid"]["documents"] > 0
    training = replace(cfg.training, train_data=[DataSource(path=str(data / "train"))],
                       valid_data=[DataSource(path=str(data / "valid"))] if has_valid else [],
                       max_tokens=b.max_tokens, max_steps=None, epochs=None, init_from=None, out_dir="")
    if b.lr is not None:
        training = replace(training, lr=b.lr, min_lr=b.lr / 10)
    settings = {"model": dataclasses.asdict(cfg.model), "seed": b.seed,
                "training": {k: v for k, v in dataclasses.asdict(training).items()
                             if k not in ("train_data", "valid_data", "out_dir")}}
    inputs = sorted(Path(cfg.tokenizer.path).iterdir()) + sorted(data.glob("*.bin")) + sorted(data.glob("*.idx"))
    home = Path(b.cache_dir).resolve() / _digest(inputs, settings)
    with locks.exclusive(home, what="nlt em run (base model)", wait=True):  # runs that need it at once train it once
        if (home / DONE).exists():
            log.info("base: using the cached base model %s", home / "hf")
        else:
            train(replace(base_cfg, training=replace(training, out_dir=str(home))))
    fileio.write_json(out / POINTER, {"model": str(home / "hf"), "steps": json.loads((home / DONE).read_text())["steps"]})
