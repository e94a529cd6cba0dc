# `make test` and `make demo` set up .venv on first use, then run.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# The CPU build of torch when there is no CUDA driver; the package itself only asks torch>=2.3.
TORCH_PIN ?= $(shell if command -v nvidia-smi >/dev/null 2>&1; then echo torch; else echo torch==2.13.0; fi)
DATA_DIR ?= $(if $(RECSTACK_DATA_DIR),$(RECSTACK_DATA_DIR),$(wildcard ../shared/datasets/ml-100k))

.PHONY: venv test demo screenshots bench clean torch-pin

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_PIN)"
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

venv: $(VENV)/.installed

# The import-linter contracts in pyproject.toml (layers, no cycles) first, then the suite.
test: venv
	$(VENV)/bin/lint-imports --no-cache
	$(PY) -m pytest

# The torch requirement the virtualenvs are built with (.ci/ scripts use the same pin).
torch-pin:
	@echo "$(TORCH_PIN)"

demo: venv
	RECSTACK_DATA_DIR="$(DATA_DIR)" $(PY) -m recstack.cli.demo

# docs/images/report-*.png: the demo's four runs on MovieLens 100K (needs RECSTACK_DATA_DIR, or
# ../shared/datasets/ml-100k) rendered by the browser test (Chromium), with the comparison page.
SHOT_RUNS := runs/screenshots
screenshots: venv
	@test -n "$(DATA_DIR)" || { echo "make screenshots needs MovieLens 100K: set RECSTACK_DATA_DIR"; exit 2; }
	rm -rf $(SHOT_RUNS)
	RECSTACK_DATA_DIR="$(DATA_DIR)" $(PY) -m recstack.cli.demo --runs-dir $(SHOT_RUNS) --progress quiet
	RECSTACK_SCREENSHOTS=docs/images RECSTACK_REPORT_RUNS="$$(ls -d $(SHOT_RUNS)/*/ | tr '\n' ':' | sed 's/:$$//')" \
		$(PY) -m pytest -q tests/report/test_rendered.py

clean:
	rm -rf $(VENV) build dist src/*.egg-info
