# Two entry points for a fresh machine: `make demo` and `make test`.
VENV ?= .venv
PYTHON := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export TF_CPP_MIN_LOG_LEVEL ?= 3

.PHONY: data demo test test-all lint docs dist clean

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PYTHON) -m pip install --quiet --upgrade pip
	$(PYTHON) -m pip install --quiet -e ".[dev,larq]"
	touch $(STAMP)

# Fashion-MNIST's idx files: Debian's dataset-fashion-mnist, installed with apt-get (as root, or
# through sudo) when missing; otherwise the script prints the command to run and stops.
data:
	@bash tools/get-fashion-mnist.sh

demo: data $(STAMP)
	$(VENV)/bin/kerasbnn pipeline --config examples/configs/demo.yaml --resume

# The suite runs in TEST_WORKERS processes (pytest-xdist): most of its time is one core tracing
# TensorFlow graphs, so two workers on 2 cores take about 0.6x the serial time (clean clones,
# idle: 6 min 18 s against 11 min 21 s). `make test TEST_WORKERS=0` runs it in one process.
TEST_WORKERS ?= 2

test: $(STAMP)
	$(PYTHON) -m pytest -n $(TEST_WORKERS)

test-all: $(STAMP)
	$(PYTHON) -m pytest -n $(TEST_WORKERS) -m "slow or not slow"

# The docs site (docs/, mkdocs.yml) into site/; --strict turns every broken link or missing
# reference into an error. The dev extra installs mkdocs with its docs extra.
docs: $(STAMP)
	$(VENV)/bin/mkdocs build --strict --site-dir site

# A wheel and an sdist in dist/, checked by twine (as PyPI would render the README).
dist: $(STAMP)
	rm -rf dist
	$(PYTHON) -m build
	$(PYTHON) -m twine check dist/*

lint: $(STAMP)
	! grep -rnE "tensorflow\.python|keras\.src|tf_keras|tf\.compat\.v1" kerasbnn tests

clean:
	rm -rf $(VENV) .pytest_cache build dist site *.egg-info
