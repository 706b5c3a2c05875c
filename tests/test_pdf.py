"""tools/pdf.py (`make pdf`): its check on small fake texts, and, where Debian's Chromium, poppler and
the MathJax that `make book` installs are present, one small page printed the way the book is."""

import importlib.util
import re
import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("pdf_tool", ROOT / "tools" / "pdf.py")
pdf = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(pdf)

TITLES = ["Poisson image editing", "Natural Synthetic Anomalies, taught and reproduced"]
MATH = "\u2207 \u2211 \u03a9 " * (pdf.MIN_MATH // 3 + 1)  # as MathJax draws \nabla \sum \Omega
GOOD = ("Natural Synthetic Anomalies, taught\nand reproduced\n1. Poisson image editing\n" + MATH
        + "\nThe patch keeps the source\u2019s gradients, and a\nconstant offset is absorbed.\n"
        + "total += np.where(np.abs(vf) > np.ab\ns(vg), vf, vg)\n")  # a code line wrapped mid-word


def test_a_good_text_passes_and_wrapped_or_typographic_text_still_matches():
    assert pdf.text_problems(GOOD, TITLES) == []
    # Sphinx makes quotes typographic and pdftotext breaks lines anywhere: these still count as present
    present = ["keeps the source's gradients, and a constant", "total += np.where(np.abs(vf) > np.abs(vg), vf, vg)"]
    assert pdf.text_problems(GOOD, TITLES, present=present) == []


@pytest.mark.parametrize("raw", [r"$$\Delta f = \operatorname{div} v$$", r"with \frac{a}{b} here",
                                 r"\(x_i\)", r"\begin{split}a \\ b\end{split}"])
def test_raw_tex_is_found(raw):
    problems = pdf.text_problems(GOOD + raw, TITLES)
    assert len(problems) == 1 and problems[0].startswith("raw TeX, not typeset")


def test_code_with_backslashes_is_not_taken_for_tex():
    assert pdf.text_problems(GOOD + r'print("a\nb\tc"); re.compile(r"\d+\s")', TITLES) == []


def test_too_few_math_symbols_fail():
    problems = pdf.text_problems(GOOD.replace(MATH, "\u2207 x"), TITLES)
    assert problems == [f"only 1 typeset math symbols ({pdf.MATH_SYMBOLS}), fewer than {pdf.MIN_MATH}: "
                        "did MathJax run?"]


def test_a_missing_title_is_named():
    assert pdf.text_problems(GOOD, TITLES + ["Ablations"]) == ["chapter title missing: 'Ablations'"]


def test_solution_text_in_the_student_text_or_missing_from_the_main_text_is_found():
    solution = "the constant offset is absorbed"
    student_text = GOOD + "so the\nconstant offset is\nabsorbed"
    assert pdf.text_problems(student_text, TITLES, absent=[solution]) == [
        f"solution text in the student edition: {solution!r}"]
    assert pdf.text_problems(GOOD, TITLES, absent=[solution]) == []
    assert pdf.text_problems(GOOD, TITLES, present=[solution]) == [
        f"solution text missing, so the student check cannot see it: {solution!r}"]


def test_images_are_counted_from_pdfimages_list_without_soft_masks():
    listing = """page   num  type   width height color comp bpc  enc interp  object ID x-ppi y-ppi size ratio
--------------------------------------------------------------------------------------------
   4     0 image     973   241  icc     3   8  image  no        66  0   151   151  135K  20%
   4     1 smask     973   241  gray    1   8  image  no        67  0   151   151  2K  1%
  53    25 image    1277  2382  icc     3   8  image  no       325  0   252   252  2M  24%
"""
    assert pdf.count_images(listing) == 2
    assert pdf.count_images(listing.split("\n", 2)[0]) == 0


def test_figures_are_the_pages_images_from_the_build(tmp_path):
    page = tmp_path / "print.html"
    page.write_text('<img alt="" src="_images/a.png"/><img src="_static/images/logo_colab.png"/>'
                    '<p><img class="x" src="_images/b.png"></p>')
    assert pdf.figures(page) == 2
    assert pdf.figures(tmp_path / "missing.html") == 0


def test_every_toc_page_has_a_title_from_its_first_heading():
    titles = pdf.chapter_titles()
    assert len(titles) == 16 and "Poisson image editing" in titles and all(titles)
    assert not any(t.startswith("#") for t in titles)


def test_the_pdf_config_reads_the_main_cache_and_a_local_mathjax_and_leaves_the_input_alone():
    config = {"title": "T", "execute": {"execute_notebooks": "force"}, "sphinx": {"config": {"a": 1}}}
    out = pdf.pdf_config(config)
    assert out["execute"] == {"execute_notebooks": "cache", "cache": str(ROOT / "_build" / ".jupyter_cache")}
    assert out["sphinx"]["config"] == {"a": 1, "mathjax_path": "mathjax/tex-chtml-full.js"}
    assert out["sphinx"]["local_extensions"] == {"pdf": str(ROOT / "tools")}
    assert config["execute"] == {"execute_notebooks": "force"} and "local_extensions" not in config["sphinx"]


def test_the_extension_registers_myst_nbs_hidden_cell_node_for_singlehtml():
    calls = []
    app = SimpleNamespace(add_node=lambda node, **kw: calls.append((node.__name__, sorted(kw))))
    pdf.setup(app)
    assert calls == [("HideCodeCellNode", ["override", "singlehtml"])]


@pytest.mark.skipif(not (Path(pdf.browser.CHROMIUM).exists() and shutil.which("pdftotext")
                         and (pdf.MATHJAX / "tex-chtml-full.js").exists()),
                    reason="needs /usr/bin/chromium, poppler-utils and `make book`'s mathjax-full")
def test_a_page_prints_on_a4_with_typeset_math_wrapped_code_and_a_page_number(tmp_path):
    long_line = "x = [" + ", ".join(f"value_{i}" for i in range(40)) + "]"
    page = tmp_path / "page.html"
    page.write_text(f"""<!DOCTYPE html><html><head><meta charset="utf-8">
<link rel="stylesheet" href="{(ROOT / '_static' / 'print.css').as_uri()}">
<script defer src="{(pdf.MATHJAX / 'tex-chtml-full.js').as_uri()}"></script></head>
<body><p>Sum: <span class="math">\\(\\sum_i \\nabla f_i\\)</span></p><pre>{long_line}</pre></body></html>""")
    out = tmp_path / "page.pdf"
    pdf.chromium_pdf(page, out)
    info = subprocess.run(["pdfinfo", str(out)], capture_output=True, text=True).stdout
    assert re.search(r"^Pages:\s+1$", info, re.M) and "(A4)" in info
    text = subprocess.run(["pdftotext", "-layout", str(out), "-"], capture_output=True, text=True).stdout
    assert "\u2211" in text and "\u2207" in text and "\\sum" not in text  # typeset, offline
    assert "value_39]" in text  # the long line wrapped instead of running off the page
    assert text.split()[-1] == "1"  # the page number print.css puts at the bottom
