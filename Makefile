# `make demo`: set up and run the main job on the bundled default model.
# `make test`: set up and run the test suite.
VENV ?= .venv
PY := $(VENV)/bin/python
QSLM_DATA_DIR ?= $(abspath ../shared/data)
export QSLM_DATA_DIR

.PHONY: setup test test-fast demo

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[test]'
	touch $@

setup: $(VENV)/.installed

test: setup
	$(PY) -m pytest -q -x

# the quick tier while working (about a minute): every test but those marked slow
test-fast: setup
	$(PY) -m pytest -q -x -m "not slow"

demo: setup
	$(VENV)/bin/qslm demo
