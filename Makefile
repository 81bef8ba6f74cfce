# Set-up is part of every target: a fresh clone needs only `make demo` or `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test test-fast slow-list bench clean spu-env

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q torch==2.13.0  # the CPU wheel; an unpinned torch pulls CUDA
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

# SecretFlow SPU for `relucut pi measure`: its own venv (spu pins numpy<2 and jax 0.4.34)
SPU_VENV := .venv-spu
SPU_STAMP := $(SPU_VENV)/.installed
SPU_PYTHON ?= $(shell command -v python3.11 || echo $(PYTHON))
$(SPU_STAMP):
	$(SPU_PYTHON) -m venv $(SPU_VENV)
	$(SPU_VENV)/bin/pip install -q spu==0.9.5 'numpy<2'
	touch $(SPU_STAMP)

spu-env: $(SPU_STAMP)

demo: $(STAMP)
	$(BIN)/relucut demo

# everything (7 minutes on 2 cores); tiny models: one torch thread per process is fastest, so
# two pytest workers, one per core, each taking whole files (module fixtures are built once), the
# longest files first (tests/conftest.py)
PARALLEL := -n 2 --dist loadfile --no-loadscope-reorder
test: $(STAMP) $(SPU_STAMP)
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q $(PARALLEL) --durations=15

# the everyday subset (under 2 minutes on 2 cores): no SPU, Ray, kill-and-resume or slow tests
FAST := not spu and not ray and not kill and not slow
test-fast: $(STAMP)
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q $(PARALLEL) --durations=10 -m "$(FAST)"

# re-measure which everyday tests take 2 s or more (tests/slow_tests.txt marks them slow)
slow-list: $(STAMP)
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q $(PARALLEL) --durations=0 -m "$(FAST)" \
		| awk '$$2 ~ /^(call|setup)$$/ && $$1+0 >= 2.0 {sub(/^ *[0-9.]+s +(call|setup) +/, ""); print}' \
		| sort -u > tests/slow_tests.new
	cat tests/slow_tests.txt tests/slow_tests.new | sort -u > tests/slow_tests.txt.tmp && \
		mv tests/slow_tests.txt.tmp tests/slow_tests.txt && rm tests/slow_tests.new

clean:
	rm -rf $(VENV) $(SPU_VENV) .pytest_cache
