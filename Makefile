# Commands for a fresh clone (each does its own set-up):
#   make demo   - the main job: the simulated continual-learning benchmark (look-alike confounders), offline, with plots
#   make test   - the test suite
#   make lint   - ruff (check and format), mypy and the import-layer contracts: what CI runs first
# `make ask Q="..."` asks one question against your configured OpenAI-compatible endpoint.

VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export ORT_DISABLE_TELEMETRY := 1
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export LANGGRAPH_CLI_NO_ANALYTICS := 1
export LANGGRAPH_NO_VERSION_CHECK := 1
export ANONYMIZED_TELEMETRY := False

.PHONY: install test lint demo ask dev clean inspector

install: $(STAMP)

# torch first: its CPU wheel is pinned here, the project declares only a range.
$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip show torch >/dev/null 2>&1 || $(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

test: $(STAMP) inspector
	$(PY) -m pytest -q

# The MCP Inspector CLI (npm, into tests/.npm) for the third-party-client tests; ~12 s once.
inspector:
	./scripts/install_inspector.sh

# Lint: style, formatting, types (pyproject's [tool.mypy]) and the import layers ([tool.importlinter]).
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	PYTHONPATH=$(CURDIR) $(VENV)/bin/mypy
	PYTHONPATH=$(CURDIR) $(VENV)/bin/lint-imports

demo: $(STAMP)
	$(VENV)/bin/memento eval --simulate --families 6 --per-family 10 --penalty 0.2 --bonus 0.25 --iterations 4 --out results/sim

ask: $(STAMP)
	$(VENV)/bin/memento ask "$(Q)"

dev: $(STAMP)
	$(VENV)/bin/langgraph dev --port $${PORT:-2024} --no-browser

clean:
	rm -rf $(VENV) .memento results
