# The README's two commands: `make demo` and `make test`. Both create or update .venv first and
# reuse it while pyproject.toml and the constraints are unchanged.
PYTHON ?= python3.11
VENV ?= .venv
# CPU machines: the local CPU wheel of torch, never a CUDA build (see constraints/cpu.txt).
CONSTRAINTS ?= constraints/cpu.txt
PYTEST_ARGS ?=

BIN := $(VENV)/bin
HASH := $(shell cat pyproject.toml $(CONSTRAINTS) constraints/test-assets.txt | sha1sum | cut -c1-12)
CORE_STAMP := $(VENV)/.core-$(HASH)
TEST_STAMP := $(VENV)/.test-$(HASH)

.PHONY: demo claims test test-slow test-slurm venv clean

demo: $(CORE_STAMP)
	$(BIN)/nlt em run recipes/demo_cpu.yaml

# The three toy claims over seeds 1-3 (about 80 min on 2 idle cores): examples/toy_claims/RESULTS.md.
claims: $(CORE_STAMP)
	$(BIN)/python examples/toy_claims/run.py --out runs/toy_claims

# Default suite: fast CPU tests; gpu/trtllm/nemo tests skip themselves when unsupported.
test: $(TEST_STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests"; rc=0; fi; exit $$rc

test-slow: $(TEST_STAMP)
	$(BIN)/python -m pytest --run-slow -m slow $(PYTEST_ARGS)

# Starts the local two-node test cluster (root, Debian packages; returns at once if it is up).
test-slurm: $(TEST_STAMP)
	tests/slurm/slurm-local start 2
	$(BIN)/python -m pytest --run-slurm -m slurm $(PYTEST_ARGS)

# The environment `make test` uses, without running anything.
venv: $(TEST_STAMP)

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
	rm -rf $(VENV) runs
