# The README's commands: `make demo` (the main job) and `make test` (what CI runs).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# Same pins as pyproject.toml and environment.yml (tests/test_packaging.py checks they agree).
TORCH_PINS := torch==2.14.1 torchvision==0.29.1
EXTRAS ?= dev,notebooks

.PHONY: setup test test-variants demo bench doctor clean d2-deps

setup: $(VENV)/.installed

# Re-installs (and so rebuilds the compiled ops) when the pins (this file), packaging or C++/CUDA sources change.
$(VENV)/.installed: Makefile pyproject.toml setup.py $(wildcard ops/*.py ops/csrc/*.* ops/csrc/*/*.*)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q setuptools wheel
	$(PY) -m pip install -q $(TORCH_PINS)
	$(PY) -m pip install -q --no-build-isolation -e ".[$(EXTRAS)]"
	$(PY) -m pip install -q --no-deps panopticapi-lite==0.2.0
	touch $@

test: setup
	$(PY) -m pytest -q

# The numerics-sensitive tests again with scalar ATen kernels, SSE-only oneDNN and MKL, and 3 threads: a tolerance
# tuned to one CPU fails here (.ci/numerics_variants.py --all runs every variant; CI runs this one).
test-variants: setup
	$(PY) .ci/numerics_variants.py

demo: setup
	$(PY) -m workbench demo

bench: setup
	$(PY) bench/model.py
	$(PY) bench/ops.py
	$(PY) bench/convert.py

doctor: setup
	$(PY) -m workbench doctor

# The `d2` extra's packages (pyproject.toml) into the existing venv, without reinstalling the workbench: pip's
# `-e ".[d2]"` would rebuild its ops. detectron2 itself is built from source (README, "detectron2 adapter").
d2-deps:
	@test -x $(PY) || { echo "$(PY) not found: run make setup first"; exit 1; }
	$(PY) -m pip install -q $$($(PY) -c 'import tomllib; print(" ".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]["d2"]))')

clean:
	rm -rf build *.egg-info workbench/*.so
