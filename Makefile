# Two entry points: `make demo` and `make test`. Both create .venv when it is missing.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The CPU build of PyTorch that the machine has on disk; any other request downloads CUDA.
TORCH := torch==2.13.0
DEMO_OUT ?= runs/demo

.PHONY: demo test venv clean

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check $(TORCH)
	$(PY) -m pip install -q --disable-pip-version-check -e ".[test]"
	touch $@

demo: venv
	rm -rf $(DEMO_OUT)
	$(VENV)/bin/interplab train modular-addition --p 23 --frac-train 0.5 --epochs 3000 --seed 0 --out $(DEMO_OUT)
	$(VENV)/bin/interplab info $(DEMO_OUT)

test: venv
	$(PY) -m pytest -q -n 2 --durations=15

clean:
	rm -rf $(VENV) runs .pytest_cache
