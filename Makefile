# Two commands start everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
CHEX := $(VENV)/bin/chexbench
RESULTS ?= chexbench-results
# pytest-xdist workers for `make test` (auto: one per core; 0 runs the suite in one process)
TEST_WORKERS ?= auto
# torch/torchvision are pinned here (the versions this project is tested with); pyproject keeps ranges open.
TORCH_PIN := torch==2.14.1 torchvision==0.29.1
# ruff is pinned too: `make test` checks the formatting, and another ruff version formats differently.
RUFF_PIN := ruff==0.17.6
# Where torch comes from. auto: without an NVIDIA GPU, PyTorch's CPU wheel index (a CPU build instead of
# several GB of CUDA libraries) if it answers within 5 s, else the default index (scripts/torch-index);
# TORCH_INDEX=URL forces an index, TORCH_INDEX= the default one (PyPI).
TORCH_INDEX ?= auto
export TORCH_INDEX

.PHONY: install demo test smoke-check smoke-shards smoke-report test-fast lint clean gpu-check gpu-wheels browser

# Who installs the packages: uv (from the package index; parallel downloads, about half of pip's time for
# the CUDA torch build and the dev extras) with pip's settings translated (scripts/pip-install), or pip
# itself with INSTALLER=pip, where uv cannot be installed, or where a pip setting has no uv translation.
INSTALLER ?= uv
export INSTALLER

# Python writes the bytecode of what it imports (.pyc, in __pycache__ folders git ignores) for the commands run
# here, as it does by default. Where PYTHONDONTWRITEBYTECODE is set (as on this project's CI machines) nothing
# would write it (uv does not compile at install), and each of the ~100 processes of `make test` compiled
# torch, timm, pandas and matplotlib from source again: 12 instead of 5 CPU-s to import the runner and the
# report, 826 instead of 629 CPU-s for the suite. Writing it lazily compiles only what is imported, once
# (compiling the whole venv at install, uv's --compile-bytecode, took 27 s on 2 cores).
unexport PYTHONDONTWRITEBYTECODE

# glibc's malloc gives each block above its mmap threshold (128 KiB, rising to at most 32 MiB as blocks are
# freed) its own mapping and unmaps it when freed, so a training step's activation buffers (a 256-image eval
# batch of the smoke ResNet: 67 MB) came back as fresh pages, zeroed by the kernel, every step: 7.1 M page
# faults and 14 s of system time in one smoke shard. With blocks up to 256 MiB served from the heap and
# 256 MiB of freed heap kept, the same shard made 0.66 M faults, 2.6 s system and 8 s less user time
# (docs/PERFORMANCE.md). Results do not change (the smoke predictions are identical); memory peaks ~5 % higher.
# Applies to every command run here (make demo, make test); set them in your shell for chexbench on a CPU.
MALLOC_MMAP_THRESHOLD_ ?= 268435456
MALLOC_TRIM_THRESHOLD_ ?= 268435456
MALLOC_TOP_PAD_ ?= 67108864
export MALLOC_MMAP_THRESHOLD_ MALLOC_TRIM_THRESHOLD_ MALLOC_TOP_PAD_
INSTALL := $(PY) scripts/pip-install

$(VENV)/.installed: pyproject.toml Makefile scripts/pip-install
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@if [ "$(INSTALLER)" = uv ]; then $(PIP) install -q uv || echo "note: uv could not be installed; installing with pip"; fi
	@[ "$(INSTALLER)" = uv ] && [ -x $(VENV)/bin/uv ] || $(PIP) install -q --upgrade pip
	@index="$$($(PYTHON) scripts/torch-index)"; \
	if [ -n "$$index" ]; then \
	  echo "torch: $(TORCH_PIN) from $$index"; \
	  $(INSTALL) -q --index-url "$$index" $(TORCH_PIN) || $(INSTALL) -q $(TORCH_PIN); \
	fi
	$(INSTALL) -q -e ".[dev,slurm]" $(TORCH_PIN) $(RUFF_PIN)
	touch $@

install: $(VENV)/.installed

demo: install
	$(CHEX) run --grid smoke --results $(RESULTS)
	$(CHEX) report --results $(RESULTS)

# The smoke grid runs as SMOKE_SHARDS processes at once (`run --shard i/n`: balanced by estimated cost, a shared
# pretraining run stays with its cells), each with its share of the cores: on 2 cores, two one-thread processes
# finish it sooner than one two-thread process, whose tiny models gain little from a second thread. The last,
# unsharded `run` finds every cell done (or runs any a shard left), so the check sees the grid of a single run.
SMOKE_SHARDS ?= 2

