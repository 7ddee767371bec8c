"""Run the paper's three claims at toy scale with `nlt em run`, over seeds, and tabulate them.

    python examples/toy_claims/run.py [--protocol old|bolt] [--seeds 1 2 3] [--experiments claim1 ...]
                                      [--out runs/toy_claims] [--jobs N] [KEY=VALUE ...]

Protocol `old` (recipes/toy_claims.yaml; sessions 1-3): every M-step from random initialisation,
the warm start annotates a share of the bootstrap corpus itself, a fixed token budget.
  claim1      program-teacher latents for every chunk (round 0) vs the raw_tokens and flops baselines
  claim2      10% warm start, then 3 EM rounds with K = 4: does accuracy rise over rounds 1, 2, 3?
  claim3_k1   the same warm start, 1 EM round with K = 1; claim 3 sets its round 1 against
              claim2's round 1 (K = 4, otherwise identical): does K = 4 beat K = 1?
  claim2_warm30  diagnostic: claim2 from a 30% warm start
Protocol `bolt` (recipes/toy_claims_bolt.yaml; BoLT's own, DESIGN.md 1.5): every M-step from one
pretrained base (shared by all runs under OUT), round 0 on its own fully annotated warm-start
corpus, the E-step over the bootstrap corpus, about 2 passes per M-step.
  claim1      round 0 (the warm start) vs the raw_tokens and flops baselines on its raw text
  claim2      3 EM rounds with K = 4: accuracy rises over rounds 1, 2, 3, each above raw_tokens?
  claim3_k1, claim3_k2, claim3_k4, claim3_k8   1 EM round with K = 1, 2, 4, 8 (without claim3_k4,
              claim2's round 1 is the K = 4 point): do accuracy and held-out ELBO rise with K?
  claim1_warm24, claim1_warm1600   levers for claim 1: 24 passes over the warm-start corpus instead
              of 16; a warm-start corpus of 1,600 documents instead of 800
  claim2_k8, claim2_passes4, claim2_t05, claim2_small   levers for claim 2 (RESULTS.md): K = 8; 4
              passes per round >= 1; a proposal at temperature 0.5; the `small` model preset
Under `bolt`, the experiments of one seed share round 0: a run starts from a copy of another's base,
data and round 0 when the two configs differ only in what rounds >= 1 and the baselines read
(ROUND0_FREE), so claim 3's K curve and claim 2's levers grow from one warm-start model per seed.
Each experiment runs one run directory per seed (resumable: rerun the same command), `--jobs` of them
at a time (each with its share of the cores' threads and its log in OUT/logs/; a seed's further runs
wait for its first round 0, which they share); OUT/environment.json
records the package versions (the numbers are reproducible bit for bit only under the same ones).
A model's accuracy is taken in its own mode: latent mode for latent-trained rounds, plain mode for
the raw-data baselines; `accuracy` is the flexible extraction, `accuracy_strict` the strict one
(eval/grade.py), and the claims are judged on the flexible form as before. Writes OUT/results.json, OUT/per_seed.json, OUT/results.md (mean ± std over seeds per model,
then each claim's comparison and whether it held) and OUT/claims.png.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from nemo_latent_thoughts import config as config_lib
from nemo_latent_thoughts.em.report import accuracy, collect

RECIPES = Path(__file__).resolve().parents[2] / "recipes"
RECIPE = {"old": RECIPES / "toy_claims.yaml", "bolt": RECIPES / "toy_claims_bolt.yaml"}
OLD = {
    "claim1": ["teacher.fraction=1.0", "em.num_rounds=0", "em.baselines=[raw_tokens,flops]"],
    "claim2": ["teacher.fraction=0.1", "em.num_rounds=3", "estep.num_samples=4", "em.baselines=[raw_tokens]"],
    "claim3_k1": ["teacher.fraction=0.1", "em.num_rounds=1", "estep.num_samples=1", "em.baselines=[]"],
    # Diagnostic for claim 2 (RESULTS.md): the same EM loop from a larger warm start.
    "claim2_warm30": ["teacher.fraction=0.3", "em.num_rounds=3", "estep.num_samples=4", "em.baselines=[]"],
}
BOLT = {
    "claim1": ["em.num_rounds=0", "em.baselines=[raw_tokens,flops]"],
    # Lever for claim 1: a longer warm start (the baselines match its tokens and FLOPs as before).
    "claim1_warm24": ["em.num_rounds=0", "warmstart.epochs=24", "em.baselines=[raw_tokens,flops]"],
    # Lever for claim 1: a warm-start corpus twice as large (1,600 documents; its own tokenizer and
    # base follow, both trained on text that includes it); the baselines match it as before.
    "claim1_warm1600": ["em.num_rounds=0", "warmstart.synthetic_docs=1600", "em.baselines=[raw_tokens,flops]"],
    "claim2": ["em.num_rounds=3", "estep.num_samples=4", "em.baselines=[raw_tokens]"],
    **{f"claim3_k{k}": ["em.num_rounds=1", f"estep.num_samples={k}", "em.baselines=[]"] for k in (1, 2, 4, 8)},
    "claim2_k8": ["em.num_rounds=3", "estep.num_samples=8", "em.baselines=[]"],
    # Lever for claim 2: BoLT's few passes per round (round 0 keeps warmstart.epochs), so a round
    # cannot memorise the latents the next E-step resamples on the same corpus.
    "claim2_passes4": ["em.num_rounds=3", "estep.num_samples=4", "training.epochs=4", "em.baselines=[raw_tokens]"],
    # Lever for claim 2: a colder proposal (estep.temperature), so K samples of the tiny model's
    # posterior hold its right thought more often; the weights stay exact for it.
    "claim2_t05": ["em.num_rounds=3", "estep.num_samples=4", "estep.temperature=0.5", "em.baselines=[raw_tokens]"],
    # Lever for claim 2: a stronger model (4 layers of 128, the `small` preset) that copies values
    # (RESULTS.md, session 10), with its own base; ~2.5 h per seed on one core.
    "claim2_small": ["model.preset=small", "em.num_rounds=3", "estep.num_samples=4", "em.baselines=[raw_tokens]"],
}
EXPERIMENTS = {"old": OLD, "bolt": BOLT}
K_CURVE = [(1, "claim3_k1"), (2, "claim3_k2"), (4, "claim3_k4"), (4, "claim2"), (8, "claim3_k8")]
# Keys no stage up to round 0's eval reads (training.epochs only where warmstart.epochs sets round 0's).
ROUND0_FREE = re.compile(r"run_dir|em\.num_rounds|em\.baselines|estep\..*")
ROUND0_STAGES = re.compile(r"round_(0[1-9]|[1-9]\d)|baselines|report\.md|timings\.json|\.lock|"
                           + re.escape(config_lib.RESOLVED_CONFIG_NAME))  # what a copy leaves out


def share_round0(run_dir: Path, siblings: list[Path], cfg: config_lib.Config) -> None:
    """Start a new `run_dir` as a copy of a sibling run up to round 0 (evaluated) when their configs
    differ only in ROUND0_FREE keys; the copy has no saved config, so `nlt em run` adopts `cfg`."""
    if run_dir.exists():
        return
    for sibling in siblings:
        saved = sibling / config_lib.RESOLVED_CONFIG_NAME
        if not (sibling / "round_00" / "eval" / "summary.json").exists() or not saved.exists():
            continue
        old_run = str(config_lib.load_config(saved).run_dir)
        rebased = run_dir.with_name(run_dir.name + ".sibling.yaml")  # its paths moved to run_dir
        rebased.parent.mkdir(parents=True, exist_ok=True)
        rebased.write_text(saved.read_text().replace(old_run, str(cfg.run_dir)))
        changed = config_lib.changed_keys(rebased, cfg)
        rebased.unlink()
        if all(ROUND0_FREE.fullmatch(k) or (k == "training.epochs" and cfg.warmstart.epochs is not None)
               for k in changed):
            tmp = run_dir.with_name(run_dir.name + ".tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.copytree(sibling, tmp, ignore=lambda d, names: [n for n in names if Path(d) == sibling
                                                                 and ROUND0_STAGES.fullmatch(n)])
            tmp.rename(run_dir)
            print(f"run.py: {run_dir} starts from {sibling}'s round 0", flush=True)
            return


def metrics(run_dir: Path) -> dict[str, dict[str, float | None]]:
    """Per model of one run: accuracy in its own mode (and in both), likelihoods, final valid loss."""
    results = collect(run_dir)
    out = {}
    for row in results["rounds"] + results["baselines"]:
        heldout = (row["eval"] or {}).get("heldout") or {}
        own = "plain" if row["round"] is None else "latent"
        by_mode = {(m, form): (accuracy(row["eval"], m, form) or (None,))[0] for m in results["cfg"].eval.modes
                   for form in ("flexible", "strict")}
        out[row["name"]] = {"accuracy": by_mode.get((own, "flexible")), "accuracy_strict": by_mode.get((own, "strict")),
                            **{f"accuracy_{m}" + ("" if form == "flexible" else "_strict"): v
                               for (m, form), v in by_mode.items()},
                            "thought_accuracy": _thought_accuracy(row["eval"]),
                            "heldout_elbo": heldout.get("elbo_per_raw_token"),
                            "heldout_logp": heldout.get("logp_per_raw_token"),
                            "estep_elbo": ((row["estep"] or {}).get("metrics") or {}).get("elbo_per_raw_token"),
                            "valid_loss": (row["mstep"] or {}).get("valid_loss")}
    return out


def _thought_accuracy(summary: dict | None) -> float | None:
    """Latent mode: how often the thought itself ends in the right value (mean over eval files)."""
    values = [f["latent"]["thought_accuracy_mean"] for f in (summary or {}).get("files", {}).values()
              if "thought_accuracy_mean" in f.get("latent", {})]
    return float(np.mean(values)) if values else None


def table(per_seed: list[dict]) -> dict[str, dict[str, tuple[float, float, int]]]:
    """model -> metric -> (mean, std, seeds) over the seeds that have it."""
    out: dict = {}
    for model in per_seed[0]:
        for metric in per_seed[0][model]:
            values = [s[model][metric] for s in per_seed if s.get(model, {}).get(metric) is not None]
            if values:
                out.setdefault(model, {})[metric] = (float(np.mean(values)), float(np.std(values)), len(values))
    return out


def claims(results: dict, per_seed: dict) -> list[tuple[str, list[tuple[str, tuple]], bool]]:
    """(claim, [(label, (mean, std, n))], held) for each claim whose experiments ran."""
    def get(experiment: str, model: str, metric: str = "accuracy") -> tuple:
        return results.get(experiment, {}).get(model, {}).get(metric, (np.nan, np.nan, 0))

    out = []
    for name in (n for n in results if re.fullmatch(r"claim1(_\w+)?", n)):  # the claim and its levers
        r0, raw, flops = (get(name, m) for m in ("round 0", "baseline raw_tokens", "baseline flops"))
        held = [run["round 0"]["accuracy"] >= 2 * run["baseline raw_tokens"]["accuracy"]
                and run["round 0"]["accuracy"] > run["baseline flops"]["accuracy"] for run in per_seed[name].values()]
        out.append((f"1{_lever(name)}: teacher latents >= 2x the raw-token-matched baseline and > the FLOPs-matched one "
                    f"in every seed (in {sum(held)} of {len(held)})",
                    [("round 0 (latent)", r0), ("raw_tokens (plain)", raw), ("flops (plain)", flops)], all(held)))
    for name in (n for n in results if re.fullmatch(r"claim2(_\w+)?", n) and "round 3" in results[n]):
        rounds = [get(name, f"round {r}") for r in range(4)]
        raw = get(name, "baseline raw_tokens")
        out.append((f"2{_lever(name)}: accuracy rises over EM rounds 1, 2, 3, each above the raw_tokens baseline",
                    [(f"round {r}", v) for r, v in enumerate(rounds)] + [("raw_tokens (plain)", raw)],
                    bool(rounds[1][0] < rounds[2][0] < rounds[3][0] and min(r[0] for r in rounds[1:]) > raw[0])))
    by_k: dict[int, str] = {}
    for k, name in K_CURVE:  # the first experiment that ran for each K: claim3_k4 before claim2
        if name in results:
            by_k.setdefault(k, name)
    curve = list(by_k.items())
    if len(curve) > 2:  # the BoLT protocol's K = 1, 2, 4, 8 at round 1
        values = [(metric, k, get(name, "round 1", metric)) for metric in ("accuracy", "heldout_elbo") for k, name in curve]
        rising = all(a[2][0] < b[2][0] for a, b in zip(values, values[1:]) if a[0] == b[0])
        out.append(("3: at round 1, accuracy and held-out ELBO rise with K = " + ", ".join(str(k) for k, _ in curve),
                    [(f"{metric} K={k}", v) for metric, k, v in values], rising))
    elif "claim2" in results and "claim3_k1" in results:
        pairs = [(metric, get("claim2", "round 1", metric), get("claim3_k1", "round 1", metric))
                 for metric in ("accuracy", "heldout_elbo")]
        out.append(("3: K = 4 beats K = 1 at round 1, on accuracy and on held-out ELBO",
                    [(f"{metric} K={k}", v) for metric, k4, k1 in pairs for k, v in ((4, k4), (1, k1))],
                    bool(all(k4[0] > k1[0] for _, k4, k1 in pairs))))
    return out


def _lever(name: str) -> str:
    """' (lever claim2_t05)' for a claim's lever, '' for the claim's own experiment."""
    return f" (lever {name})" if "_" in name else ""


def markdown(results: dict, per_seed: dict) -> str:
    lines = ["## Claims", ""]
    for claim, values, held in claims(results, per_seed):
        lines.append(f"- Claim {claim}: **{'held' if held else 'did not hold'}**. "
                     + "; ".join(f"{label} {m:.3f} ± {s:.3f} (n={n})" for label, (m, s, n) in values))
    lines.append("")
    for name, rows in results.items():
        metrics_ = sorted({m for row in rows.values() for m in row})
        lines += [f"### {name}", "", "| model | " + " | ".join(metrics_) + " |", "|---|" + "---|" * len(metrics_)]
        for model, row in rows.items():
            cells = [f"{row[m][0]:.3f} ± {row[m][1]:.3f} (n={row[m][2]})" if m in row else "-" for m in metrics_]
            lines.append(f"| {model} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def plot(results: dict, per_seed: dict, path: Path) -> None:
    """One panel per claim: accuracy (own mode) with its spread over seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    found = claims(results, per_seed)
    fig, axes = plt.subplots(1, len(found), figsize=(5 * len(found), 4), squeeze=False)
    for ax, (claim, values, held) in zip(axes[0], found):
        values = [(label, v) for label, v in values if "elbo" not in label]
        ax.bar(range(len(values)), [v[0] for _, v in values], yerr=[v[1] for _, v in values], capsize=3,
               color=["tab:green" if "latent" in label or "round" in label or "K=" in label else "tab:gray"
                      for label, _ in values])
        ax.set_xticks(range(len(values)), [label for label, _ in values], rotation=30, ha="right", fontsize=8)
        ax.set(title=f"claim {claim.split(':')[0]}: {'held' if held else 'did not hold'}", ylabel="accuracy")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def execute(jobs: list[tuple[str, int]], out: Path, parallel: int, command, poll: float = 2.0) -> None:
    """Run each (experiment, seed) job's `command(name, seed)`, `parallel` at a time, in order, except
    that a seed's job waits while another of that seed runs and no run of that seed has finished its
    round 0 (the one it would copy). With parallel > 1 each job logs to OUT/logs/NAME_seedS.log and
    the cores' threads are divided among the jobs. Exits with one line per failed job."""
    env, logs = dict(os.environ), out / "logs"
    if parallel > 1:
        env.setdefault("OMP_NUM_THREADS", str(max(1, len(os.sched_getaffinity(0)) // parallel)))
        logs.mkdir(parents=True, exist_ok=True)
    pending, running, failed = list(jobs), {}, []

    def ready(job: tuple[str, int]) -> bool:
        return (all(seed != job[1] for _, seed in running)
                or any((d / "round_00" / "eval" / "summary.json").exists() for d in out.glob(f"*/seed{job[1]}")))

    while running or (pending and not failed):
        while not failed and len(running) < parallel and (job := next(filter(ready, pending), None)):
            pending.remove(job)
            log = logs / f"{job[0]}_seed{job[1]}.log" if parallel > 1 else None
            with open(log, "a") if log else contextlib.nullcontext() as sink:
                process = subprocess.Popen(command(*job), env=env, stdout=sink, stderr=subprocess.STDOUT if log else None)
            running[job] = (process, time.monotonic(), log)
            print(f"run.py: {job[0]} seed {job[1]} started" + (f" (log: {log})" if log else ""), flush=True)
        time.sleep(poll)
        for job, (process, start, log) in list(running.items()):
            if (code := process.poll()) is not None:
                del running[job]
                if code:
                    failed.append(f"run.py: {job[0]} seed {job[1]} failed (exit {code})" + (f"; see {log}" if log else ""))
                else:
                    print(f"run.py: {job[0]} seed {job[1]} finished in {(time.monotonic() - start) / 60:.1f} min "
                          f"({len(jobs) - len(pending) - len(running)} of {len(jobs)} done)", flush=True)
    if failed:
        sys.exit("\n".join(failed + ["run.py: rerun the same command to resume"]))


def environment() -> dict[str, str]:
    """What decides the numbers: CPU training is bitwise reproducible only within one set of these
    versions and one kind of CPU (the kernels torch picks for it; RESULTS.md, session 14)."""
    import platform
    from importlib.metadata import PackageNotFoundError, version

    import torch

    cpuinfo = Path("/proc/cpuinfo")
    names = re.findall(r"^model name\s*:\s*(.+)$", cpuinfo.read_text(), re.M) if cpuinfo.exists() else []
    found = {"python": platform.python_version(), "cpu": names[0] if names else platform.processor(),
             "cpu_capability": torch.backends.cpu.get_cpu_capability(),
             "torch": torch.__version__}  # with its build tag (+cpu, +cu130), which the wheel's metadata drops
    for name in ("transformers", "numpy", "tokenizers", "math-verify", "nemo-latent-thoughts"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = "absent"
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--protocol", choices=list(RECIPE), default="old")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--experiments", nargs="+", help="default: all of the protocol's")
    parser.add_argument("--out", type=Path, default=Path("runs/toy_claims"))
    parser.add_argument("--jobs", type=int, default=1, help="runs at a time (e.g. one per core; default 1)")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="applied to every run")
    args = parser.parse_args()
    experiments = EXPERIMENTS[args.protocol]
    unknown = set(args.experiments or []) - set(experiments)
    if unknown:
        parser.error(f"--experiments: {', '.join(sorted(unknown))} not in protocol {args.protocol}: {', '.join(experiments)}")
    shared = [f"base.cache_dir={args.out.resolve() / 'base_models'}"] if args.protocol == "bolt" else []
    names = args.experiments or list(experiments)

    def command(name: str, seed: int) -> list[str]:
        run_dir = args.out / name / f"seed{seed}"
        overrides = [f"run_dir={run_dir}", f"seed={seed}", *experiments[name], *shared, *args.overrides]
        if args.protocol == "bolt":
            share_round0(run_dir, sorted(args.out.glob(f"*/seed{seed}")),
                         config_lib.load_config(RECIPE[args.protocol], overrides))
        return [sys.executable, "-m", "nemo_latent_thoughts.cli", "em", "run", str(RECIPE[args.protocol]), *overrides]

    execute([(name, seed) for name in names for seed in args.seeds], args.out, args.jobs, command)
    results, seeds = {}, {}
    for name in names:
        seeds[name] = {seed: metrics(args.out / name / f"seed{seed}") for seed in args.seeds}
        results[name] = table(list(seeds[name].values()))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (args.out / "per_seed.json").write_text(json.dumps(seeds, indent=2) + "\n")
    (args.out / "environment.json").write_text(json.dumps(environment(), indent=2) + "\n")
    (args.out / "results.md").write_text(markdown(results, seeds))
    plot(results, seeds, args.out / "claims.png")
    print(markdown(results, seeds))


if __name__ == "__main__":
    main()
