"""Evaluation: input formats, grading (math-verify), prompts, and `nlt eval` on a trained tiny model."""

import json
from dataclasses import replace

import pytest

from nemo_latent_thoughts import fileio, testing
from nemo_latent_thoughts.errors import NLTError
from nemo_latent_thoughts.eval.data import EvalItem, last_boxed, load_items
from nemo_latent_thoughts.eval.grade import is_correct, is_strict_correct
from nemo_latent_thoughts.eval.prompts import answer_text, prompt_ids
from nemo_latent_thoughts.eval.run import run_eval
from nemo_latent_thoughts.tokens import latent_token_ids

GSM8K = [{"question": "Tom has 3 apples and buys 4 more. How many?", "answer": "3 + 4 = 7.\n#### 7"},
         {"question": "A shop sells 250 pens a day. How many in 4 days?", "answer": "250*4 = 1,000.\n#### 1,000"}]
MATH = [{"problem": "What is $1 \\div 2$?", "solution": "Half of one is $\\boxed{\\frac{1}{2}}$."},
        {"problem": "Simplify $\\sqrt{8}$.", "solution": "$\\sqrt{8} = \\boxed{2\\sqrt{2}}$"}]


def items(tmp_path, name, records):
    path = tmp_path / f"{name}.jsonl"
    fileio.write_jsonl(path, records)
    return load_items(path)[0]


def test_gsm8k_and_math_items_are_read_with_their_final_answers(tmp_path):
    gsm = items(tmp_path, "gsm", GSM8K)
    assert [(i.kind, i.answer, i.solution) for i in gsm] == [("gsm8k", "7", "3 + 4 = 7."), ("gsm8k", "1000", "250*4 = 1,000.")]
    math = items(tmp_path, "math", MATH)
    assert [i.answer for i in math] == ["\\frac{1}{2}", "2\\sqrt{2}"] and math[0].where.endswith("math.jsonl:1")
    assert last_boxed("\\boxed{a} then \\boxed{\\frac{x}{\\sqrt{y}}}") == "\\frac{x}{\\sqrt{y}}"
    assert last_boxed("no box") is None and last_boxed("\\boxed{unclosed") is None


@pytest.mark.parametrize("record, message", [
    ({"question": "Q?", "answer": "no marker"}, "the answer ending '#### N'"),
    ({"question": "Q?", "answer": "#### "}, "nothing after '####'"),
    ({"problem": "P?", "solution": "no box"}, "needs a \\\\boxed"),
    ({"text": "neither"}, "neither GSM8K"),
    ([1, 2], "not a JSON object")])
def test_bad_records_are_one_line_errors_or_counted(tmp_path, record, message):
    path = tmp_path / "bad.jsonl"
    fileio.write_jsonl(path, [GSM8K[0] if "question" in str(record) or "text" in str(record) or isinstance(record, list)
                              else MATH[0], record])
    with pytest.raises(NLTError, match=rf"bad.jsonl:2: .*{message}.*eval.on_bad_record=skip"):
        load_items(path)
    kept, skipped = load_items(path, "skip")
    assert len(kept) == 1 and len(skipped) == 1 and skipped[0].startswith(f"{path}:2: ")
    path.write_text(json.dumps(GSM8K[0]) + "\nnot json\n")
    with pytest.raises(NLTError, match="bad.jsonl:2: "):
        load_items(path)


def test_mixed_formats_and_missing_files_are_errors(tmp_path):
    path = tmp_path / "mixed.jsonl"
    fileio.write_jsonl(path, [GSM8K[0], MATH[0]])
    with pytest.raises(NLTError, match="mixed.jsonl: mixes GSM8K and MATH"):
        load_items(path)
    with pytest.raises(NLTError, match="eval.data: cannot read"):
        load_items(tmp_path / "missing.jsonl")


def test_grading_with_math_verify(tmp_path):
    gsm, math = items(tmp_path, "gsm", GSM8K), items(tmp_path, "math", MATH)
    assert is_correct(gsm[0], "3 plus 4 is 7. The answer is 7.")
    assert not is_correct(gsm[0], "The answer is 8.")
    assert is_correct(gsm[1], "The answer is 1000.") and is_correct(gsm[1], "The answer is 1,000.")
    assert is_correct(math[0], "So the answer is 0.5.")  # \frac{1}{2} == 0.5
    assert is_correct(math[0], "The answer is $\\boxed{\\frac12}$.")
    assert not is_correct(math[0], "The answer is $\\boxed{\\frac{1}{3}}$.")
    assert is_correct(math[1], "$\\boxed{\\sqrt{8}}$") and not is_correct(math[1], "")


