"""`nlt report RUN_DIR`: report.md and report.png from the results an EM run left on disk.

Every number is read from the stages' own outputs (manifests, done.json, eval summaries,
timings.json); nothing is computed twice or typed in.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any, Optional

from nemo_latent_thoughts import fileio
from nemo_latent_thoughts.em.plan import (DONE, MANIFEST, SUMMARY, baseline_dir, baseline_raw_data, round_dir,
                                          run_config)

FORMS = ("flexible", "strict")  # answer extraction (eval/grade.py)


def _read(path: Path) -> Optional[dict]:
    return json.loads(path.read_text()) if path.exists() else None


def accuracy(summary: Optional[dict], mode: str, form: str = "flexible") -> Optional[tuple[float, float]]:
    """Mean and std of accuracy in `mode`, flexible or strict (`eval/grade.py`), averaged over the
    evaluation files; None where the summary lacks it (strict: evaluations before it existed)."""
    key = "accuracy" if form == "flexible" else "strict_accuracy"
    files = [f[mode] for f in (summary or {}).get("files", {}).values() if f"{key}_mean" in f.get(mode, {})]
    if not files:
        return None
    return (sum(f[f"{key}_mean"] for f in files) / len(files), sum(f[f"{key}_std"] for f in files) / len(files))


def collect(run_dir: Path) -> dict[str, Any]:
    """Per round and per baseline: E-step metrics, data sizes, training and eval results; costs."""
    cfg = run_config(run_dir)
    rows = []
    for r in range(cfg.em.num_rounds + 1):
        d = round_dir(cfg, r)
        rows.append({"name": f"round {r}", "round": r, "estep": _read(d / "estep" / MANIFEST),
                     "data": _read(d / "data" / MANIFEST), "mstep": _read(d / "mstep" / DONE),
                     "eval": _read(d / "eval" / SUMMARY)})
    baselines = [{"name": f"baseline {k}", "round": None, "estep": None, "data": _read(baseline_raw_data(cfg) / MANIFEST),
                  "mstep": _read(baseline_dir(cfg, k) / "mstep" / DONE), "eval": _read(baseline_dir(cfg, k) / "eval" / SUMMARY)}
                 for k in cfg.em.baselines]
    if cfg.base.pretrain:  # the pretrained base every M-step started from, as a reference row
        base = run_dir / "base"
        baselines.insert(0, {"name": "base", "round": None, "estep": None, "data": _read(base / "data" / MANIFEST),
                             "mstep": _read(base / "base.json"), "eval": _read(base / "eval" / SUMMARY)})
    return {"cfg": cfg, "rounds": rows, "baselines": baselines, "teacher": _read(round_dir(cfg, 0) / "teacher" / MANIFEST),
            "timings": _read(run_dir / "timings.json") or {}}


def _fmt(value, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, tuple):
        return f"{value[0]:.{digits}f} ± {value[1]:.{digits}f}"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def describe_base(cfg) -> str:
    """What every M-step of the run starts from: the model itself, not a preset it does not use."""
    from nemo_latent_thoughts.em.base import base_model

    if not cfg.base.pretrain and cfg.training.init_from is None:
        return f"model preset `{cfg.model.preset}` from random initialisation"
    try:
        path = base_model(cfg)
        hf = json.loads((Path(path) / "config.json").read_text())
    except (OSError, ValueError):  # the base stage has not run yet
        return "base model not built yet"
    shape = (f"{(hf.get('architectures') or [hf.get('model_type', '?')])[0]}, {hf.get('num_hidden_layers', '?')} "
             f"layers, width {hf.get('hidden_size', '?')}")
    origin = f"pretrained by the run from preset `{cfg.model.preset}`" if cfg.base.pretrain else "training.init_from"
    return f"base model `{path}` ({shape}; {origin})"


def _row_metrics(row: dict, modes: list[str]) -> list[str]:
    e = (row["estep"] or {}).get("metrics", {})
    heldout = (row["eval"] or {}).get("heldout") or {}
    train = (row["data"] or {}).get("splits", {}).get("train", {})
    return [row["name"], *[_fmt(accuracy(row["eval"], m, form)) for form in FORMS for m in modes],
            _fmt(heldout.get("elbo_per_raw_token")), _fmt(heldout.get("logp_per_raw_token")),
            _fmt(e.get("elbo_per_raw_token")), _fmt(e.get("mean_ess"), 2), _fmt(e.get("rejected_share")),
            _fmt(e.get("truncated_share")),
            _fmt(e.get("mean_latent_length"), 1), _fmt(train.get("raw_tokens")), _fmt(train.get("latent_tokens")),
            _fmt((row["mstep"] or {}).get("tokens")), _fmt((row["mstep"] or {}).get("valid_loss"))]


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    modes = results["cfg"].eval.modes
    rounds = results["rounds"]
    xs = [r["round"] for r in rounds]
    fig, axes = plt.subplots(2, 3, figsize=(14, 8))
    ax = axes[0, 0]
    for (mode, color), (form, marker) in itertools.product(zip(modes, ("tab:blue", "tab:orange")),
                                                          zip(FORMS, ("o", "s"))):
        acc = [accuracy(r["eval"], mode, form) for r in rounds]
        pts = [(x, a) for x, a in zip(xs, acc) if a]
        if pts:
            ax.errorbar([p[0] for p in pts], [p[1][0] for p in pts], [p[1][1] for p in pts], marker=marker,
                        capsize=3, color=color, alpha=1.0 if form == "flexible" else 0.6, label=f"EM ({mode}, {form})")
        for b, style in zip(results["baselines"], ("--", ":", "-.")):
            a = accuracy(b["eval"], mode, form)
            if a:
                ax.axhline(a[0], linestyle=style, color=color, alpha=0.7 if form == "flexible" else 0.35,
                           label=f"{b['name']} ({mode}, {form})")
    ax.set(title="accuracy (flexible o, strict s)", xlabel="round")
    ax.legend(fontsize=7)
    series = [("held-out ELBO / raw token", lambda r: ((r["eval"] or {}).get("heldout") or {}).get("elbo_per_raw_token")),
              ("E-step ELBO / raw token", lambda r: (r["estep"] or {}).get("metrics", {}).get("elbo_per_raw_token")),
              ("E-step mean ESS", lambda r: (r["estep"] or {}).get("metrics", {}).get("mean_ess")),
              ("E-step rejected share", lambda r: (r["estep"] or {}).get("metrics", {}).get("rejected_share")),
              ("E-step mean latent length", lambda r: (r["estep"] or {}).get("metrics", {}).get("mean_latent_length"))]
    for ax, (title, get) in zip(axes.flat[1:], series):
        pts = [(r["round"], get(r)) for r in rounds if get(r) is not None]
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o")
        if title.startswith("held-out"):
            for b, style in zip(results["baselines"], ("--", ":", "-.")):
                lp = ((b["eval"] or {}).get("heldout") or {}).get("logp_per_raw_token")
                if lp is not None:
                    ax.axhline(lp, linestyle=style, color="gray", label=f"{b['name']} log p(x)")
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=7)
        ax.set(title=title, xlabel="round")
    fig.tight_layout()
    with fileio.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def write_report(run_dir: str | Path) -> Path:
    """(Re)build `run_dir/report.md` and `run_dir/report.png`; returns the markdown's path."""
    run_dir = Path(run_dir)
    results = collect(run_dir)
    cfg, modes = results["cfg"], results["cfg"].eval.modes
    header = ["model", *[f"{form} ({m})" for form in FORMS for m in modes], "held-out ELBO/tok", "held-out log p/tok",
              "E-step ELBO/tok", "ESS", "rejected", "truncated", "latent len", "raw tokens", "latent tokens", "trained tokens",
              "valid loss"]
    lines = [f"# EM run report: {run_dir.name}", "",
             f"{cfg.em.num_rounds} EM rounds after the warm start; K = {cfg.estep.num_samples}; "
             f"{describe_base(cfg)}; seed {cfg.seed}. Accuracy is the mean ± std over eval seeds {cfg.eval.seeds} "
             f"(few-shot exemplars drawn per seed), averaged over the eval files, in two forms as "
             f"lm-evaluation-harness reports GSM8K: flexible (the last answer found in the text, or in the thought "
             f"when the model answered only there) and strict (only an answer stated in the template's own form)."
             f" Baselines train on raw data by the same recipe: raw_tokens sees as many raw tokens as the final round's model, flops as many tokens in all.",
             "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in results["rounds"] + results["baselines"]:
        lines.append("| " + " | ".join(_row_metrics(row, modes)) + " |")
    teacher = results["teacher"] or {}
    generated = sum((r["estep"] or {}).get("generated_tokens", 0) for r in results["rounds"])
    trained = sum((r["mstep"] or {}).get("tokens", 0) for r in results["rounds"] + results["baselines"])
    lines += ["", "## Cost", "",
              f"- Teacher ({teacher.get('kind', '-')}): {teacher.get('latents', '-')} latents for "
              f"{teacher.get('selected', '-')} chosen of {teacher.get('chunks', '-')} chunks; failures "
              f"{teacher.get('failures') or 'none'}; cost ${teacher.get('cost_usd', 0.0):.4f}.",
              f"- E-step tokens generated (all rounds, all K samples): {generated}.",
              f"- M-step tokens trained (rounds and baselines): {trained}.",
              f"- Wall time: {sum(results['timings'].values()) / 60:.1f} min in all.", "",
              "| stage | seconds |", "|---|---|"]
    lines += [f"| {name} | {seconds:.1f} |" for name, seconds in results["timings"].items()]
    lines += ["", "![metrics per round](report.png)", ""]
    plot(results, run_dir / "report.png")
    fileio.write_text(run_dir / "report.md", "\n".join(lines))
    return run_dir / "report.md"
