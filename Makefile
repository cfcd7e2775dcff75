# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
# Prerequisites: Python 3.11+, Go 1.26+ (builds kube-apiserver, etcd and helm once), make.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: demo test tools lint crds clean

$(BIN)/feldera-operator: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

## Build kube-apiserver, etcd and helm from their pinned Go modules (tools/), once per machine.
tools: $(BIN)/feldera-operator
	$(BIN)/feldera-operator build-tools

## Run the operator end to end on a local control plane with the Feldera emulator.
demo: tools
	$(BIN)/feldera-operator demo

## Run the whole test suite (unit, emulator fidelity, end to end, faults, chart) on a local
## control plane.
test: tools
	$(BIN)/python -m pytest

lint: $(BIN)/feldera-operator
	$(BIN)/ruff check operator tests
	$(BIN)/ruff format --check operator tests
	$(BIN)/mypy
	$(BIN)/lint-imports

## Regenerate crds/ from the pydantic models, and the chart's copy that templates/crds.yaml installs
## (a test keeps them identical).
crds: $(BIN)/feldera-operator
	$(BIN)/feldera-operator crds --output crds
	$(BIN)/feldera-operator crds --output helm/feldera-operator/files/crds

clean:
	rm -rf $(VENV)