def test_strict_grading_takes_only_the_templates_own_answer_form(tmp_path):
    gsm, math = items(tmp_path, "gsm", GSM8K), items(tmp_path, "math", MATH)
    never_answers = "Take 3 and 4, then 7."  # lm-eval's flexible-extract counts it; strict-match does not
    assert is_correct(gsm[0], never_answers) and not is_strict_correct(gsm[0], never_answers, "qa")
    assert is_strict_correct(gsm[0], "3 plus 4 is 7. The answer is 7.", "qa")
    assert is_strict_correct(gsm[1], "The answer is 1,000.", "qa")
    assert not is_strict_correct(gsm[0], "The answer is 7", "qa")  # gsm8k_cot's regex needs the full stop
    assert not is_strict_correct(gsm[0], "The answer is 8.", "qa")
    assert is_strict_correct(math[0], "so $\\boxed{\\frac12}$ it is", "qa")  # the last \\boxed{}
    assert is_strict_correct(math[0], "The answer is 0.5.", "qa") and not is_strict_correct(math[0], "It is 0.5", "qa")
    assert is_strict_correct(gsm[0], "7", "statement") and is_strict_correct(gsm[0], "Then a + b = 7", "statement")
    assert not is_strict_correct(gsm[0], "7 apples", "statement") and is_correct(gsm[0], "7 apples")


def test_prompts_in_plain_and_latent_mode(tokenizer):
    ids = latent_token_ids(tokenizer)
    shot = EvalItem("Let a = 2. What is a*a?", "a*a = 2*2 = 4.", "4", "gsm8k", "x:1")
    item = EvalItem("Let b = 3. What is b + b?", "", "6", "gsm8k", "x:2")
    plain = prompt_ids(tokenizer, ids, [shot], item, "plain", 1000)
    latent = prompt_ids(tokenizer, ids, [shot], item, "latent", 1000)
    special = {ids.sol, ids.eol, ids.prior, ids.post}
    assert plain[0] == ids.bos and not special & set(plain)
    assert tokenizer.decode(plain[1:]) == ("Question: Let a = 2. What is a*a?\nAnswer: a*a = 2*2 = 4. The answer is 4.\n\n"
                                           "Question: Let b = 3. What is b + b?\nAnswer:")
    assert latent[-2:] == [ids.sol, ids.prior] and latent.count(ids.eol) == 1 and latent.count(ids.sol) == 2
    short = prompt_ids(tokenizer, ids, [shot], item, "latent", 12)
    assert len(short) == 12 and short[0] == ids.bos and short[-2:] == [ids.sol, ids.prior]
    thought = tokenizer.encode("b + b = 6.", add_special_tokens=False)
    answer = tokenizer.encode(" The answer is 6.\n\nQuestion: more", add_special_tokens=False)
    assert answer_text(tokenizer, ids, thought + [ids.eol] + answer, "latent") == ("b + b = 6.", "The answer is 6.")
    assert answer_text(tokenizer, ids, answer, "plain") == ("", "The answer is 6.")


def test_statement_template_speaks_the_synthetic_corpus_style(tokenizer):
    ids = latent_token_ids(tokenizer)
    shot = EvalItem("Let a = 2 and b = 3. What is a*b?", "a*b = 2*3 = 6.", "6", "gsm8k", "x:1")
    item = EvalItem("Take c = 4. What is c + c?", "", "8", "gsm8k", "x:2")
    plain = prompt_ids(tokenizer, ids, [shot], item, "plain", 1000, "statement")
    assert tokenizer.decode(plain[1:]) == "Let a = 2 and b = 3. Then a*b = 6. Take c = 4. Then c + c ="
    latent = prompt_ids(tokenizer, ids, [shot], item, "latent", 1000, "statement")
    assert tokenizer.decode(latent[1:], skip_special_tokens=True) == (
        "Let a = 2 and b = 3.a*b = 2*3 = 6. Then a*b = 6. Take c = 4.c + c =")
    assert latent.count(ids.prior) == 2 and latent[-len(tokenizer.encode("c + c =", add_special_tokens=False)) - 1] == ids.prior
    generated = tokenizer.encode(" 4 + 4 = 8.", add_special_tokens=False) + [ids.eol] + tokenizer.encode(
        " Then c + c = 8. Let d = 1.", add_special_tokens=False)
    assert answer_text(tokenizer, ids, generated, "latent", "statement") == ("4 + 4 = 8.", "Then c + c = 8")
    assert is_correct(item, "Then c + c = 8") and not is_correct(item, "Then c + c = 9")
    with pytest.raises(NLTError, match="x:1: the statement template needs questions 'CONTEXT What is EXPR\\?'"):
        prompt_ids(tokenizer, ids, [], EvalItem("How many?", "", "1", "gsm8k", "x:1"), "plain", 100, "statement")


