#!/usr/bin/env bash
# First probes of the BoLT protocol (issue 16), claim 1 only, seed 1: which levers move the warm-start
# model against the raw baselines. Each line is one `run.py --protocol bolt` run (about 2-3 min on 2
# idle cores, bases cached); RESULTS.md ("BoLT protocol: first probes") tabulates their results.json.
# Usage: bash examples/toy_claims/probes_bolt.sh [OUT=runs/probes_bolt] [BATCH=1|2|3]
# Batch 1 (session 4): base strength, warm-start size, passes. Batch 2 (session 5): the skills base
# (the task's parts, never composed) with scarcer warm-start data, more passes, and 3-operation problems.
# Batch 3: the skills base on problems that all take two operations (1-operation problems are solved
# directly as well by a raw model; batch 2's gains were all on two-operation problems).
set -euo pipefail
cd "$(dirname "$0")/../.."
out=${1:-runs/probes_bolt}
batch=${2:-1}
python=${PYTHON:-.venv/bin/python}
probe() {  # NAME OVERRIDES...
    local name=$1; shift
    "$python" examples/toy_claims/run.py --protocol bolt --seeds 1 --experiments claim1 --out "$out/$name" \
        "base.cache_dir=$(realpath -m "$out")/base_models" "$@" > "$out/$name.log" 2>&1
    echo "$name: $(grep -m1 'Claim 1' "$out/$name.log" | sed 's/.*\*\*\(.*\)\*\*\. /\1: /')"
}
mkdir -p "$out"
if [ "$batch" = 1 ]; then
probe recipe                                                     # recipes/toy_claims_bolt.yaml as is
probe warm800 warmstart.synthetic_docs=800
probe warm800_lr2e-3 warmstart.synthetic_docs=800 training.lr=2e-3 training.min_lr=2e-4
probe warm800_8passes warmstart.synthetic_docs=800 training.epochs=8
probe warm800_8passes_worked0.1 warmstart.synthetic_docs=800 training.epochs=8 base.working_fraction=0.1
probe warm800_8passes_worked0 warmstart.synthetic_docs=800 training.epochs=8 base.working_fraction=0
probe warm800_skills warmstart.synthetic_docs=800 base.style=skills
probe warm800_8passes_skills warmstart.synthetic_docs=800 training.epochs=8 base.style=skills
probe warm800_skills_operands20 warmstart.synthetic_docs=800 base.style=skills synthetic.max_operand=20
probe warm800_8passes_skills_operands20 warmstart.synthetic_docs=800 training.epochs=8 base.style=skills synthetic.max_operand=20
fi
if [ "$batch" = 2 ]; then
probe skills_warm800_8passes_ops3 base.style=skills warmstart.synthetic_docs=800 training.epochs=8 synthetic.max_operations=3
probe skills_warm200_16passes base.style=skills warmstart.synthetic_docs=200 training.epochs=16
probe skills_warm200_32passes base.style=skills warmstart.synthetic_docs=200 training.epochs=32
probe skills_warm400_16passes_ops3 base.style=skills warmstart.synthetic_docs=400 training.epochs=16 synthetic.max_operations=3
probe skills_warm800_16passes base.style=skills warmstart.synthetic_docs=800 training.epochs=16
fi
if [ "$batch" = 3 ]; then
ops2="synthetic.min_operations=2 synthetic.max_operations=2 base.style=skills"
probe skills_ops2_warm800_8passes $ops2 warmstart.synthetic_docs=800 training.epochs=8
probe skills_ops2_warm800_16passes $ops2 warmstart.synthetic_docs=800 training.epochs=16
probe skills_ops2_warm400_16passes $ops2 warmstart.synthetic_docs=400 training.epochs=16
probe skills_ops2_warm800_4passes $ops2 warmstart.synthetic_docs=800 training.epochs=4
fi
