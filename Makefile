# Two entry points for a fresh machine: `make demo` and `make test`.
# Both go through `make install`, which is a no-op when .venv is up to date.
PY ?= python3.11
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: install demo test lint format bench clean

install: $(STAMP)

# torch is installed first and pinned, so pip never resolves a CUDA build.
$(STAMP): pyproject.toml requirements.lock
	test -x $(VENV)/bin/python || $(PY) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check torch==2.13.0
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -c requirements.lock -e ".[test]"
	touch $(STAMP)

demo: install
	$(VENV)/bin/dualrec demo

test: install
	$(VENV)/bin/python -m pytest -q

# ruff: lint (pyflakes, pycodestyle, import order) and the formatting check; `make format` fixes
lint: install
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks

format: install
	$(VENV)/bin/ruff check --fix src tests benchmarks
	$(VENV)/bin/ruff format src tests benchmarks

clean:
	rm -rf $(VENV) build src/*.egg-info
