# Two set-up commands for a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
TORCH_SPEC ?= torch==2.13.0

.PHONY: install demo test test-all bench bench-train bench-inference bench-latency bench-serial clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

# torch first (the CPU build on local disk), then the project within a range it satisfies.
$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e ".[test,peer,nwb,serial,nidaq,labjack,pose]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) -m tools.demo

test: $(STAMP)
	$(PY) -m pytest

# Everything, the slow tests included (gpu-marked tests skip without a GPU).
test-all: $(STAMP)
	$(PY) -m pytest -m "not benchmark"

bench: bench-inference bench-latency bench-serial

bench-inference: $(STAMP)
	$(VENV)/bin/actionloop bench --out bench/inference.json

bench-latency: $(STAMP)
	$(VENV)/bin/actionloop replay-bench --out bench/latency.json

bench-serial: $(STAMP)
	$(VENV)/bin/actionloop bench-serial --out bench/serial.json

bench-train: $(STAMP)
	$(VENV)/bin/actionloop bench-train --out bench/train.json

clean:
	rm -rf $(VENV) demo-out runs .pytest_cache
