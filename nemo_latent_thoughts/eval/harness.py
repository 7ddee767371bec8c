"""`nlt eval --harness TASK`: an lm-evaluation-harness task on any round's model, offline.

The task is lm-eval's own (its prompts, few-shot exemplars, stop sequences, filters and metric) with
its dataset swapped for each of `eval.data`'s files, read by the `json` builder of `datasets`, so
nothing is downloaded. Greedy, `eval.max_new_tokens` new tokens, `eval.max_examples` per file.
Writes `eval.out_dir/harness_TASK.json` (scores per file under every filter of the task) and
`harness_TASK_FILE.jsonl` (per item: prompt, response, extracted answer per filter, exact match).
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path

from nemo_latent_thoughts import fileio, optional
from nemo_latent_thoughts.config import Config
from nemo_latent_thoughts.errors import NLTError
from nemo_latent_thoughts.eval.data import load_items
from nemo_latent_thoughts.model.convert import require_hf_dir

log = logging.getLogger(__name__)

TASKS = {"gsm8k_cot": ("gsm8k/gsm8k-cot.yaml", "gsm8k")}
"""Supported tasks: lm-eval's task YAML (under lm_eval/tasks) and the eval file format it reads."""


def task_spec(task: str, path: Path, name: str) -> dict:
    """The YAML of lm-eval task `task` reading `path` (a local JSONL test split) as task `name`."""
    import lm_eval

    return {"include": str(Path(lm_eval.__file__).parent / "tasks" / TASKS[task][0]), "task": name, "tag": [],
            "dataset_path": "json", "dataset_name": None, "dataset_kwargs": {"data_files": {"test": str(path)}},
            "test_split": "test"}


def run_harness(cfg: Config, task: str) -> Path:
    """Run lm-eval task `task` on `eval.model` over each file of `eval.data`; returns the results file."""
    e = cfg.eval
    if task not in TASKS:
        raise NLTError(f"--harness {task}: not supported; choose one of {', '.join(TASKS)}")
    optional.require("lm_eval", "nlt eval --harness")
    require_hf_dir(e.model, "eval.model")
    out = Path(e.out_dir) / f"harness_{task}.json"
    if out.exists():
        log.info("eval: %s is complete; nothing to do", out)
        return out
    names = {}
    for path in map(Path, e.data):
        items, _ = load_items(path, e.on_bad_record)
        if items and items[0].kind != TASKS[task][1]:
            raise NLTError(f"{path}: {task} reads {TASKS[task][1]}-format files, not {items[0].kind}; "
                           "list only those in eval.data")
        names[f"nlt_{task}_{path.stem}"] = path
    with tempfile.TemporaryDirectory(prefix="nlt-harness-") as tasks_dir:
        for name, path in names.items():
            fileio.write_text(Path(tasks_dir, f"{name}.yaml"), json.dumps(task_spec(task, path.absolute(), name)))
        results = _evaluate(cfg, tasks_dir, list(names))
    summary = {"task": task, "model": e.model, "lm_eval": _version(), "files": {}}
    for name, path in names.items():
        scores = {k.split(",")[1]: v for k, v in results["results"][name].items()
                  if k.startswith("exact_match,") and "stderr" not in k}
        samples = [{"doc_id": s["doc_id"], "filter": s["filter"], "prompt": s["arguments"][0][0],
                    "response": s["resps"][0][0], "extracted": s["filtered_resps"][0], "exact_match": s["exact_match"]}
                   for s in results["samples"][name]]
        fileio.write_jsonl(out.parent / f"harness_{task}_{path.stem}.jsonl", samples)
        summary["files"][path.stem] = {"path": str(path), "examples": results["results"][name].get("sample_len"),
                                       "exact_match": scores}
        log.info("eval: harness %s on %s: %s", task, path.name, ", ".join(f"{k} {v:.3f}" for k, v in scores.items()))
    fileio.write_json(out, summary)
    return out


def _evaluate(cfg: Config, tasks_dir: str, names: list[str]) -> dict:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    e = cfg.eval
    return simple_evaluate(model="hf", model_args=f"pretrained={e.model},dtype=float32", tasks=names,
                           task_manager=TaskManager(include_path=tasks_dir), device=e.device,
                           batch_size=e.batch_size, limit=e.max_examples, log_samples=True,
                           gen_kwargs=f"max_gen_toks={e.max_new_tokens}", random_seed=cfg.seed,
                           numpy_random_seed=cfg.seed, torch_random_seed=cfg.seed, fewshot_random_seed=cfg.seed)


def _version() -> str:
    from importlib.metadata import version

    return version("lm-eval")