def test_nlt_eval_on_a_trained_model(written_run, trained_model, tmp_path):
    cfg, _, _ = written_run
    fileio.write_jsonl(tmp_path / "test.jsonl", testing.synthetic_eval_items(6, 11))
    fileio.write_jsonl(tmp_path / "shots.jsonl", testing.synthetic_eval_items(4, 12))
    fileio.write_jsonl(tmp_path / "heldout.jsonl", testing.generate_corpus(replace(cfg.synthetic, num_docs=2, seed=99)))
    e = replace(cfg.eval, model=str(trained_model), out_dir=str(tmp_path / "eval"), data=[str(tmp_path / "test.jsonl")],
                shots=str(tmp_path / "shots.jsonl"), seeds=[0, 1], max_new_tokens=12, max_prompt_tokens=128,
                elbo_corpus=[str(tmp_path / "heldout.jsonl")], elbo_chunks=3, elbo_samples=3)
    run_cfg = replace(cfg, eval=e, estep=replace(cfg.estep, num_samples=2, max_new_tokens=8))
    out = run_eval(run_cfg)
    statement = run_eval(replace(run_cfg, eval=replace(e, template="statement", out_dir=str(tmp_path / "st"),
                                                       elbo_corpus=[])))
    first = json.loads((statement / "predictions_test_plain_seed0.jsonl").open().readline())
    assert "." not in first["prediction"] and first["graded_on"] == "answer"
    summary = json.loads((out / "summary.json").read_text())
    test = summary["files"]["test"]
    assert test["examples"] == 6 and set(test["plain"]["per_seed"]) == {"0", "1"}
    for mode in ("plain", "latent"):
        for seed in (0, 1):
            lines = [json.loads(x) for x in (out / f"predictions_test_{mode}_seed{seed}.jsonl").open()]
            assert len(lines) == 6 and test[mode]["per_seed"][str(seed)] == sum(x["correct"] for x in lines) / 6
            assert test[mode]["strict_per_seed"][str(seed)] == sum(x["strict_correct"] for x in lines) / 6
            for x in lines:  # graded on the thought exactly when no answer was stated
                assert x["thought_correct"] == (bool(x["thought"]) and is_correct(
                    EvalItem(question=x["question"], solution="", answer=x["gold"], kind="gsm8k", where=x["where"]), x["thought"].split("Question:")[0]))
    thoughts = [json.loads(x)["thought_correct"] for seed in (0, 1) for x in (out / f"predictions_test_latent_seed{seed}.jsonl").open()]
    assert test["latent"]["thought_accuracy_mean"] == pytest.approx(sum(thoughts) / 12)
    assert "thought_accuracy_mean" not in test["plain"]
    heldout = summary["heldout"]
    assert heldout["chunks"] == 3 and heldout["num_samples"] == 3 and heldout["logp_per_raw_token"] < 0  # not estep K
    assert heldout["elbo_per_raw_token"] is None or heldout["elbo_per_raw_token"] < 0
    # A finished evaluation is skipped; removing its summary re-evaluates only from the kept predictions.
    before = (out / "predictions_test_plain_seed0.jsonl").stat().st_mtime_ns
    (out / "summary.json").unlink()
    run_eval(run_cfg)
    assert (out / "predictions_test_plain_seed0.jsonl").stat().st_mtime_ns == before
    assert json.loads((out / "summary.json").read_text())["files"] == summary["files"]
