"""`nlt em run`: every stage of `plan.plan(cfg)` in order, skipping the finished ones.

Each stage writes atomically and marks itself done last, so the run can be killed at any point and
`nlt em run` continues where it stopped. Round 0 trains on the teacher's warm-start latents; round
r >= 1 samples latents for the whole corpus with round r-1's model, then trains from the base model
again on them. Baselines train on the raw data by the same recipe. The driver holds `run_dir/.lock`
(one driver per run; `nlt em status` reads it); `run_dir/timings.json` sums each stage's wall time.
With a cluster (`nlt em run --cluster`), `em.queue` runs each stage as a Slurm job instead.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import replace
from pathlib import Path
from typing import Optional

from nemo_latent_thoughts import config as config_lib
from nemo_latent_thoughts import fileio, locks, testing
from nemo_latent_thoughts.config import Config, DataSource
from nemo_latent_thoughts.em.base import base_model, pretrain_base, run_tokenizer, write_synthetic_base_corpus
from nemo_latent_thoughts.em.plan import (DONE, MANIFEST, Stage, baseline_raw_data, plan, round_chunks, round_dir,
                                          round_epochs, round_latents, run_config)
from nemo_latent_thoughts.errors import NLTError
from nemo_latent_thoughts.launch.cluster import ClusterConfig
from nemo_latent_thoughts.teacher.run import check_teacher

log = logging.getLogger(__name__)

TIMINGS = "timings.json"
HELD_OUT_SEED = 1_000_003  # synthetic eval data uses synthetic.seed + this (+1, +2): never the corpus's seed
WARMSTART_SEED = 3_000_017  # a generated warm-start corpus uses synthetic.seed + this


def setup(cfg: Config) -> None:
    """On the synthetic corpus: generate the corpus, train its tokenizer, write held-out eval data."""
    run = Path(cfg.run_dir)
    s = cfg.synthetic
    if s.enabled:
        corpus = Path(cfg.data.corpus[0])
        if not corpus.exists():
            fileio.write_jsonl(corpus, testing.generate_corpus(s))
        texts = [json.loads(line)["text"] for line in corpus.open(encoding="utf-8")]
        seen = set().union(*map(testing.problem_keys, texts))
        if cfg.warmstart.corpus:  # round 0's own corpus: no problem of the bootstrap corpus
            warm_corpus = cfg.warmstart.corpus[0]
            if not Path(warm_corpus).exists():
                warm = replace(s, num_docs=cfg.warmstart.synthetic_docs, seed=s.seed + WARMSTART_SEED)
                fileio.write_jsonl(warm_corpus, testing.generate_corpus(warm, exclude=seen))
            warm_texts = [json.loads(line)["text"] for line in open(warm_corpus, encoding="utf-8")]
            texts += warm_texts
            seen |= set().union(*map(testing.problem_keys, warm_texts))
        eval_dir = run / "eval_data"
        seed = s.seed + HELD_OUT_SEED
        test = testing.synthetic_eval_items(cfg.em.synthetic_eval_examples, seed, s, exclude=seen)
        seen |= {testing.question_key(item["question"]) for item in test}  # no exemplar is a test question
        fileio.write_jsonl(eval_dir / "test.jsonl", test)
        fileio.write_jsonl(eval_dir / "shots.jsonl", testing.synthetic_eval_items(32, seed + 1, s, exclude=seen))
        fileio.write_jsonl(eval_dir / "heldout.jsonl", testing.generate_corpus(replace(s, num_docs=20, seed=seed + 2)))
        if cfg.base.pretrain:  # no bootstrap, test or exemplar problem in the base corpus
            texts += write_synthetic_base_corpus(cfg, exclude=seen)
        if not Path(cfg.tokenizer.path).exists():
            testing.train_tokenizer(texts, cfg.tokenizer.path, cfg.tokenizer.vocab_size)
    fileio.write_json(run / "setup.json", {"synthetic": s.enabled, "tokenizer": cfg.tokenizer.path})


def round_training(cfg: Config, stage: Stage) -> Config:
    """The complete config of one M-step: this round's (or the raw) data, budget and output."""
    data = baseline_raw_data(cfg) if stage.round is None else round_dir(cfg, stage.round) / "data"
    t = cfg.training
    max_tokens, max_steps, epochs = t.max_tokens, t.max_steps, t.epochs  # rounds and the flops baseline: the same budget
    if stage.round == 0 and cfg.warmstart.epochs is not None:  # round 0's own passes
        max_steps, epochs = None, cfg.warmstart.epochs
    final = round_dir(cfg, cfg.em.num_rounds)
    if stage.round is None and round_epochs(cfg, cfg.em.num_rounds) is not None:
        # passes over raw data are not the final round's budget: its steps are
        max_steps, epochs = json.loads((final / "mstep" / DONE).read_text())["steps"], None
    if stage.round is None and stage.out.name == "raw_tokens":  # as many raw tokens as the final round saw
        split = json.loads((final / "data" / MANIFEST).read_text())["splits"]["train"]
        share = split["raw_tokens"] / (split["raw_tokens"] + split["latent_tokens"])
        max_tokens = max(round(max_tokens * share), t.global_batch_size * t.seq_length)
        max_steps = None if max_steps is None else max(1, round(max_steps * share))
    has_valid = json.loads((data / MANIFEST).read_text())["splits"]["valid"]["documents"] > 0
    training = replace(t, train_data=[DataSource(path=str(data / "train"))],
                       valid_data=[DataSource(path=str(data / "valid"))] if has_valid else [],
                       out_dir=str(stage.out / "mstep"), max_tokens=max_tokens, max_steps=max_steps, epochs=epochs,
                       init_from=base_model(cfg))
    return replace(cfg, training=training)


