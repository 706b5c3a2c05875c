# Two commands do all the set-up on a fresh machine:
#   make book   - create .venv, install everything, build the book (every chapter executed in quick mode)
#                 and check the HTML for what renders badly (tools/check_render.py)
#   make test   - create .venv, install everything, run the test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# MathJax 3, as the pages load it, run by the render check to typeset every formula (optional: needs node)
MATHJAX_VERSION := 3.2.2
MATHJAX := _build/mathjax/node_modules

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
	@test -d $(MATHJAX)/mathjax-full || (command -v npm >/dev/null && npm install --silent --no-audit --no-fund \
		--prefix $(dir $(MATHJAX)) mathjax-full@$(MATHJAX_VERSION) >/dev/null 2>&1) \
		|| echo "npm or its registry is not available: the render check runs without MathJax itself"
	$(BIN)/python tools/check_render.py --mathjax $(MATHJAX) _build/html
	@echo "Book: $(abspath _build/html/index.html)"

# The committed .ipynb files must match their MyST .md sources (Colab opens the .ipynb).
sync-check: $(STAMP)
	$(BIN)/jupytext --sync book/*.md >/dev/null
	git diff --exit-code -- book/

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_synthesis.py

clean:
	rm -rf _build
