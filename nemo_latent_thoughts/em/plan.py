"""The stages of an EM run, in order, each with the file that marks it done (DESIGN.md 2).

    run_dir/corpus/                      prepared chunks (+ the synthetic corpus, tokenizer, eval data)
    run_dir/raw/data/                    raw-only data (the baselines')
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

from nemo_latent_thoughts.config import Config

MANIFEST, DONE, SUMMARY = "manifest.json", "done.json", "summary.json"


@dataclass(frozen=True)
class Stage:
    """One unit of an EM run: `kind` says what runs, `out` where; done when `marker` exists."""

    name: str
    kind: str  # setup, prepare, raw_data, teacher, estep, data, recipe, mstep, eval, report
    round: int | None
    out: Path
    marker: Path

    @property
    def done(self) -> bool:
        return self.marker.exists()


def round_dir(cfg: Config, r: int) -> Path:
    return Path(cfg.run_dir) / f"round_{r:02d}"


def round_latents(cfg: Config, r: int) -> list[str]:
    """The latent files round `r` trains on: the teacher's (round 0) or the E-step's shards."""
    if r == 0:
        return [str(round_dir(cfg, 0) / "teacher" / "latents.jsonl")]
    return [str(round_dir(cfg, r) / "estep" / "shard_*.jsonl")]


def baseline_dir(cfg: Config, kind: str) -> Path:
    return Path(cfg.run_dir) / "baselines" / kind


def model_stages(name: str, base: Path, r: int | None, cfg: Config) -> list[Stage]:
    """recipe -> mstep -> eval under `base` (a round or a baseline)."""
    stages = [Stage(f"{name} recipe", "recipe", r, base, base / "recipe.yaml"),
              Stage(f"{name} mstep", "mstep", r, base / "mstep", base / "mstep" / DONE)]
    if cfg.em.eval:
        stages.append(Stage(f"{name} eval", "eval", r, base / "eval", base / "eval" / SUMMARY))
    return stages


def plan(cfg: Config) -> list[Stage]:
    run = Path(cfg.run_dir)
    stages = [Stage("setup", "setup", None, run, run / "setup.json"),
              Stage("prepare", "prepare", None, Path(cfg.data.chunks_dir), Path(cfg.data.chunks_dir) / MANIFEST),
              Stage("raw data", "raw_data", None, run / "raw" / "data", run / "raw" / "data" / MANIFEST),
              Stage("round 0 teacher", "teacher", 0, round_dir(cfg, 0) / "teacher",
                    round_dir(cfg, 0) / "teacher" / MANIFEST)]
    for r in range(cfg.em.num_rounds + 1):
        d = round_dir(cfg, r)
        if r:
            stages.append(Stage(f"round {r} estep", "estep", r, d / "estep", d / "estep" / MANIFEST))
        stages.append(Stage(f"round {r} data", "data", r, d / "data", d / "data" / MANIFEST))
        stages += model_stages(f"round {r}", d, r, cfg)
    for kind in cfg.em.baselines:
        stages += model_stages(f"baseline {kind}", baseline_dir(cfg, kind), None, cfg)
    stages.append(Stage("report", "report", None, run, run / "report.md"))
    return stages
