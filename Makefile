# `make demo`: set up and run the main job on the bundled default model.
# `make test`: set up and run the test suite.
VENV ?= .venv
PY := $(VENV)/bin/python
QSLM_DATA_DIR ?= $(abspath ../shared/data)
export QSLM_DATA_DIR

.PHONY: setup test demo

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[test]'
	touch $@

setup: $(VENV)/.installed

test: setup
	$(PY) -m pytest -q -x

demo: setup
	$(VENV)/bin/qslm demo
