# Two commands do all the set-up on a fresh machine:
#   make book   - create .venv, install everything, build the book (every chapter executed in quick mode)
#                 and check the HTML for what renders badly (tools/check_render.py)
#   make test   - create .venv, install everything, run the test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test book sync-check bench clean

$(STAMP): pyproject.toml requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt -e ".[book,test]"
	touch $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest

book: $(STAMP)
	NSA_MODE=quick PATH="$(abspath $(BIN)):$$PATH" $(BIN)/jupyter-book build . --warningiserror --keep-going --all
	$(BIN)/python tools/check_render.py _build/html
	@echo "Book: $(abspath _build/html/index.html)"

# The committed .ipynb files must match their MyST .md sources (Colab opens the .ipynb).
sync-check: $(STAMP)
	$(BIN)/jupytext --sync book/*.md >/dev/null
	git diff --exit-code -- book/

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_synthesis.py

clean:
	rm -rf _build
