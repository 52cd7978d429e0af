# Two commands do everything:  `make study`  and  `make test`.
# Both create/reuse the virtualenv .venv and install the pinned dependencies first; `make test`
# also sets up what the whole suite needs outside Python (scripts/setup-system.sh: the Debian
# packages for the browser and SLURM tests when run as root, else it stops with the command to run).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.cnnbench-installed
# The profile of the study (full, quick, smoke); empty = the `profile` key of params.yaml.
PROFILE ?=
# Cores Snakemake may use: all = every core this process may run on (as `nproc` counts them).
CORES ?= all
PYTEST_ARGS ?=
# Test processes (pytest-xdist): auto = one per core. Each test file runs whole in one process
# (--dist loadfile: an end-to-end file's study is made once), and files run side by side: DVC runs one
# stage at a time and most unit tests one thread, so a second process keeps the other core busy.
TEST_WORKERS ?= auto

SNAKEMAKE_CONFIG := $(if $(PROFILE),--config profile=$(PROFILE),)
# Debian installs slurmctld, slurmd and munged in /usr/sbin, which a normal user's PATH lacks.
SBIN_PATH := /usr/sbin:/sbin

.PHONY: help venv system study dvc-study test test-fast clean

help:
	@echo "make study [PROFILE=smoke|quick|full] [CORES=N]  set up .venv and run the whole study with Snakemake (default: all cores)"
	@echo "make dvc-study [PROFILE=...]                     the same study as a DVC experiment (cnnbench exp-run)"
	@echo "make test                                        set up the system packages (as root) and .venv, run the whole test suite"
	@echo "make test-fast                                   unit tests only (no snakemake/dvc end-to-end runs, no browser; no system packages)"
	@echo "make system                                      only the system setup of 'make test' (scripts/setup-system.sh)"
	@echo "make clean                                       remove results/, logs/ and .snakemake/ (keeps data/ and .venv)"

$(STAMP): requirements.lock pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps -e .
	@touch $@

venv: $(STAMP)

# Listed before $(STAMP) in `test`, so a machine that lacks a package stops here, not after the pip install.
system:
	PATH="$$PATH:$(SBIN_PATH)" scripts/setup-system.sh

study: $(STAMP)
	PATH="$(abspath $(BIN)):$$PATH" snakemake --workflow-profile workflow/profiles/default --cores $(CORES) $(SNAKEMAKE_CONFIG)

dvc-study: $(STAMP)
	PATH="$(abspath $(BIN)):$$PATH" cnnbench $(if $(PROFILE),--profile $(PROFILE),) exp-run

test: system $(STAMP)
	PATH="$(abspath $(BIN)):$$PATH:$(SBIN_PATH)" python -m pytest -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

test-fast: $(STAMP)
	PATH="$(abspath $(BIN)):$$PATH" python -m pytest -n $(TEST_WORKERS) --dist loadfile -m "not e2e and not browser" $(PYTEST_ARGS)

clean:
	rm -rf results logs .snakemake
