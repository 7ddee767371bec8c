"""Run the paper's three claims at toy scale with `nlt em run`, over seeds, and tabulate them.

    python examples/toy_claims/run.py [--seeds 1 2 3] [--experiments claim1 ...] [--out runs/toy_claims] [KEY=VALUE ...]

Experiments (each on recipes/toy_claims.yaml, one run directory per seed, resumable):
  claim1      program-teacher latents for every chunk (round 0) vs the raw_tokens and flops baselines
  claim2      10% warm start, then 3 EM rounds: does accuracy rise over rounds 1, 2, 3?
  claim3_k1   10% warm start, 1 EM round with K = 1 ...
  claim3_k4   ... and with K = 4: does K = 4 beat K = 1 on accuracy and ELBO?
Writes OUT/results.json and OUT/results.md (mean ± std over seeds per model) and OUT/claims.png.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from nemo_latent_thoughts.em.report import accuracy, collect

RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "toy_claims.yaml"
EXPERIMENTS = {
    "claim1": ["teacher.fraction=1.0", "em.num_rounds=0", "em.baselines=[raw_tokens,flops]"],
    "claim2": ["teacher.fraction=0.1", "em.num_rounds=3", "em.baselines=[raw_tokens]"],
    "claim3_k1": ["teacher.fraction=0.1", "em.num_rounds=1", "estep.num_samples=1", "em.baselines=[]"],
    "claim3_k4": ["teacher.fraction=0.1", "em.num_rounds=1", "estep.num_samples=4", "em.baselines=[]"],
}


def metrics(run_dir: Path) -> dict[str, dict[str, float | None]]:
    """Per model of one run: accuracy by mode and held-out likelihoods."""
    results = collect(run_dir)
    out = {}
    for row in results["rounds"] + results["baselines"]:
        heldout = (row["eval"] or {}).get("heldout") or {}
        out[row["name"]] = {
            **{f"accuracy_{m}": (accuracy(row["eval"], m) or (None,))[0] for m in results["cfg"].eval.modes},
            "heldout_elbo": heldout.get("elbo_per_raw_token"), "heldout_logp": heldout.get("logp_per_raw_token")}
    return out


def table(per_seed: list[dict]) -> dict[str, dict[str, tuple[float, float, int]]]:
    """model -> metric -> (mean, std, seeds) over the seeds that have it."""
    out: dict = {}
    for model in per_seed[0]:
        for metric in per_seed[0][model]:
            values = [s[model][metric] for s in per_seed if s.get(model, {}).get(metric) is not None]
            if values:
                out.setdefault(model, {})[metric] = (float(np.mean(values)), float(np.std(values)), len(values))
    return out


def markdown(results: dict) -> str:
    lines = []
    for name, rows in results.items():
        metrics_ = sorted({m for row in rows.values() for m in row})
        lines += [f"### {name}", "", "| model | " + " | ".join(metrics_) + " |", "|---|" + "---|" * len(metrics_)]
        for model, row in rows.items():
            cells = [f"{row[m][0]:.3f} ± {row[m][1]:.3f} (n={row[m][2]})" if m in row else "-" for m in metrics_]
            lines.append(f"| {model} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(5 * len(results), 4), squeeze=False)
    for ax, (name, rows) in zip(axes[0], results.items()):
        labels = list(rows)
        for offset, mode in enumerate(("plain", "latent")):
            means = [rows[m].get(f"accuracy_{mode}", (np.nan, 0, 0))[0] for m in labels]
            stds = [rows[m].get(f"accuracy_{mode}", (0, 0, 0))[1] for m in labels]
            ax.bar(np.arange(len(labels)) + 0.4 * offset, means, 0.4, yerr=stds, capsize=3, label=mode)
        ax.set_xticks(np.arange(len(labels)) + 0.2, labels, rotation=30, ha="right", fontsize=8)
        ax.set(title=name, ylabel="accuracy")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--experiments", nargs="+", default=list(EXPERIMENTS), choices=list(EXPERIMENTS))
    parser.add_argument("--out", type=Path, default=Path("runs/toy_claims"))
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="applied to every run")
    args = parser.parse_args()
    results = {}
    for name in args.experiments:
        per_seed = []
        for seed in args.seeds:
            run_dir = args.out / name / f"seed{seed}"
            subprocess.run([sys.executable, "-m", "nemo_latent_thoughts.cli", "em", "run", str(RECIPE),
                            f"run_dir={run_dir}", f"seed={seed}", *EXPERIMENTS[name], *args.overrides], check=True)
            per_seed.append(metrics(run_dir))
        results[name] = table(per_seed)
    (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (args.out / "results.md").write_text(markdown(results))
    plot(results, args.out / "claims.png")
    print(markdown(results))


if __name__ == "__main__":
    main()
