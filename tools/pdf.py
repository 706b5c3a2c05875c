"""PDFs of the book and of its student edition (`make pdf`), from the outputs `make book` executed.

    python tools/pdf.py            # _build/pdf/nsa-tutorial.pdf and nsa-tutorial-student.pdf, then the check
    python tools/pdf.py --check    # only check the two PDFs (poppler: pdfinfo, pdfimages, pdftotext)

Each edition becomes one HTML page: jupyter-book's ``singlehtml`` builder on a copy of the sources
(tools/student.py's ``stage``; the student edition with its ``student_config`` and, as in
`make student`, without its answer cells), with the outputs in the main build's execution cache.
A chapter missing from the cache stops the build (run `make book`) instead of running again.
MathJax comes from the npm package ``mathjax-full`` that `make book` installs, copied next to the
page (``mathjax_path``), so nothing is fetched from a CDN. Debian's Chromium prints the page
(``--print-to-pdf``) after giving MathJax time to typeset it; ``_static/print.css`` (print media
only) sets A4 with page numbers, starts each chapter on a page, wraps long code lines, keeps
figures whole and on the page, and prints the solutions open.

The check fails, one line per problem, on: a page count outside ``PAGES``; fewer images than the
figures on the printed page (less ``TOLERANCE``) or than ``MIN_IMAGES``; raw TeX in the text, or
too few typeset math symbols; a chapter title missing; and any solution fragment of
tools/student.py's ``all_fragments()`` in the student PDF, or missing from the main one. (The
figures are counted on the page, not in ``_build/jupyter_execute/book/*.ipynb``: myst-nb writes
a chapter taken from the cache there without its outputs.)

Not jupyter-book's ``pdfhtml`` builder: in jupyter-book 1.0 it drives Chromium through Playwright
(pyppeteer before 1.0) and calls ``chromium.launch()`` without an executable path, so it needs the
Chromium build that Playwright (pyppeteer) downloads from its own CDN (Google's storage), not
Debian's, and that download is not a package registry and not reachable offline; it also waits
only for "network idle", not for MathJax. Not ``pdflatex``: TeX Live is gigabytes, and LaTeX
drops the cells' HTML outputs (the tables).
"""

from __future__ import annotations

import argparse
import copy
import re
import shutil
import subprocess
import sys
import time
import unicodedata
from pathlib import Path
from typing import List, Optional

import yaml
from bs4 import BeautifulSoup

sys.path.insert(0, str(Path(__file__).resolve().parent))
import browser  # noqa: E402  (tools/browser.py: Chromium without the network)
import student  # noqa: E402  (tools/student.py)

ROOT = Path(__file__).resolve().parents[1]
MAIN = ROOT / "_build"
OUT = MAIN / "pdf"
MATHJAX = MAIN / "mathjax" / "node_modules" / "mathjax-full" / "es5"
EDITIONS = {"nsa-tutorial": False, "nsa-tutorial-student": True}  # PDF name: student edition?


def pdf_config(config: dict) -> dict:
    """``config`` (a _config.yml) for the PDF: the main build's cache, MathJax from ``_static``."""
    config = copy.deepcopy(config)
    config["execute"].update(execute_notebooks="cache", cache=str(MAIN / ".jupyter_cache"))
    sphinx = config.setdefault("sphinx", {})
    sphinx.setdefault("config", {})["mathjax_path"] = "mathjax/tex-chtml-full.js"
    sphinx.setdefault("local_extensions", {})["pdf"] = str(Path(__file__).parent)  # setup() below
    return config


def setup(app) -> dict:
    """Sphinx extension: myst-nb registers its hidden-cell node for the ``html`` builder only."""
    from myst_nb.sphinx_ import HideCodeCellNode, depart_HideCellInput, visit_HideCellInput
    app.add_node(HideCodeCellNode, override=True, singlehtml=(visit_HideCellInput, depart_HideCellInput))
    return {"parallel_read_safe": True}


def stage(src: Path, student_edition: bool) -> None:
    """The sources in ``src``, with this edition's _config.yml for the PDF."""
    student.stage(src)  # writes the student edition's _config.yml
    config = student.student_config() if student_edition else yaml.safe_load((ROOT / "_config.yml").read_text())
    (src / "_config.yml").write_text(yaml.safe_dump(pdf_config(config), sort_keys=False))


