# Two commands a new user needs: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
DATA   := /usr/share/datasets/fashion-mnist

.PHONY: demo test quick lint docs evaluate fidelity shortcut bench data browser install install-dev clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# TORCH_INDEX=https://download.pytorch.org/whl/cpu: torch's CPU build (no CUDA download)
TORCH_INDEX ?=

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(if $(TORCH_INDEX),$(BIN)/pip install -q --index-url $(TORCH_INDEX) torch torchvision)
	$(BIN)/pip install -q -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml $(VENV)/.installed
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

# Debian's package puts the IDX files in $(DATA); elsewhere the loader names the options.
data:
	@if [ ! -d "$(DATA)" ] && [ -z "$$REPINTERP_DATA" ] && command -v apt-get >/dev/null \
	    && [ "$$(id -u)" = 0 ]; then \
	  echo "installing dataset-fashion-mnist"; \
	  apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist >/dev/null; \
	fi

# The report's browser test drives Debian's chromium with its chromium-driver.
browser:
	@if ! command -v chromedriver >/dev/null && command -v apt-get >/dev/null \
	    && [ "$$(id -u)" = 0 ]; then \
	  echo "installing chromium and chromium-driver"; \
	  apt-get update -qq && apt-get install -y -qq chromium chromium-driver >/dev/null; \
	fi

demo: install data
	$(BIN)/repinterp demo --out out/demo

test: install-dev data browser lint docs
	$(BIN)/python -m pytest

# the tests marked slow left out (CI runs them all: `make test`)
quick: install-dev data lint
	$(BIN)/python -m pytest -m "not slow"

# the API reference from the docstrings (the public names of repinterp.__all__): site/
docs: install-dev
	$(BIN)/pdoc repinterp -o site --docformat numpy

# ruff and the import-linter layering contracts (pyproject.toml)
lint: install-dev
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/lint-imports --no-logo
	$(BIN)/mypy src/repinterp

# the paper's protocol, the real-size photo model's heat maps (trains and caches it
# first: about 20-40 minutes on 2 cores), Quantus' checks, region stability
evaluate: install-dev data
	$(BIN)/python -m benchmarks.evaluate --out docs
	$(BIN)/python -m benchmarks.photo_heatmaps --out docs
	$(BIN)/python -m benchmarks.quantus_eval --out docs
	$(BIN)/python -m benchmarks.stability --out docs

# every heat map on the same images: ROAD, deletion / insertion, blur-fill Average Drop
fidelity: install-dev data
	$(BIN)/python -m benchmarks.fidelity --out docs --seeds 150 --images 3
	$(BIN)/python -m benchmarks.fidelity --out docs --seeds 150 --images 3 --retrieval euclidean

# the planted-shortcut benchmark (issue 12): docs/shortcut-results.md
shortcut: install-dev data browser
	$(BIN)/python -m benchmarks.shortcut --out docs --report out/shortcut

bench: install-dev data browser
	$(BIN)/python -m benchmarks.run --out docs
	$(BIN)/python -m benchmarks.shortcut --out docs --report out/shortcut

clean:
	rm -rf out .pytest_cache build *.egg-info src/*.egg-info
