# Two entry points for a new user (see README):
#   make demo  - installs the runtime alone (no torch) and runs it on the shipped model
#   make test  - installs everything (torch pinned to the CPU build) and runs lint + tests
PYTHON ?= python3
PIP_FLAGS ?= -q --disable-pip-version-check
RUN_VENV := .venv-run
DEV_VENV := .venv
DEMO_OUT := demo-out

.PHONY: demo test lint figures bench clean

$(RUN_VENV)/.installed: pyproject.toml constraints.txt runtime artifacts/mnist-conv-z20
	$(PYTHON) -m venv $(RUN_VENV)
	$(RUN_VENV)/bin/pip install $(PIP_FLAGS) -c constraints.txt '.[cpu]'
	touch $@

$(DEV_VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(DEV_VENV)
	$(DEV_VENV)/bin/pip install $(PIP_FLAGS) -c constraints.txt -e '.[train,dev]'
	touch $@

demo: $(RUN_VENV)/.installed
	$(RUN_VENV)/bin/vae-run info
	$(RUN_VENV)/bin/vae-run generate --n 64 --seed 0 --out $(DEMO_OUT)/samples.png --npy $(DEMO_OUT)/samples.npy
	$(RUN_VENV)/bin/vae-run embed $(DEMO_OUT)/samples.npy --out $(DEMO_OUT)/embeddings.npy

lint: $(DEV_VENV)/.installed
	$(DEV_VENV)/bin/ruff check .
	$(DEV_VENV)/bin/ruff format --check .

test: $(DEV_VENV)/.installed
	$(DEV_VENV)/bin/ruff check .
	$(DEV_VENV)/bin/python -m pytest

clean:
	rm -rf $(RUN_VENV) $(DEV_VENV) $(DEMO_OUT) dist build .pytest_cache .ruff_cache .hypothesis
