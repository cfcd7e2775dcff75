# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: demo test lint crds clean

$(BIN)/feldera-operator: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

## Run the operator end to end against the embedded emulators (Kubernetes API + Feldera).
demo: $(BIN)/feldera-operator
	$(BIN)/feldera-operator demo

## Run the whole test suite (unit, emulator fidelity, end-to-end).
test: $(BIN)/feldera-operator
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
