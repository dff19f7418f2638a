# Two commands do everything on a fresh machine (see README):
#   make run   - set up, then run the main job (mask-supervision ablation on built-in synthetic data)
#   make test  - set up, then lint and run the whole test suite (CI calls this)
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# CPU wheel; a GPU user installs their own torch build first (see README) and sets TORCH_SPEC=torch.
TORCH_SPEC ?= torch==2.13.0

.PHONY: setup run test lint bench browser clean-venv

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $@

run: setup
	$(PY) -m page4d.main

lint: setup
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

# Debian's Chromium drives the real-browser JupyterLab test (never `playwright install`); needs root/apt.
browser:
	@command -v chromium >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq chromium >/dev/null)

test: lint browser
	$(PY) -m pytest -q

bench: setup
	$(PY) -m page4d.bench all

clean-venv:
	rm -rf $(VENV)
