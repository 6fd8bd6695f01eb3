# longrec: two commands on a fresh machine.
#   make demo   install, then prep -> train (last) -> train (sliding) -> eval both -> compare
#   make test   install, then the Rust unit tests and the Python test suite
#   make lint   ruff (lint, format), cargo fmt and clippy, and the stub check of the extension
#   make stubs  copy the bindings' docstrings (/// in rust/python*.rs) into longrec_core/_core.pyi
# `make install` alone sets up .venv (Python deps + the Rust extension via maturin).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: install demo test lint stubs bench clean

# --system-site-packages reuses a torch that is already installed system-wide (it is ~3 GB);
# anything missing is installed into .venv by pip.
$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit("longrec needs Python 3.11 or newer; this is " + sys.version.split()[0] + " (make PYTHON=python3.11 ...)") if sys.version_info < (3, 11) else None'
	$(PYTHON) -m venv --system-site-packages $(VENV)

install: $(BIN)/python
	$(BIN)/python -m pip install -q --upgrade --ignore-installed "maturin>=1.9,<2"
	$(BIN)/maturin develop --release --extras train,dev -q

demo: install
	bash scripts/demo.sh

test: install
	cargo test --release
	$(BIN)/python -m pytest

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	cargo fmt --check
	cargo clippy --release --all-targets -- -D warnings
	$(BIN)/python -m mypy.stubtest longrec_core._core
	$(BIN)/python -m longrec_core.stubdoc --check

stubs: install
	$(BIN)/python -m longrec_core.stubdoc

bench: install
	$(BIN)/python bench/core.py
	$(BIN)/python bench/loss.py
	$(BIN)/python bench/attention.py
	$(BIN)/python bench/train.py

clean:
	rm -rf target $(VENV) longrec_core/*.so
