# `make demo` and `make test` set everything up on a fresh machine (see README).
PY_BOOT ?= python3
VENV    := .venv
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.installed
FMNIST  := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
PYTEST  := $(PY) -m pytest -q -p no:cacheprovider
# Test files spread over the cores (pytest-xdist; a module's tests stay on one worker so its
# fixtures are built once). Most of a test's time is single-threaded tracing and graph building.
PARALLEL := -n auto --maxprocesses=4 --dist loadscope

# make bench TORCH_PY=/path/to/python-with-torch also times the PyTorch reference step.
.PHONY: setup demo test test-slow test-all bench clean

setup: $(STAMP) $(FMNIST)

$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || $(PY_BOOT) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $(STAMP)

# Debian's Fashion-MNIST IDX files: the offline dataset of the demo.
$(FMNIST):
	@if command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	  apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist; \
	elif command -v sudo >/dev/null && command -v apt-get >/dev/null; then \
	  sudo apt-get update -qq && sudo apt-get install -y -qq dataset-fashion-mnist; \
	else \
	  echo "Fashion-MNIST missing: install Debian's 'dataset-fashion-mnist' package, or run 'tfds build fashion_mnist' and pass --data_dir"; exit 1; \
	fi

demo: setup
	$(PY) -m wmse_tf.demo

test: setup
	$(PYTEST) $(PARALLEL)

test-slow: setup
	$(PYTEST) $(PARALLEL) -m slow

test-all: setup
	$(PYTEST) $(PARALLEL) -m "slow or not slow"

bench: setup
	$(PY) -m bench.objective
	$(PY) -m bench.input_pipeline
	$(PY) -m bench.train_step $(if $(TORCH_PY),--reference_python=$(TORCH_PY))
	$(PY) -m bench.profile_step
	$(PY) -m bench.onednn_primitives $(if $(TORCH_PY),--reference_python=$(TORCH_PY))
	$(PY) -m bench.methods
	$(PY) -m bench.demo_step
	$(PY) -m bench.extract

clean:
	rm -rf $(VENV) runs