def singlehtml(src: Path, out: Path) -> Path:
    """Build ``src`` as one HTML page under ``out``; stop if a chapter would be executed."""
    shutil.rmtree(out, ignore_errors=True)
    log = out.with_suffix(".log")
    command = [str(Path(sys.executable).parent / "jupyter-book"), "build", str(src), "--builder", "singlehtml",
               "--path-output", str(out), "--warningiserror", "--keep-going", "--all"]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as run, \
            log.open("w") as keep:
        for line in run.stdout:
            keep.write(line)
            if "Executing notebook" in line:
                run.terminate()
                raise SystemExit(f"{line.split(':')[0]} is not in the execution cache: run `make book` first")
    if run.returncode:
        raise SystemExit(f"jupyter-book failed ({log}):\n" + "".join(log.read_text().splitlines(True)[-30:]))
    return out / "_build" / "singlehtml" / "book" / "intro.html"


def for_print(page: Path, student_edition: bool) -> Path:
    """The page to print, at the root of the output (where its relative links point; the
    builder writes it to book/intro.html), with MathJax beside it and every <details> open
    (closed, it prints as its summary): the answers, and the answer cells' folded source.
    The student edition loses its answer cells, as in `make student`."""
    out = page.parents[1]
    fonts = Path("output", "chtml", "fonts")  # where tex-chtml-full.js finds its web fonts
    shutil.copytree(MATHJAX / fonts, out / "_static" / "mathjax" / fonts)
    shutil.copy2(MATHJAX / "tex-chtml-full.js", out / "_static" / "mathjax")
    if student_edition:
        student.remove_answers(page.parent)
    soup = BeautifulSoup(page.read_text(), "html.parser")
    for details in soup.find_all("details"):
        details["open"] = ""
    soup.select_one("#jb-print-docs-body h1").string = soup.title.string  # the title page: the book's title
    (out / "print.html").write_text(str(soup))
    return out / "print.html"


def chromium_pdf(page: Path, pdf: Path) -> None:
    """Print ``page`` to ``pdf``, without the network (every host name fails to resolve); the
    virtual time budget lets MathJax typeset every formula first."""
    browser.run(page.as_uri(), "--virtual-time-budget=60000", "--no-pdf-header-footer", f"--print-to-pdf={pdf}",
                timeout=900, check=True)


def build() -> None:
    if not (MATHJAX / "tex-chtml-full.js").is_file():
        raise SystemExit(f"{MATHJAX} is missing: `make book` installs it (npm install mathjax-full)")
    if not subprocess.run(["fc-list", ":charset=1f389"], capture_output=True, text=True).stdout:
        print("note: no font has emoji (the checks' 'passed!' line): apt-get install fonts-symbola", file=sys.stderr)
    OUT.mkdir(parents=True, exist_ok=True)
    for name, student_edition in EDITIONS.items():
        start = time.time()
        src = OUT / f"{name}-src"
        stage(src, student_edition)
        page = singlehtml(src, OUT / f"{name}-html")
        chromium_pdf(for_print(page, student_edition), OUT / f"{name}.pdf")
        print(f"{OUT / name}.pdf: {time.time() - start:.0f} s")


# --- the check ---------------------------------------------------------------------------------
PAGES = range(60, 800)  # a sane page count for either edition (the book: about 200 A4 pages)
MIN_IMAGES = 30  # and at least as many images as the printed page has figures, less TOLERANCE
TOLERANCE = 2
RAW_TEX = re.compile(r"\$\$|\\[(\[]|\\(frac|mathbf|mathrm|operatorname|nabla|sum|partial|Omega|Delta|"
                     r"left|right|begin|end|cdot|tag|label)(?![A-Za-z])")
MATH_SYMBOLS = "\u2207\u2211\u222b\u2202\u03a9\u2208\u2264\u2265"  # what MathJax draws for \nabla \sum \int ...
MIN_MATH = 60  # the book's prose, outside its formulas, has about 40 of them


def squash(text: str) -> str:
    """Text as pdftotext and the sources compare: compatibility forms (ligatures), Sphinx's
    quotes and dashes as ASCII, and no whitespace at all (lines wrap anywhere in a PDF)."""
    return re.sub(r"\s+", "", student._plain(unicodedata.normalize("NFKC", text)))


