# Two commands work on a fresh machine: `make demo` and `make test`.
# torch==2.13.0 is installed first, on its own, so that no CUDA build of torch is ever pulled.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench docs clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/lossatlas demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

# The site, offline and strict: docs/hooks.py first runs the tutorials and the gallery (their
# figures are not committed), then any warning fails the build. Open site/index.html.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site

lint: $(STAMP)
	$(BIN)/ruff check src tests bench docs/hooks.py docs/tutorial_runner.py
	$(BIN)/ruff format --check src tests bench docs/hooks.py docs/tutorial_runner.py

bench: $(STAMP)
	$(BIN)/python -m pip install --quiet --no-deps loss-landscapes==3.0.6  # the peer, bench only
	$(BIN)/python bench/surface.py
	$(BIN)/python bench/curvature.py
	$(BIN)/python bench/models.py
	$(BIN)/python bench/cnn_lstm.py
	$(BIN)/python bench/curvature_resnet.py
	$(BIN)/python bench/ray_overhead.py
	$(BIN)/python bench/monitor_overhead.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
