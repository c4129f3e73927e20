# rvmatte: two commands for a fresh machine (see README.md).
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
PIP     = $(VENV)/bin/pip
# torch/torchvision pinned to the builds available on the reference machines; the package
# itself declares looser ranges.
TORCH_PINS ?= torch==2.14.1 torchvision==0.29.1
DEMO_OUT ?= demo_output

.PHONY: demo test install install-dev clean

$(VENV)/bin/activate:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

$(VENV)/.installed: $(VENV)/bin/activate pyproject.toml
	$(PIP) install -q $(TORCH_PINS)
	$(PIP) install -q -e .
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed pyproject.toml
	$(PIP) install -q -e ".[dev]"
	touch $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

## Matte the bundled sample clip with the bundled weights.
demo: install
	$(VENV)/bin/rvmatte demo -o $(DEMO_OUT)

## Run the whole test suite.
test: install-dev
	$(PY) -m pytest -q

clean:
	rm -rf $(DEMO_OUT) build dist src/*.egg-info .pytest_cache