# `make test` runs EVERYTHING: the whole suite, its `slow` tier included (end-to-end runs, learnability and
# coverage checks; one pytest call, TEST_WORKERS workers, the heaviest modules dealt out first by
# tests/conftest.py), and the smoke grid with its report and check. It keeps about as many busy processes as
# cores: first the smoke grid's SMOKE_SHARDS one-thread shards, alone; then the suite, with the smoke grid's last
# run, report and check (one process on one thread, under a minute) beside it. Until 2026-12-07 the suite and the
# shards ran at the same time, four one-thread processes on two cores, and the same work took about 5 % more
# CPU-seconds and some 15 s more (time-sliced processes evict each other's caches; runs in docs/PERFORMANCE.md).
# Neither part reads what the other writes (the suite works in its own temp folders; both may fill the chexbench
# cache, whose phantoms, prepared images and pretraining runs are made under locks and atomic renames). The smoke
# grid's output is kept in .smoke-check.log and printed after the suite's; the suite runs even when a shard
# failed, and `make test` fails if either fails.
# While the lint runs, one process imports what the later processes all import: each module is compiled to
# bytecode once, not once per process (see PYTHONDONTWRITEBYTECODE above).
WARM_IMPORTS := chexbench.cli.run, chexbench.bench.runner, chexbench.reports.report, chexbench.strategies.simclr, \
  pytest, xdist
test: install browser
	@$(PY) -c "import $(WARM_IMPORTS)" & warm=$$!; \
	echo "$(VENV)/bin/lint-imports && ruff check && ruff format --check  (bytecode compiled beside it)"; \
	$(VENV)/bin/lint-imports && $(VENV)/bin/ruff check src tests && $(VENV)/bin/ruff format --check src tests; \
	lint=$$?; wait $$warm; exit $$lint
	rm -rf .smoke-check .smoke-check.log
	@echo "smoke grid: its $(SMOKE_SHARDS) shards first, alone on the cores (output: .smoke-check.log, printed after the tests)"; \
	$(MAKE) --no-print-directory smoke-shards >.smoke-check.log 2>&1; shards=$$?; \
	{ [ $$shards -eq 0 ] && OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 \
	  $(MAKE) --no-print-directory smoke-report >>.smoke-check.log 2>&1; } & smoke=$$!; \
	echo "$(PY) -m pytest -q -n $(TEST_WORKERS) --dist worksteal tests  (the smoke grid's report and check beside it)"; \
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist worksteal tests; status=$$?; \
	wait $$smoke; smoke_status=$$?; \
	echo "---- smoke grid (.smoke-check.log) ----"; cat .smoke-check.log; \
	[ $$smoke_status -eq 0 ] || { echo "make test: the smoke grid or its check failed (exit $$smoke_status)"; status=1; }; \
	exit $$status

# The smoke grid, its report and its check (part of `make test`; on its own: `make smoke-check`): the shards
# (SMOKE_SHARDS above), then the last unsharded `run`, the report and the check (smoke-report).
smoke-check: smoke-shards
	$(MAKE) --no-print-directory smoke-report

smoke-shards: install
	rm -rf .smoke-check
	@threads=$$(( $$($(PY) -c 'import os; print(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count())') / $(SMOKE_SHARDS) )); \
	[ $$threads -ge 1 ] || threads=1; pids=""; \
	for i in $$(seq 0 $$(( $(SMOKE_SHARDS) - 1 ))); do \
	  echo "$(CHEX) run --grid smoke --results .smoke-check --shard $$i/$(SMOKE_SHARDS)  ($$threads thread(s))"; \
	  OMP_NUM_THREADS=$$threads MKL_NUM_THREADS=$$threads $(CHEX) run --grid smoke --results .smoke-check --shard $$i/$(SMOKE_SHARDS) & pids="$$pids $$!"; \
	done; status=0; for p in $$pids; do wait $$p || status=1; done; exit $$status

smoke-report: install
	$(CHEX) run --grid smoke --results .smoke-check
	$(CHEX) report --results .smoke-check
	$(PY) tests/bench/smoke_check.py .smoke-check

# For developers between edits: the suite without the `slow` tier (end-to-end runs, learnability and
# coverage checks) and without the smoke grid. CI runs `make test`, which runs everything.
test-fast: install
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist worksteal -m "not slow" tests

# Headless Chromium for the browser test of report.html (Debian's package; never a downloaded browser).
# Where it is missing and apt is not available (or not root), nothing fails: that test is skipped with its reason.
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	  { command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ] && \
	    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } ; } || \
	  echo "make test: no chromium here and apt-get could not install it; the browser test of report.html is skipped"

# On a CUDA machine, minutes, no download: gpu tests, throughput vs a plain loop, a small real grid → docs/PERFORMANCE.md
gpu-check:
	@$(PYTHON) -c "import shutil, sys; shutil.which('nvidia-smi') or sys.exit('make gpu-check: no NVIDIA GPU on this machine (nvidia-smi not found); run it on a CUDA machine')"
	scripts/gpu-check $(GPU_CHECK_ARGS)

# For an offline GPU machine whose python3 lacks some requirements (gpu-check names them):
# their wheels for that python, into .whl/; copy it there and run `WHEELS=.whl make gpu-check`.
GPU_PY_VERSION ?= 3.12
PACKAGES ?= pydantic>=2.5,<3
gpu-wheels:
	$(PYTHON) -m pip download -q --only-binary=:all: --python-version $(GPU_PY_VERSION) --implementation cp \
	  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
	  -d .whl $(foreach p,$(PACKAGES),'$(p)')

lint: install
	$(VENV)/bin/ruff check src tests
	$(VENV)/bin/ruff format --check src tests

clean:
	rm -rf $(VENV) .smoke-check .smoke-check.log $(RESULTS) gpu-check .gpu-site .whl
