# The two set-up commands: `make demo` and `make test`. Each creates the virtual environment, installs the
# package and, where apt-get is available, Fashion-MNIST (Debian package dataset-fashion-mnist).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
FASHION := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
# torch/torchvision releases known to work here; any release in the pyproject ranges works too
TORCH_PINS ?= torch==2.14.1 torchvision==0.29.1
# pytest-xdist workers of `make test` (one thread each; a test file stays on one worker)
TEST_WORKERS ?= logical

.PHONY: venv data test demo bench clean

$(BIN)/nas: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q $(TORCH_PINS) || $(BIN)/pip install -q torch torchvision
	$(BIN)/pip install -q -e '.[test]'
	@touch $@

venv: $(BIN)/nas

data:
	@if [ -f $(FASHION) ]; then echo "Fashion-MNIST: $(dir $(FASHION))"; \
	elif command -v apt-get >/dev/null 2>&1; then \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq dataset-fashion-mnist >/dev/null && echo "installed Fashion-MNIST"; \
	else echo "apt-get not available: the Fashion-MNIST tests are skipped; the demo downloads with --download"; fi

test: venv data
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile

demo: venv data
	$(BIN)/python examples/demo.py

bench: venv
	$(BIN)/python benchmarks/search_step.py

clean:
	rm -rf $(VENV) build *.egg-info runs demo-runs
