"""The `nlt` command. Every subcommand takes a recipe YAML and OmegaConf dot-list overrides.

    nlt config recipes/demo_cpu.yaml model.preset=tiny   # print the resolved config
    nlt prepare recipe.yaml data.corpus=[corpus.jsonl]   # corpus -> chunk shards
    nlt teacher recipe.yaml teacher.fraction=0.1         # warm-start latents for 10% of chunks
    nlt write recipe.yaml write.latents=[latents.jsonl]  # chunks + latents -> Megatron bin/idx
    nlt train recipe.yaml training.max_steps=100         # M-step on CPU
    nlt estep recipe.yaml estep.num_samples=4 --shard 0 --num-shards 8   # E-step, one array task
    nlt eval recipe.yaml eval.model=run/round_01/mstep/hf  # few-shot CoT accuracy + held-out ELBO
    nlt em run recipes/demo_cpu.yaml                     # the whole EM run (the CPU demo), resumable
    nlt em status runs/demo                              # what is done, running, pending
    nlt em run recipe.yaml --cluster cluster.yaml --detach   # every stage a Slurm job; rerun to continue
    nlt report runs/demo                                 # rebuild report.md + report.png
    nlt mstep-nemo round_01/recipe.yaml --dryrun         # the round's M-step as a NeMo recipe
    nlt export-nemo round_01/recipe.yaml                 # its NeMo checkpoint -> Hugging Face (E-step)
    nlt mstep-bridge round_01/recipe.yaml --dryrun       # the round's M-step as a Megatron-Bridge config
    nlt export-bridge round_01/recipe.yaml               # its Bridge checkpoint -> Hugging Face (E-step)
    nlt launch estep recipe.yaml --cluster examples/cluster_slurm.yaml --dryrun   # Slurm via NeMo-Run
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import warnings
from pathlib import Path
from typing import Callable

from nemo_latent_thoughts import fileio
from nemo_latent_thoughts.config import SERVER_KINDS
from nemo_latent_thoughts.errors import NLTError

def _cmd_config(args, cfg) -> None:
    from nemo_latent_thoughts import config

    if args.docs:
        for key, typ, default, doc in config.field_docs(config.Config):
            print(f"{key}: {typ} = {default!r}\n    {doc}")
        return
    print(config.to_yaml(cfg), end="")


def _cmd_em_run(args, cfg) -> None:
    from nemo_latent_thoughts.em.driver import run_em

    cluster = _cluster(args) if args.cluster else None
    if args.detach and cluster is None:
        raise NLTError("--detach: only with --cluster (the stages then run as Slurm jobs)")
    run_em(cfg, until=args.until, allow_config_change=args.allow_config_change, cluster=cluster, detach=args.detach)


def _cmd_em_status(args, cfg) -> None:
    from nemo_latent_thoughts.em.driver import status
    from nemo_latent_thoughts.em.queue import JOBS, stage_rows

    rows = status(args.run_dir)
    jobs = stage_rows(args.run_dir) if (args.run_dir / JOBS).exists() else {}
    width = max(len(name) for name, _ in rows)
    for name, state in rows:
        job_state, job = jobs.get(name, (None, ""))
        if job and state != "done":  # a job that ended without the stage's marker failed
            state = job_state if job_state in ("RUNNING", "PENDING", "REQUEUED") else f"failed ({job_state})"
        shown = job if job and (state != "done" or args.jobs) else ""
        print(f"{name:<{width}}  {state:<8}  {shown}".rstrip())
    done = sum(state == "done" for _, state in rows)
    print(f"{done}/{len(rows)} stages done")


def _cmd_em_stage(args, cfg) -> None:
    from nemo_latent_thoughts.em.base import run_tokenizer
    from nemo_latent_thoughts.em.driver import run_stage
    from nemo_latent_thoughts.em.plan import run_config
    from nemo_latent_thoughts.em.queue import find_stage

    cfg = run_tokenizer(run_config(args.run_dir))
    stage = find_stage(cfg, args.stage)
    if stage.done:
        print(f"em: {stage.name}: done; nothing to do")
        return
    run_stage(cfg, stage, args.shard, args.num_shards, args.serve)
    if not stage.done and args.shard is None:
        raise NLTError(f"em: stage '{stage.name}' ended without writing {stage.marker}")


def _cmd_em_cancel(args, cfg) -> None:
    from nemo_latent_thoughts.em.queue import cancel

    cancelled = cancel(args.run_dir)
    print(f"em: cancelled {len(cancelled)} jobs" + (f" ({', '.join(cancelled)})" if cancelled else "")
          + "; `nlt em run ... --cluster` continues the run")


def _cmd_em_plan(args, cfg) -> None:
    from nemo_latent_thoughts.em.plan import plan
    from nemo_latent_thoughts.teacher.run import check_teacher

    check_teacher(cfg)
    stages = plan(cfg)
    width = max(len(stage.name) for stage in stages)
    for stage in stages:
        print(f"{stage.name:<{width}}  {'done' if stage.done else 'to run'}  {stage.out}")
    print(f"{sum(not s.done for s in stages)} of {len(stages)} stages to run in {cfg.run_dir}"
          + ("" if cfg.em.run_mstep else "; each M-step waits for the cluster (em.run_mstep: false)"))


def _cmd_eval(args, cfg) -> None:
    if args.harness:
        from nemo_latent_thoughts.eval.harness import run_harness

        print(f"lm-evaluation-harness results are in {run_harness(cfg, args.harness)}")
        return
    from nemo_latent_thoughts.eval.run import run_eval

    print(f"evaluation results are in {run_eval(cfg)}")


def _cmd_report(args, cfg) -> None:
    from nemo_latent_thoughts.em.report import write_report

    print(f"report written to {write_report(args.run_dir)}")


def _cmd_prepare(args, cfg) -> None:
    from nemo_latent_thoughts.data.prepare import prepare

    print(f"chunks are in {prepare(cfg)}")


def _cmd_write(args, cfg) -> None:
    from nemo_latent_thoughts.data.writer import write_dataset

    print(f"data is in {write_dataset(cfg)}")


def _cmd_teacher(args, cfg) -> None:
    from nemo_latent_thoughts.teacher.run import LATENTS, run_teacher

    out = run_teacher(cfg, batch_write=args.batch_write, batch_read=args.batch_read)
    if args.batch_write:
        print(f"Batch API request files are in {out}; upload them, then `nlt teacher ... --batch-read OUTPUT.jsonl`")
    else:
        print(f"teacher latents are in {out / LATENTS}")


def _cmd_train(args, cfg) -> None:
    from nemo_latent_thoughts.train.trainer import train

    out = train(cfg)
    if os.environ.get("RANK", "0") == "0":
        print(f"training results are in {out}")


def _cmd_export(args, cfg) -> None:
    from nemo_latent_thoughts.train.trainer import export_checkpoint

    print(f"Hugging Face model written to {export_checkpoint(cfg, args.checkpoint, args.out)}")


def _cmd_init_base(args, cfg) -> None:
    from nemo_latent_thoughts.model.convert import init_base

    print(f"base model written to {init_base(args.hf_dir, args.out_dir, args.divisible_by, args.seed)}")


def _cmd_estep(args, cfg) -> None:
    from nemo_latent_thoughts.estep import run_estep

    print(f"E-step results are in {run_estep(cfg, args.shard, args.num_shards, serve=args.serve)}")


def _cmd_mstep_nemo(args, cfg) -> None:
    from nemo_latent_thoughts.optional import require

    require("nemo.collections.llm", "nlt mstep-nemo")
    from nemo_latent_thoughts.nemo.mstep import run_mstep

    out = run_mstep(cfg, args.factory, dryrun=args.dryrun, num_nodes=args.nodes, num_gpus=args.gpus)
    print(f"NeMo M-step {'would write to' if args.dryrun else 'results are in'} {out}")


def _cmd_mstep_bridge(args, cfg) -> None:
    from nemo_latent_thoughts.bridge.pretrain import require_bridge

    require_bridge("nlt mstep-bridge")
    from nemo_latent_thoughts.bridge.pretrain import run_mstep

    out = run_mstep(cfg, dryrun=args.dryrun)
    if not args.dryrun and os.environ.get("RANK", "0") == "0":
        print(f"Bridge M-step results are in {out}")


def _cmd_export_bridge(args, cfg) -> None:
    from nemo_latent_thoughts.bridge.checkpoint import export_bridge_checkpoint

    print(f"Hugging Face model written to {export_bridge_checkpoint(cfg, args.checkpoint, args.out)}")


def _cmd_export_nemo(args, cfg) -> None:
    from nemo_latent_thoughts.nemo.export import export_nemo_checkpoint

    print(f"Hugging Face model written to {export_nemo_checkpoint(cfg, args.checkpoint, args.out)}")


def _cluster(args):
    """The cluster YAML of --cluster with its -C overrides (needs NeMo-Run)."""
    from nemo_latent_thoughts.config import load_config
    from nemo_latent_thoughts.launch.cluster import ClusterConfig
    from nemo_latent_thoughts.optional import require

    cluster = load_config(args.cluster, args.cluster_overrides, schema=ClusterConfig)
    require("nemo_run", f"nlt {args.command} --cluster")
    return cluster


def _cmd_launch(args, cfg) -> None:
    from nemo_latent_thoughts.launch import slurm

    cluster = _cluster(args)
    out_dir = cfg.training.out_dir if args.job == "mstep" else cfg.estep.out_dir
    recipe = slurm.job_recipe(cfg, args.config, args.overrides, out_dir)
    launch = slurm.launch_mstep if args.job == "mstep" else slurm.launch_estep
    if args.server and args.job != "estep":
        raise NLTError("--server: only the E-step runs against a server (nlt launch estep ... --server KIND)")
    extra = {"server": args.server} if args.job == "estep" else {}
    sub = launch(cfg, recipe, cluster, dryrun=args.dryrun, **extra)
    if sub is None:
        print(f"{args.job}: complete; nothing to submit")
        return
    if args.dryrun:
        print(f"# {args.job}: sbatch script (dry run, not submitted)\n{sub.script}", end="")
        return
    print(f"{args.job}: submitted job {sub.job_id}" + (f" (array {sub.array})" if sub.array else ""))
    if args.wait:
        rows = slurm.wait_for(sub, cluster.poll_seconds)
        print(f"{args.job}: job {sub.job_id} ended: " + ", ".join(f"{k} {v}" for k, v in sorted(rows.items())))


def _add(sub, name: str, func: Callable, help: str, config_required: bool = True):
    p = sub.add_parser(name, help=help, description=help)
    p.add_argument("config", nargs=None if config_required else "?",
                   help="recipe YAML" + ("" if config_required else " (default: the embedded CPU default)"))
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="OmegaConf dot-list overrides, e.g. model.preset=tiny")
    p.set_defaults(func=func)
    return p


def _cluster_arguments(p, help: str, required: bool) -> None:
    p.add_argument("--cluster", required=required, metavar="CLUSTER.yaml", help=help)
    p.add_argument("-C", dest="cluster_overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="cluster override, e.g. -C mstep.nodes=4 (repeatable)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nlt", description="Reasoning to Learn from Latent Thoughts on NeMo / Megatron.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    config_parser = _add(sub, "config", _cmd_config, "print the resolved config of a recipe",
                         config_required=False)
    config_parser.add_argument("--docs", action="store_true", help="list every key with its type and meaning")
    _add(sub, "prepare", _cmd_prepare, "chunk a corpus into chunk shards (data.*)")
    _add(sub, "write", _cmd_write, "write chunks + latents as Megatron indexed data (write.*)")
    teacher = _add(sub, "teacher", _cmd_teacher, "warm-start latents for a seeded subset of chunks (teacher.*)")
    teacher.add_argument("--batch-write", metavar="DIR", help="write OpenAI Batch API request files instead")
    teacher.add_argument("--batch-read", metavar="FILE", action="append", default=[],
                         help="a Batch API output file to answer from (repeatable; then no live requests)")
    _add(sub, "train", _cmd_train, "train the model on CPU (training.*); torchrun/srun for data parallel")
    export = _add(sub, "export", _cmd_export, "export a training checkpoint as a Hugging Face directory")
    export.add_argument("--checkpoint", type=Path, help="checkpoint directory (default: newest)")
    export.add_argument("--out", type=Path, help="output directory (default: CHECKPOINT/hf)")
    init = sub.add_parser("init-base", help="make a plain Hugging Face Llama directory a base: extend its "
                          "tokenizer with the latent-thought tokens and grow its embeddings to match",
                          description="make a plain Hugging Face Llama directory a base for training.init_from: "
                          "its tokenizer with the four latent-thought tokens, its vocabulary grown to match")
    init.add_argument("hf_dir", type=Path, metavar="HF_DIR",
                      help="the Hugging Face model directory (config.json, weights, tokenizer)")
    init.add_argument("out_dir", type=Path, metavar="OUT_DIR", help="where to write the extended base")
    init.add_argument("--divisible-by", type=int, default=128, help="pad the vocabulary to a multiple of this "
                      "(model.make_vocab_size_divisible_by)")
    init.add_argument("--seed", type=int, default=0, help="seed of the new embedding rows")
    init.set_defaults(func=_cmd_init_base, no_config=True)
    estep = _add(sub, "estep", _cmd_estep, "sample, score and resample K latents per chunk (estep.*)")
    estep.add_argument("--shard", type=int, help="process only the shards with index %% num-shards == shard")
    estep.add_argument("--num-shards", type=int, default=1, help="how many workers share the shards")
    estep.add_argument("--serve", choices=SERVER_KINDS, help="start this server for estep.model, sample through it "
                       "(estep.backend=server), stop it (estep.server.launch and .args shape its command)")
    evaluate = _add(sub, "eval", _cmd_eval, "few-shot CoT accuracy (plain and latent mode) and held-out ELBO (eval.*)")
    evaluate.add_argument("--harness", metavar="TASK", help="instead, run lm-evaluation-harness task TASK (gsm8k_cot) "
                          "offline on eval.model over eval.data's files (pip install lm-eval)")
    em = sub.add_parser("em", help="the EM driver: run or inspect a whole EM run",
                        description="the EM driver: run or inspect a whole EM run")
    em_sub = em.add_subparsers(dest="em_command", required=True, metavar="EM_COMMAND")
    em_run = _add(em_sub, "run", _cmd_em_run, "warm start, E-steps, M-steps, baselines, eval and report; "
                  "resumable (em.*)", config_required=False)
    em_run.add_argument("--until", metavar="STAGE", help="stop after this stage, e.g. 'round 0 data'")
    em_run.add_argument("--allow-config-change", action="store_true",
                        help="continue a run directory made under another config (finished stages keep their "
                             "results); without it a change is refused, except speed-only keys")
    _cluster_arguments(em_run, "every stage as a Slurm job, chained by dependencies (README, \"EM on a Slurm "
                       "cluster\")", required=False)
    em_run.add_argument("--detach", action="store_true", help="with --cluster: submit what can be submitted and "
                        "exit; rerun the same command to continue")
    _add(em_sub, "plan", _cmd_em_plan, "print the stages a recipe runs and where each writes; runs nothing",
         config_required=False)
    runs = {}
    for parent, name, func, help in (
            (em_sub, "status", _cmd_em_status, "what is done, running and pending in RUN_DIR (with --cluster: "
             "each stage's Slurm job and state)"),
            (em_sub, "stage", _cmd_em_stage, "run one stage of the run in RUN_DIR (what each cluster job runs)"),
            (em_sub, "cancel", _cmd_em_cancel, "scancel the Slurm jobs the run in RUN_DIR has queued or running"),
            (sub, "report", _cmd_report, "rebuild RUN_DIR/report.md and report.png")):
        p = runs[name] = parent.add_parser(name, help=help, description=help)
        p.add_argument("run_dir", type=Path, help="the run directory (its config.yaml describes the run)")
        p.set_defaults(func=func, no_config=True)
    runs["status"].add_argument("--jobs", action="store_true", help="also the jobs of the stages that are done")
    stage = runs["stage"]
    stage.add_argument("stage", help="the stage, as `nlt em status` names it ('round 1 estep' or round-1-estep)")
    stage.add_argument("--shard", type=int, help="E-step: only the shards with index %% num-shards == shard")
    stage.add_argument("--num-shards", type=int, default=1, help="E-step: how many workers share the shards")
    stage.add_argument("--serve", choices=SERVER_KINDS, help="E-step: sample through this server (nlt estep --serve)")
    mstep_nemo = _add(sub, "mstep-nemo", _cmd_mstep_nemo, "run a round's M-step (training.*) through a NeMo recipe")
    mstep_nemo.add_argument("--factory", help="llm.pretrain factory (default: the one of model.preset)")
    mstep_nemo.add_argument("--dryrun", action="store_true", help="print the NeMo recipe; run nothing")
    mstep_nemo.add_argument("--gpus", type=int, default=1, help="GPUs per node (torchrun when > 1 outside srun)")
    mstep_nemo.add_argument("--nodes", type=int, default=1, help="nodes (under srun: one task per GPU)")
    export_nemo = _add(sub, "export-nemo", _cmd_export_nemo, "export a NeMo M-step checkpoint as a Hugging Face directory")
    export_nemo.add_argument("--checkpoint", type=Path, help="NeMo checkpoint directory (default: newest under "
                             "training.out_dir/nemo)")
    export_nemo.add_argument("--out", type=Path, help="output directory (default: training.out_dir/hf)")
    mstep_bridge = _add(sub, "mstep-bridge", _cmd_mstep_bridge, "run a round's M-step (training.*) through "
                        "Megatron-Bridge (one process per GPU: torchrun or srun)")
    mstep_bridge.add_argument("--dryrun", action="store_true", help="print the Bridge ConfigContainer; run nothing")
    export_bridge = _add(sub, "export-bridge", _cmd_export_bridge,
                         "export a Bridge M-step checkpoint as a Hugging Face directory")
    export_bridge.add_argument("--checkpoint", type=Path, help="iter_NNNNNNN directory (default: newest under "
                               "training.out_dir/bridge/checkpoints)")
    export_bridge.add_argument("--out", type=Path, help="output directory (default: training.out_dir/hf)")
    launch = sub.add_parser("launch", help="submit the M-step or the E-step array to Slurm (NeMo-Run)",
                            description="submit the M-step (multi-node) or the E-step (job array) to Slurm")
    launch.add_argument("job", choices=["mstep", "estep"], help="what to launch")
    launch.add_argument("config", help="recipe YAML the jobs run (e.g. round_01/recipe.yaml)")
    launch.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                        help="overrides; the jobs then read the resolved recipe from OUT_DIR/launch/config.yaml")
    _cluster_arguments(launch, "cluster YAML (examples/cluster_*.yaml)", required=True)
    launch.add_argument("--dryrun", action="store_true", help="print the sbatch script; submit nothing")
    launch.add_argument("--wait", action="store_true", help="wait until the job (every array task) has ended")
    launch.add_argument("--server", choices=SERVER_KINDS, help="estep: every array task starts this server for "
                        "estep.model, samples through it and stops it (`nlt estep --serve`)")
    launch.set_defaults(func=_cmd_launch)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    if not args.debug:  # megatron-core and NeMo are chatty at import time
        for name in ("megatron", "nemo", "numexpr"):
            logging.getLogger(name).setLevel(logging.WARNING)
        warnings.filterwarnings("ignore", module=r"(megatron|nemo|torch|transformers)(\.|$)")
    # A positional that looks like an override was meant as one (`nlt config a.b=1`).
    if getattr(args, "config", None) and "=" in str(args.config) and not Path(args.config).exists():
        args.overrides.insert(0, args.config)
        args.config = None
    try:
        from nemo_latent_thoughts.config import load_config

        args.func(args, None if getattr(args, "no_config", False) else load_config(args.config, args.overrides))
    except NLTError as e:
        if args.debug:
            raise
        print(f"nlt {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"nlt {args.command}: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - the CLI's last line of defence: one line, not a traceback
        if args.debug:
            raise
        if fileio.no_space(e):  # a full disk outside fileio.atomic_path
            print(f"nlt {args.command}: error: {fileio.disk_full(getattr(e, 'filename', None))}", file=sys.stderr)
            return 2
        print(f"nlt {args.command}: internal error: {type(e).__name__}: {e} (rerun with --debug for "
              "the traceback)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
