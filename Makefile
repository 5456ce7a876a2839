# Two commands start everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
CHEX := $(VENV)/bin/chexbench
RESULTS ?= chexbench-results
# torch/torchvision are pinned here (the versions this project is tested with); pyproject keeps ranges open.
TORCH_PIN := torch==2.14.1 torchvision==0.29.1

.PHONY: install demo test lint clean gpu-check

$(VENV)/.installed: pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q $(TORCH_PIN)
	$(PIP) install -q -e ".[dev,slurm]" $(TORCH_PIN)
	touch $@

install: $(VENV)/.installed

demo: install
	$(CHEX) run --grid smoke --results $(RESULTS)
	$(CHEX) report --results $(RESULTS)

test: install
	$(VENV)/bin/lint-imports
	$(PY) -m pytest -q tests
	rm -rf .smoke-check
	$(CHEX) run --grid smoke --results .smoke-check
	$(CHEX) report --results .smoke-check
	$(PY) -m chexbench.bench.smoke_check .smoke-check

# On a CUDA machine, minutes, no download: gpu tests, throughput vs a plain loop, a small real grid → docs/PERFORMANCE.md
gpu-check:
	@$(PYTHON) -c "import shutil, sys; shutil.which('nvidia-smi') or sys.exit('make gpu-check: no NVIDIA GPU on this machine (nvidia-smi not found); run it on a CUDA machine')"
	@test -x $(PY) || $(MAKE) install
	$(PY) -m chexbench.perf.gpu_check $(GPU_CHECK_ARGS)

lint: install
	$(VENV)/bin/ruff check src tests

clean:
	rm -rf $(VENV) .smoke-check $(RESULTS) gpu-check
