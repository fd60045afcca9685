# Two commands do all set-up: `make test` and `make quickstart`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: venv test test-fast lint quickstart bench clean

$(STAMP): setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[cpu,test,peers,onnx]'
	touch $(STAMP)

venv: $(STAMP)

# the layering contract (.importlinter) first: it takes a second and says where an import went wrong
test: $(STAMP)
	$(VENV)/bin/lint-imports
	$(PY) -m pytest -q tests

# everything but the tests marked slow (subprocesses, multi-epoch training)
test-fast: $(STAMP)
	$(VENV)/bin/lint-imports
	$(PY) -m pytest -q -m "not slow" tests

lint: $(STAMP)
	$(VENV)/bin/ruff check .

quickstart: $(STAMP)
	$(PY) tools/quickstart.py

bench: $(STAMP)
	$(PY) tools/benchmark.py --network toy --data-shape 256 --batch-size 8 --mode train

clean:
	rm -rf $(VENV) *.egg-info build