def run_stage(cfg: Config, stage: Stage, shard: Optional[int] = None, num_shards: int = 1,
              serve: Optional[str] = None) -> None:
    """Run one stage; the E-step's `shard`, `num_shards` and `serve` as `nlt estep` takes them."""
    from nemo_latent_thoughts.data.prepare import prepare
    from nemo_latent_thoughts.data.writer import write_dataset

    r = stage.round
    if stage.kind == "setup":
        setup(cfg)
    elif stage.kind == "prepare":  # the bootstrap corpus, or round 0's own
        corpus = cfg.warmstart.corpus if r == 0 else cfg.data.corpus
        prepare(replace(cfg, data=replace(cfg.data, corpus=corpus, chunks_dir=str(stage.out))))
    elif stage.kind == "raw_data":
        write_dataset(replace(cfg, data=replace(cfg.data, chunks_dir=round_chunks(cfg, r)),
                              write=replace(cfg.write, latents=[], out_dir=str(stage.out), model="")))
    elif stage.kind == "base":
        pretrain_base(cfg, stage.out)
    elif stage.kind == "teacher":
        from nemo_latent_thoughts.teacher.run import run_teacher

        run_teacher(replace(cfg, data=replace(cfg.data, chunks_dir=round_chunks(cfg, 0)),
                            teacher=replace(cfg.teacher, out_dir=str(stage.out))))
    elif stage.kind == "estep":
        from nemo_latent_thoughts.estep import run_estep

        run_estep(replace(cfg, estep=replace(cfg.estep, model=str(round_dir(cfg, r - 1) / "mstep" / "hf"), round=r,
                                             out_dir=str(stage.out))), shard, num_shards, serve)
    elif stage.kind == "data":
        model = f"teacher:{cfg.teacher.kind}" if r == 0 else str(round_dir(cfg, r - 1) / "mstep" / "hf")
        write_dataset(replace(cfg, data=replace(cfg.data, chunks_dir=round_chunks(cfg, r)),
                              write=replace(cfg.write, latents=round_latents(cfg, r), out_dir=str(stage.out), round=r,
                                            model=model)))
    elif stage.kind == "recipe":
        fileio.write_text(stage.marker, config_lib.to_yaml(round_training(cfg, stage)))
    elif stage.kind == "mstep":
        recipe = stage.out.parent / "recipe.yaml"
        if not cfg.em.run_mstep:
            raise _WaitForCluster(recipe)
        from nemo_latent_thoughts.train.trainer import train

        train(config_lib.load_config(recipe))
    elif stage.kind == "eval":
        from nemo_latent_thoughts.eval.run import run_eval

        model = base_model(cfg) if stage.name == "base eval" else str(stage.out.parent / "mstep" / "hf")
        run_eval(replace(cfg, eval=replace(cfg.eval, model=model, out_dir=str(stage.out))))
    elif stage.kind == "report":
        from nemo_latent_thoughts.em.report import write_report

        write_report(Path(cfg.run_dir))


