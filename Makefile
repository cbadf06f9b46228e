# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.minecube-installed
# torch and torchvision must be installed first and as this matching pair (see README).
TORCH  := torch==2.14.1 torchvision==0.29.1
export HF_HUB_OFFLINE ?= 1

.PHONY: setup demo test test-fast mutate lint docs format clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet $(TORCH)
	$(BIN)/python -m pip install --quiet -e ".[dev,cluster,prithvi,csmask,docs]"
	touch $(STAMP)

demo: setup
	$(BIN)/minecube demo run --path demo-world

test: setup lint
	$(BIN)/python -m pytest
	$(MAKE) docs

# the inner loop: every test but those marked slow (`pytest -m "not slow"`)
test-fast: setup
	$(BIN)/python -m pytest -m "not slow"

# mutation testing of the core modules (minutes to hours a module; not part of `make test`):
# docs/testing.md. MINUTES=30 stops each module's run then and keeps what it checked.
MODULES ?=
MINUTES ?=
mutate: setup
	$(BIN)/python scripts/mutate.py $(MODULES) $(if $(MINUTES),--minutes $(MINUTES))

# the documentation site, with every warning an error
docs: setup
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet --site-dir site

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: setup
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf demo-world demo-world.partial demo-output .pytest_cache site
