# Two commands do everything:  `make study`  and  `make test`.
# Both create/reuse the virtualenv .venv and install the pinned dependencies first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.cnnbench-installed
# The profile of the study (full, quick, smoke); empty = the `profile` key of params.yaml.
PROFILE ?=
CORES ?= 4
PYTEST_ARGS ?=

SNAKEMAKE_CONFIG := $(if $(PROFILE),--config profile=$(PROFILE),)

.PHONY: help venv study dvc-study test test-fast clean

help:
	@echo "make study [PROFILE=smoke|quick|full] [CORES=4]  set up .venv and run the whole study with Snakemake"
	@echo "make dvc-study [PROFILE=...]                     the same study as a DVC experiment (cnnbench exp-run)"
	@echo "make test                                        set up .venv and run the whole test suite"
	@echo "make test-fast                                   unit tests only (no snakemake/dvc end-to-end runs)"
	@echo "make clean                                       remove results/, logs/ and .snakemake/ (keeps data/ and .venv)"

$(STAMP): requirements.lock pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps -e .
	@touch $@

venv: $(STAMP)

study: $(STAMP)
	PATH="$(abspath $(BIN)):$$PATH" snakemake --cores $(CORES) $(SNAKEMAKE_CONFIG)

dvc-study: $(STAMP)
	PATH="$(abspath $(BIN)):$$PATH" cnnbench $(if $(PROFILE),--profile $(PROFILE),) exp-run

test: $(STAMP)
	PATH="$(abspath $(BIN)):$$PATH" python -m pytest $(PYTEST_ARGS)

test-fast: $(STAMP)
	PATH="$(abspath $(BIN)):$$PATH" python -m pytest -m "not e2e" $(PYTEST_ARGS)

clean:
	rm -rf results logs .snakemake