def chapter_titles() -> List[str]:
    """The first heading of every page in _toc.yml."""
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [toc["root"]] + [c["file"] for part in toc["parts"] for c in part["chapters"]]
    return [next(line[2:].strip() for line in (ROOT / f"{f}.md").read_text().splitlines() if line.startswith("# "))
            for f in files]


def text_problems(text: str, titles: List[str], absent: List[str] = (), present: List[str] = ()) -> List[str]:
    """What is wrong with a PDF's text: raw TeX (MathJax did not typeset it), too few typeset
    math symbols, a missing title, text in ``absent`` found or text in ``present`` missing."""
    found = [f"raw TeX, not typeset: {m.group(0)!r} ({len(RAW_TEX.findall(text))} in all)"
             for m in list(RAW_TEX.finditer(text))[:1]]
    symbols = sum(text.count(c) for c in MATH_SYMBOLS)
    if symbols < MIN_MATH:
        found.append(f"only {symbols} typeset math symbols ({MATH_SYMBOLS}), fewer than {MIN_MATH}: did MathJax run?")
    flat = squash(text)
    found += [f"chapter title missing: {t!r}" for t in titles if squash(t) not in flat]
    found += [f"solution text in the student edition: {f!r}" for f in absent if squash(f) in flat]
    found += [f"solution text missing, so the student check cannot see it: {f!r}" for f in present
              if squash(f) not in flat]
    return found


def count_images(pdfimages_list: str) -> int:
    """Images in ``pdfimages -list`` output (its two header lines skipped; soft masks not counted)."""
    return sum(1 for line in pdfimages_list.splitlines()[2:] if line.split()[2:3] == ["image"])


def figures(page: Path) -> int:
    """The images the printed page shows: the figures the build copied to _images/."""
    return len(re.findall(r"<img[^>]*src=\"_images/", page.read_text())) if page.is_file() else 0


def poppler(*command: str) -> str:
    return subprocess.run(command, check=True, capture_output=True, text=True).stdout


def check() -> List[str]:
    """One line per problem in the two PDFs; prints what it measured."""
    problems, texts = [], {}
    for name in EDITIONS:
        pdf = OUT / f"{name}.pdf"
        if not pdf.is_file():
            problems.append(f"{pdf} is missing: run `make pdf`")
            continue
        pages = int(re.search(r"^Pages:\s+(\d+)", poppler("pdfinfo", str(pdf)), re.M).group(1))
        images = count_images(poppler("pdfimages", "-list", str(pdf)))
        expected = figures(OUT / f"{name}-html" / "_build" / "singlehtml" / "print.html")
        texts[name] = poppler("pdftotext", str(pdf), "-")
        print(f"{pdf.name}: {pages} pages, {images} images ({expected} figures on the printed page), "
              f"{sum(texts[name].count(c) for c in MATH_SYMBOLS)} typeset math symbols")
        if pages not in PAGES:
            problems.append(f"{pdf.name}: {pages} pages, not within {PAGES.start}-{PAGES.stop}")
        if images < max(MIN_IMAGES, expected - TOLERANCE):
            problems.append(f"{pdf.name}: {images} images, fewer than {max(MIN_IMAGES, expected - TOLERANCE)}")
    if len(texts) == len(EDITIONS):
        fragments = [f for fs in student.all_fragments().values() for f in fs]
        main, student_text = texts.values()
        titles = chapter_titles()
        problems += [f"nsa-tutorial.pdf: {p}" for p in text_problems(main, titles, present=fragments)]
        problems += [f"nsa-tutorial-student.pdf: {p}" for p in text_problems(student_text, titles, absent=fragments)]
        print(f"{len(titles)} chapter titles and {len(fragments)} solution fragments looked for")
    return problems


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only check the existing PDFs")
    args = parser.parse_args(argv)
    if not args.check:
        build()
    problems = check()
    print("\n".join(problems) or f"PDFs checked: {OUT / 'nsa-tutorial.pdf'}, {OUT / 'nsa-tutorial-student.pdf'}",
          file=sys.stderr if problems else sys.stdout)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