class _WaitForCluster(Exception):
    def __init__(self, recipe: Path):
        super().__init__(str(recipe))
        self.recipe = recipe


def run_em(cfg: Config, until: Optional[str] = None, allow_config_change: bool = False,
           cluster: Optional[ClusterConfig] = None, detach: bool = False) -> Path:
    """Run (or continue) the EM run of `cfg`, up to and including stage `until`; returns its directory.

    A run directory made under another config is refused (its keys named) unless
    `allow_config_change`: finished stages keep the results of the config they were made with.
    `cluster`: every stage as a Slurm job (`em.queue`); `detach`: return once they are submitted.
    """
    if cluster is not None and until is not None:
        raise NLTError("--until runs stages here; with --cluster the queue holds them all (nlt em cancel stops it)")
    check_teacher(cfg)  # before any stage, not hours later at round 0's teacher
    run = Path(cfg.run_dir)
    with locks.exclusive(run, what="nlt em run"):
        saved = run / config_lib.RESOLVED_CONFIG_NAME
        changed = config_lib.changed_keys(saved, cfg) if saved.exists() else []
        if changed and not allow_config_change:
            raise NLTError(f"{saved}: this run was made under another config ({', '.join(changed)} differ); "
                           "use a new run_dir, or pass --allow-config-change to continue it under this one")
        if changed:
            log.warning("em: continuing %s under a changed config (%s); finished stages keep their results",
                        run, ", ".join(changed))
        config_lib.save_config(cfg, run)
        if cluster is not None:  # no temporaries removed: the cluster's jobs may be writing them
            from nemo_latent_thoughts.em.queue import run_on_cluster

            return run_on_cluster(run_tokenizer(cfg), cluster, detach)
        locks.remove_stale_temps(run)
        _run_stages(run_tokenizer(cfg), run, until)
    return run


def _run_stages(cfg: Config, run: Path, until: Optional[str]) -> None:
    timings_path = run / TIMINGS
    timings = json.loads(timings_path.read_text()) if timings_path.exists() else {}
    stages = plan(cfg)
    if until is not None and until not in [s.name for s in stages]:
        raise NLTError(f"--until '{until}': no such stage; `nlt em status RUN_DIR` lists them")
    for number, stage in enumerate(stages, 1):
        if stage.done:
            continue
        log.info("em: [%d/%d] %s", number, len(stages), stage.name)
        began = time.perf_counter()
        try:
            run_stage(cfg, stage)
        except _WaitForCluster as wait:
            print(f"em: {stage.name}: em.run_mstep is false; train {wait.recipe} on the cluster "
                  f"(nlt launch mstep {wait.recipe} --cluster CLUSTER.yaml, or nlt mstep-nemo / nlt train), "
                  "then rerun `nlt em run` to continue")
            return
        timings[stage.name] = timings.get(stage.name, 0.0) + time.perf_counter() - began
        fileio.write_json(timings_path, timings)
        if not stage.done:
            raise NLTError(f"em: stage '{stage.name}' ended without writing {stage.marker}")
        if stage.name == until:
            return
    print(f"EM run complete: report in {run / 'report.md'}")


def status(run_dir: str | Path) -> list[tuple[str, str]]:
    """(stage, done | running | partial | pending) for the run in `run_dir`."""
    run = Path(run_dir)
    cfg = run_config(run)
    alive = locks.holder(run) is not None
    rows, current = [], True
    for stage in plan(cfg):
        if stage.done:
            rows.append((stage.name, "done"))
            continue
        if current:
            state = "running" if alive else ("partial" if stage.out.exists() and stage.kind not in ("setup", "report", "recipe") else "pending")
            current = False
        else:
            state = "pending"
        rows.append((stage.name, state))
    return rows
