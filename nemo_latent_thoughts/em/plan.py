"""The stages of an EM run, in order, each with the file that marks it done (DESIGN.md 2).

    run_dir/corpus/                      prepared chunks (+ the synthetic corpus, tokenizer, eval data)
    run_dir/raw/data/                    raw-only data (the baselines')
    run_dir/base/                        the pretrained base model's corpus and pointer (base.pretrain)
    run_dir/warmstart/{corpus,raw/data}/ round 0's own corpus, prepared, and its raw data (warmstart.corpus)
    run_dir/round_00/teacher/            warm-start latents
    run_dir/round_NN/estep/              round NN >= 1: latents sampled by round NN-1's model
    run_dir/round_NN/data/               augmented data
    run_dir/round_NN/recipe.yaml         the complete M-step config of the round
    run_dir/round_NN/mstep/              its training run (hf/ is the model)
    run_dir/round_NN/eval/               its evaluation
    run_dir/baselines/KIND/{recipe.yaml,mstep,eval}   raw_tokens- and flops-matched baselines
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from nemo_latent_thoughts import config as config_lib
from nemo_latent_thoughts.config import Config
from nemo_latent_thoughts.errors import NLTError

MANIFEST, DONE, SUMMARY = "manifest.json", "done.json", "summary.json"


@dataclass(frozen=True)
class Stage:
    """One unit of an EM run: `kind` says what runs, `out` where; done when `marker` exists; `after`:
    the stages whose outputs it reads (on a cluster, the jobs it waits for)."""

    name: str
    kind: str  # setup, prepare, raw_data, base, teacher, estep, data, recipe, mstep, eval, report
    round: int | None
    out: Path
    marker: Path
    after: tuple[str, ...] = ()

    @property
    def done(self) -> bool:
        return self.marker.exists()


def run_config(run_dir: str | Path) -> Config:
    """The config an EM run directory was made with, its run_dir where the directory is now."""
    run = Path(run_dir)
    saved = run / config_lib.RESOLVED_CONFIG_NAME
    if not saved.exists():
        raise NLTError(f"{run}: no {saved.name}; not an EM run directory (start one with `nlt em run RECIPE`)")
    return config_lib.load_config(saved, [f"run_dir={run.resolve()}"])


def round_dir(cfg: Config, r: int) -> Path:
    return Path(cfg.run_dir) / f"round_{r:02d}"


def round_latents(cfg: Config, r: int) -> list[str]:
    """The latent files round `r` trains on: the teacher's (round 0) or the E-step's shards."""
    if r == 0:
        return [str(round_dir(cfg, 0) / "teacher" / "latents.jsonl")]
    return [str(round_dir(cfg, r) / "estep" / "shard_*.jsonl")]


def round_epochs(cfg: Config, r: int) -> float | None:
    """Round `r`'s budget in passes over its data (None: training's token or step budget)."""
    return cfg.warmstart.epochs if r == 0 and cfg.warmstart.epochs is not None else cfg.training.epochs


def warmstart_dir(cfg: Config) -> Path:
    return Path(cfg.run_dir) / "warmstart"


def round_chunks(cfg: Config, r: int | None) -> str:
    """The prepared chunks round `r` annotates (None: the baselines' raw data): round 0's own
    warm-start corpus, or the bootstrap corpus."""
    return str(warmstart_dir(cfg) / "corpus") if r == 0 and cfg.warmstart.corpus else cfg.data.chunks_dir


def baseline_raw_data(cfg: Config) -> Path:
    """The raw data of the corpus the final round trained on: the baselines' data."""
    if cfg.em.num_rounds == 0 and cfg.warmstart.corpus:
        return warmstart_dir(cfg) / "raw" / "data"
    return Path(cfg.run_dir) / "raw" / "data"


def baseline_dir(cfg: Config, kind: str) -> Path:
    return Path(cfg.run_dir) / "baselines" / kind


def model_stages(name: str, base: Path, r: int | None, cfg: Config, after: tuple[str, ...]) -> list[Stage]:
    """recipe -> mstep -> eval under `base` (a round or a baseline); the recipe reads the stages `after`."""
    if cfg.base.pretrain:
        after += ("base model",)  # the recipe's training.init_from
    stages = [Stage(f"{name} recipe", "recipe", r, base, base / "recipe.yaml", after),
              Stage(f"{name} mstep", "mstep", r, base / "mstep", base / "mstep" / DONE, (f"{name} recipe",)),
              ]
    if cfg.em.eval:
        stages.append(Stage(f"{name} eval", "eval", r, base / "eval", base / "eval" / SUMMARY, (f"{name} mstep",)))
    return stages


def base_stages(cfg: Config) -> list[Stage]:
    base = Path(cfg.run_dir) / "base"
    stages = [Stage("base model", "base", None, base, base / "base.json", ("setup",))]
    if cfg.em.eval:  # the reference every M-step starts from
        stages.append(Stage("base eval", "eval", None, base / "eval", base / "eval" / SUMMARY, ("base model",)))
    return stages


def warmstart_stages(cfg: Config) -> list[Stage]:
    warm = warmstart_dir(cfg)
    return [Stage("warm-start prepare", "prepare", 0, warm / "corpus", warm / "corpus" / MANIFEST, ("setup",)),
            Stage("warm-start raw data", "raw_data", 0, warm / "raw" / "data", warm / "raw" / "data" / MANIFEST,
                  ("warm-start prepare",))]


def plan(cfg: Config) -> list[Stage]:
    run, chunks = Path(cfg.run_dir), Path(cfg.data.chunks_dir)
    warm = "warm-start " if cfg.warmstart.corpus else ""
    stages = [Stage("setup", "setup", None, run, run / "setup.json"),
              Stage("prepare", "prepare", None, chunks, chunks / MANIFEST, ("setup",)),
              Stage("raw data", "raw_data", None, run / "raw" / "data", run / "raw" / "data" / MANIFEST, ("prepare",)),
              *(warmstart_stages(cfg) if cfg.warmstart.corpus else []),
              *(base_stages(cfg) if cfg.base.pretrain else []),
              Stage("round 0 teacher", "teacher", 0, round_dir(cfg, 0) / "teacher",
                    round_dir(cfg, 0) / "teacher" / MANIFEST, (f"{warm}prepare",))]
    for r in range(cfg.em.num_rounds + 1):
        d = round_dir(cfg, r)
        if r:
            stages.append(Stage(f"round {r} estep", "estep", r, d / "estep", d / "estep" / MANIFEST,
                                ("prepare", f"round {r - 1} mstep")))
        latents = f"round {r} estep" if r else "round 0 teacher"
        stages.append(Stage(f"round {r} data", "data", r, d / "data", d / "data" / MANIFEST, (latents,)))
        stages += model_stages(f"round {r}", d, r, cfg, (f"round {r} data",))
    final = f"round {cfg.em.num_rounds}"
    raw = "warm-start raw data" if baseline_raw_data(cfg) == warmstart_dir(cfg) / "raw" / "data" else "raw data"
    reads = (raw, f"{final} data", *([f"{final} mstep"] if round_epochs(cfg, cfg.em.num_rounds) is not None else []))
    for kind in cfg.em.baselines:  # beside the rounds: they read only the final round's data (and steps)
        stages += model_stages(f"baseline {kind}", baseline_dir(cfg, kind), None, cfg, reads)
    stages.append(Stage("report", "report", None, run, run / "report.md", tuple(s.name for s in stages)))
    return stages
