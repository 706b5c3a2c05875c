"""tools/slides.py: a chapter's tagged cells become a reveal.js deck, from its executed notebook."""

import json
import re
import shutil
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import slides  # noqa: E402

PAGE = """\
---
jupytext:
  text_representation:
    extension: .md
    format_name: myst
kernelspec:
  display_name: Python 3
  language: python
  name: python3
---

# A chapter

:::{admonition} Learning goals
:class: tip
After this chapter you can
- name the goal;
:::

Untagged prose that stays out of the slides.

## The equation

+++ {"tags": ["slide"]}

The loss of {cite:p}`schluter2022nsa` (eq. {eq}`loss`, see {doc}`06_training`) is
{glue:text}`loss_value:.2f` on {glue:text}`n_images` images:

$$
a &= b \\\\
  &= c
$$ (loss)

```{math}
:label: other
x = y
```

+++

More untagged prose.

```{code-cell} ipython3
:tags: [slide]

print("log line")
show_figure()
```

```{code-cell} ipython3
UNTAGGED_CODE = 1
```

+++ {"tags": ["slide"]}

## Numbers

Only {glue:text}`missing_value` is here, so this slide is dropped.
"""

PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="  # 1 x 1


@pytest.fixture()
def chapter(tmp_path):
    """A chapter .md, its executed notebook (with outputs) and its glue file, as `make book` writes them."""
    md = tmp_path / "03_chapter.md"
    md.write_text(PAGE)
    code = nbformat.v4.new_code_cell
    executed = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_markdown_cell("# A chapter"),
        code('print("log line")\nshow_figure()', outputs=[
            nbformat.v4.new_output("stream", name="stdout", text="log line\n"),
            nbformat.v4.new_output("display_data", data={"image/png": PNG, "text/plain": "<Figure>"})]),
        code("UNTAGGED_CODE = 1", outputs=[nbformat.v4.new_output("stream", name="stdout", text="untagged output\n")]),
    ])
    path = tmp_path / "03_chapter.ipynb"
    nbformat.write(executed, path)
    glue = {"loss_value": {"output_type": "display_data", "data": {"text/plain": "0.123456"}},
            "n_images": {"output_type": "display_data", "data": {"text/plain": "42"}}}
    (tmp_path / "03_chapter.glue.json").write_text(json.dumps(glue))
    return md, path


def test_deck_keeps_tagged_cells_in_order_with_myst_made_plain(chapter, capsys):
    nb = slides.deck(*chapter)
    kinds = [(c.cell_type, c.metadata["slideshow"]["slide_type"]) for c in nb.cells]
    # title, the equation slide, then the figure slide (its heading, then the outputs); the numbers
    # slide is dropped because a glued value is missing
    assert kinds == [("markdown", "slide"), ("markdown", "slide"), ("markdown", "slide"), ("code", "-")]
    title, equation, heading, figure = nb.cells
    assert title.source.startswith("# A chapter") and "name the goal" in title.source
    assert equation.source.startswith("### The equation\n")
    assert "(Schlüter et al. 2022)" in equation.source and "Training on a GPU" in equation.source
    assert "0.12 on 42 images" in equation.source and "eq. (loss)" in equation.source
    assert "\\begin{split}" in equation.source and "\\tag{loss}" in equation.source
    assert "$$\nx = y\n$$" in equation.source
    assert not re.search(r"\{[a-z:]+\}`|```|^:::", equation.source, flags=re.M)
    assert "untagged" not in "".join(c.source for c in nb.cells).lower()
    assert heading.source == "### The equation"
    assert [o.output_type for o in figure.outputs] == ["display_data"]  # the log line is left out
    assert "missing_value" in capsys.readouterr().err


def test_exported_deck_hides_code_and_loads_nothing_online(chapter):
    html = slides.export(slides.deck(*chapter))
    assert html.count("<section") == 2 * 3  # three slides, each a slide and a subslide section
    assert "show_figure" not in html and "UNTAGGED_CODE" not in html
    assert f"data:image/png;base64,{PNG}" in html
    loaded = re.findall(r"<(?:script|link)\b[^>]*?(?:src|href)=[\"']([^\"']+)", html)
    assert loaded and not [u for u in loaded if "://" in u], loaded
    assert "reveal.js/dist/reveal.js" in html and "mathjax/MathJax.js" in html


def test_each_figure_or_table_gets_its_own_slide_printed_lines_share_one():
    stream = [nbformat.v4.new_output("stream", name="stdout", text=f"line {k}\n") for k in range(2)]
    figure = [nbformat.v4.new_output("display_data", data={"image/png": PNG}) for _ in range(2)]
    table = nbformat.v4.new_output("display_data", data={"text/markdown": "| a |\n|---|\n| 1 |"})
    assert slides._groups(stream + figure + [table]) == [stream, figure[:1], figure[1:], [table]]


def test_tagged_cell_missing_from_the_executed_notebook_fails(chapter):
    md, executed = chapter
    md.write_text(PAGE.replace("show_figure()", "show_other_figure()"))
    with pytest.raises(SystemExit, match="run `make book`"):
        slides.deck(md, executed)


DEPS = ROOT / "_build" / "slides-deps" / "node_modules"


@pytest.mark.skipif(not Path(slides.CHROMIUM).exists() or not (DEPS / "reveal.js").is_dir(),
                    reason="needs Chromium and the npm packages that `make slides` installs")
def test_deck_renders_offline_in_chromium(chapter, tmp_path):
    out = tmp_path / "slides"
    slides.copy_assets(DEPS, out)
    deck = out / "03_chapter.slides.html"
    deck.write_text(slides.export(slides.deck(*chapter)))
    assert slides.problems(deck) == []
    (out / "reveal.js" / "dist" / "reveal.js").unlink()
    assert "reveal.js did not initialise" in slides.problems(deck)
    shutil.rmtree(out)
