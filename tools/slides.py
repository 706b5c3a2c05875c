"""One reveal.js slide deck per chapter, from the notebooks `make book` executed (nothing runs again).

    python tools/slides.py --deps DIR      # write _build/slides/NN_name.slides.html + reveal.js, MathJax
    python tools/slides.py --check         # open every deck in headless Chromium; one line per problem
    python tools/slides.py --screenshot 01_poisson 3 5   # PNGs of slides 3 and 5, into _build/slides-shots/

Slides are chosen in the chapter's .md, nowhere else. The tag ``slide`` on a code cell
(``:tags: [slide]``) puts that cell's outputs (figures, tables, printed numbers; never its code)
under the title of its section, one slide per figure or table. A Markdown cell with the tag
(jupytext's ``+++ {"tags": ["slide"]}`` line before a paragraph, a plain ``+++`` after it to end
the cell) goes on a slide as it is. Every deck opens with the chapter's title and learning goals,
and keeps the page's order. The outputs come from ``_build/jupyter_execute/book/NN_name.ipynb``
(or, for a chapter myst-nb took from its cache, the cache), matched to the .md's code cells by
their source: a tag added after the last build works, a tagged cell edited since then is an error.

MyST in the slide copy becomes plain Markdown: ``{glue:text}`name:fmt``` becomes the value glued
in that build (a slide that needs a missing value is dropped, with a note), citations become
"(Author Year)", ``{doc}`` the chapter's title, other roles their text; ```{math}`` blocks and
``$$`` blocks with ``&`` become MathJax-ready ``$$``. reveal.js, MathJax 2 (what nbconvert's
template configures), require.js and jQuery are copied from DIR (npm packages, see the Makefile)
into ``_build/slides/``, so the folder works offline and can be zipped as it is.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import List, Optional

import jupytext
import nbformat
from jinja2 import DictLoader
from myst_nb.core.variables import format_plain_text
from nbconvert import SlidesExporter

import browser  # tools/browser.py: Chromium without the network
import notebooks  # tools/notebooks.py: its MyST -> Markdown conversion
from browser import CHROMIUM

ROOT = Path(__file__).resolve().parents[1]
EXECUTED = ROOT / "_build" / "jupyter_execute" / "book"
CACHE = ROOT / "_build" / ".jupyter_cache"
OUT = ROOT / "_build" / "slides"
SHOTS = ROOT / "_build" / "slides-shots"
# what the decks load, relative to _build/slides/ (MathJax: only the TeX -> CommonHTML parts)
ASSETS = {
    **{f"reveal.js/{p}": f"reveal.js/{p}" for p in (
        "dist/reveal.js", "dist/reveal.css", "dist/theme/white.css", "dist/theme/fonts/source-sans-pro",
        "plugin/notes/notes.js")},
    "requirejs/require.js": "lib/require.js", "jquery/dist/jquery.min.js": "lib/jquery.min.js",
    **{f"mathjax/{p}": f"mathjax/{p}" for p in (
        "MathJax.js", "config/TeX-AMS_CHTML-full.js", "config/Safe.js", "extensions", "jax/input/TeX",
        "jax/output/CommonHTML", "jax/element", "fonts/HTML-CSS/TeX/woff", "localization/en")},
}
TEMPLATE = """{%- extends 'index.html.j2' -%}
{% block html_head_js_mermaidjs %}{% endblock %}
{% block html_head_css %}<style>
.reveal .slides > section > section { max-height: 700px; overflow-y: auto; }
.reveal .jp-OutputArea-output img { max-height: 530px; width: auto; max-width: 100%; }
.reveal h1 { font-size: 1.8em; } .reveal h3 { font-size: 1.2em; margin-bottom: 0.4em; }
.reveal table { margin: 0 auto; font-size: 15px; }
.reveal .jp-RenderedImage { text-align: center; }
.reveal .jp-RenderedHTMLCommon td, .reveal .jp-RenderedHTMLCommon th { padding: 0.15em 0.5em; }
</style>{% endblock %}
"""


class SlideConverter(notebooks.Converter):
    """tools/notebooks.py's Markdown conversion, with glued values and plain chapter titles."""

    def __init__(self, glue: dict):
        super().__init__()
        self.glue = glue

    def role(self, name: str, text: str, ctx: dict) -> str:
        if name == "glue:text":
            key, _, fmt = text.rpartition(":") if ":" in text else (text, "", "")
            if key not in self.glue:
                raise KeyError(key)
            return format_plain_text(self.glue[key]["data"]["text/plain"], fmt)
        if name == "doc":
            label, target = notebooks._split_target(text)
            return label if label != target else self.titles.get(Path(target).name, target)
        return super().role(name, text, ctx)

    def slide_markdown(self, source: str, ctx: dict) -> str:
        source = re.sub(r"^(`{3,}|:{3,})\{math\}[^\n]*\n((?::[\w-]+:.*\n)*)(.*?)\n\1$", r"$$\n\3\n$$",
                        source, flags=re.S | re.M)
        text = "\n\n".join(c.source for c in self.markdown(source, ctx) if c.cell_type == "markdown")
        return re.sub(r"\$\$(.+?)\$\$", _display_math, text, flags=re.S)


def _display_math(m: re.Match) -> str:
    """A ``$$`` block with ``&`` or ``\\\\`` but no environment in ``split`` (as Sphinx does)."""
    tags = re.findall(r"\\tag\{[^}]*\}", m.group(1))
    body = re.sub(r"\\tag\{[^}]*\}", "", m.group(1)).strip()
    if ("&" in body or "\\\\" in body) and "\\begin" not in body:
        body = f"\\begin{{split}}{body}\\end{{split}}"
    return "$$\n" + body + "".join(tags) + "\n$$"


def _groups(outputs: list) -> List[list]:
    """One slide per figure, table or text block; printed lines that follow each other share one."""
    groups = []
    for out in outputs:
        if groups and out.output_type == "stream" and groups[-1][-1].output_type == "stream":
            groups[-1].append(out)
        else:
            groups.append([out])
    return groups


def _md(source: str) -> nbformat.NotebookNode:
    return nbformat.v4.new_markdown_cell(source, metadata={"slideshow": {"slide_type": "slide"}})


def code_cells(md: Path, executed: Path, cache: Path = CACHE) -> List[nbformat.NotebookNode]:
    """The executed code cells of ``md``. myst-nb 1.4 writes a notebook it took from its execution
    cache to ``executed`` without outputs; their latest cached execution (read only) has them."""
    cells = [c for c in nbformat.read(executed, as_version=4).cells if c.cell_type == "code"]
    if not any(c.outputs for c in cells) and cache.is_dir():
        from jupyter_cache import get_cache

        records = [r for r in get_cache(cache).list_cache_records() if Path(r.uri).resolve() == md.resolve()]
        if records:
            bundle = get_cache(cache).get_cache_bundle(max(r.pk for r in records))
            cells = [c for c in bundle.nb.cells if c.cell_type == "code"]
    return cells


def deck(md: Path, executed: Path, cache: Path = CACHE) -> nbformat.NotebookNode:
    """The slide notebook of one chapter: title and goals, then its tagged cells in page order."""
    glue_file = executed.with_suffix(".glue.json")
    conv = SlideConverter(json.loads(glue_file.read_text()) if glue_file.is_file() else {})
    labels = re.findall(r"^:{3,}\{exercise\}.*\n:label:\s*(\S+)", md.read_text(), flags=re.M)
    ctx = {"file": md.name, "exercises": {lab: f"Exercise {int(md.name[:2])}.{k}" for k, lab in enumerate(labels, 1)}}
    done = nbformat.read(executed, as_version=4)
    outputs = code_cells(md, executed, cache)
    source = jupytext.read(md, fmt="md:myst")
    title = notebooks._title(md)
    goals = re.search(r"^(:{3,})\{admonition\} Learning goals\n.*?^\1$", source.cells[0].source, flags=re.S | re.M)
    cells = [_md(f"# {title}\n\n" + (conv.slide_markdown(goals.group(0), ctx) if goals else ""))]
    section, k = title, 0
    for cell in source.cells:
        tagged = "slide" in cell.metadata.get("tags", [])
        if cell.cell_type == "markdown":
            if tagged:
                try:
                    text = conv.slide_markdown(cell.source, ctx)
                except KeyError as missing:
                    print(f"{md.name}: slide dropped, no glued value {missing}", file=sys.stderr)
                    continue
                text = re.sub(r"^#{1,2} ", "### ", text, flags=re.M)  # one heading size on every slide
                cells.append(_md(text if text.startswith("#") else f"### {section}\n\n{text}"))
            section = ([h.lstrip("#").strip() for h in re.findall(r"^#{2,3} .+$", cell.source, flags=re.M)]
                       or [section])[-1]
            section = conv.roles(section, ctx)
            continue
        # the executed notebook may lack code cells added to the .md since (untagged ones only)
        j = next((j for j in range(k, len(outputs)) if outputs[j].source == cell.source), None)
        first = (cell.source.strip().splitlines() or [""])[0]
        if j is None and tagged:
            raise SystemExit(f"{md.name}: the tagged cell `{first}` is not in {executed.name} as it is: "
                             "run `make book`")
        if j is not None:
            k = j + 1
        if tagged:
            kept = [o for o in outputs[j].outputs  # without errors and glued values (myst-nb hides both)
                    if o.output_type != "error" and "scrapbook" not in o.get("metadata", {})]
            if any(o.output_type != "stream" for o in kept):  # a figure or table: without the log lines
                kept = [o for o in kept if o.output_type != "stream"]
            if not kept:
                raise SystemExit(f"{md.name}: the tagged cell `{first}` has no outputs in {executed.name}")
            for group in _groups(kept):
                cells += [_md(f"### {section}"), nbformat.v4.new_code_cell(
                    cell.source, outputs=group, metadata={"slideshow": {"slide_type": "-"}})]
    nb = nbformat.v4.new_notebook(cells=cells, metadata={"title": title})
    nb.metadata.update({key: done.metadata[key] for key in ("kernelspec", "language_info") if key in done.metadata})
    return nb


def export(nb: nbformat.NotebookNode) -> str:
    exporter = SlidesExporter(
        extra_loaders=[DictLoader({"slides.j2": TEMPLATE})], template_file="slides.j2",
        reveal_url_prefix="reveal.js", reveal_theme="white",
        require_js_url="lib/require.js", jquery_url="lib/jquery.min.js",
        mathjax_url="mathjax/MathJax.js?config=TeX-AMS_CHTML-full,Safe",
        exclude_input=True, exclude_input_prompt=True, exclude_output_prompt=True)
    return exporter.from_notebook_node(nb)[0]


def copy_assets(deps: Path, out: Path) -> None:
    """reveal.js, MathJax, require.js and jQuery from the npm packages in ``deps`` into ``out``."""
    for src, dst in ASSETS.items():
        if not (deps / src).exists():
            raise SystemExit(f"{deps / src} is missing: `make slides` installs it from the npm registry")
        (out / dst).parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(out / dst, ignore_errors=True)
        (shutil.copytree if (deps / src).is_dir() else shutil.copy2)(deps / src, out / dst)


def build(deps: Path) -> int:
    chapters = sorted(p for p in (ROOT / "book").glob("[0-9][0-9]_*.md"))
    copy_assets(deps, OUT)
    links = []
    for md in chapters:
        nb = deck(md, EXECUTED / f"{md.stem}.ipynb")
        (OUT / f"{md.stem}.slides.html").write_text(export(nb))
        count = sum(c.metadata["slideshow"]["slide_type"] == "slide" for c in nb.cells)
        links.append(f'<li><a href="{md.stem}.slides.html">{nb.metadata.title}</a> ({count} slides)</li>')
        print(f"{md.stem}.slides.html: {count} slides")
    (OUT / "index.html").write_text("<!DOCTYPE html><meta charset='utf-8'><title>Slides</title>"
                                    f"<h1>Slides</h1><ul>{''.join(links)}</ul>\n")
    return 0


def chromium(url: str, *flags: str) -> subprocess.CompletedProcess:
    """Headless Chromium on ``url`` without the network, its log on stderr, 10 s of virtual time."""
    return browser.run(url, "--enable-logging=stderr", "--virtual-time-budget=10000", *flags)


def problems(deck_html: Path) -> List[str]:
    """What is wrong with one deck, as Chromium shows it (empty if nothing)."""
    html = deck_html.read_text()
    local = re.findall(r"<(?:script|link)\b[^>]*?(?:src|href)=[\"']([^\"'?#]+)", html)
    found = [f"{u} is missing" for u in local if "://" not in u and not (deck_html.parent / u).exists()]
    with tempfile.TemporaryDirectory() as tmp:  # the net log lists every request that left the page
        run = chromium(deck_html.as_uri(), "--dump-dom", f"--log-net-log={tmp}/net.json")
        events = json.loads(Path(tmp, "net.json").read_text())["events"]
    found += sorted({f"requests {e['params']['url']}" for e in events if "file://" in json.dumps(e)
                     and str(e.get("params", {}).get("url", "")).startswith(("http:", "https:"))})
    found += sorted({f"script error: {m}" for m in re.findall(r'CONSOLE[^"]*"(Uncaught[^"]*)"', run.stderr)})
    dom = run.stdout
    slides = dom.count("<section")
    if slides < 6 or slides != html.count("<section"):  # a slide is two nested sections
        found.append(f"{slides // 2} slides in the browser, {html.count('<section') // 2} in the file (>= 3 expected)")
    if not re.search(r'class="reveal[^"]*\bready\b', dom):
        found.append("reveal.js did not initialise")
    for img in re.findall(r"<img\b[^>]*>", dom):
        if not re.search(r'src="data:image/[^;"]+;base64,[A-Za-z0-9+/]', img):
            found.append(f"figure without embedded image: {img[:80]}")
    text = re.sub(r"<(script|style|pre)\b.*?</\1>", "", dom, flags=re.S)
    if "$" in re.sub(r"<(script|style|pre)\b.*?</\1>", "", html, flags=re.S) and "MathJax_CHTML" not in dom:
        found.append("MathJax typeset nothing")
    if "$$" in text or re.search(r'class="[^"]*\bmjx-merror|Math Processing Error', text):
        found.append("math left untypeset or with a TeX error")
    return found


def check() -> int:
    if not Path(CHROMIUM).exists():
        print(f"{CHROMIUM} not found: decks not checked", file=sys.stderr)
        return 1
    decks = sorted(OUT.glob("*.slides.html"))
    bad = [f"{d.name}: {p}" for d in decks for p in problems(d)] or ([] if decks else ["no decks in _build/slides"])
    print("\n".join(bad) or f"{len(decks)} decks checked in Chromium: all slides, figures and math render offline")
    return 1 if bad else 0


def screenshot(name: str, slides: List[int]) -> int:
    SHOTS.mkdir(parents=True, exist_ok=True)
    for n in slides:
        png = SHOTS / f"{name}-{n}.png"
        chromium(f"{(OUT / f'{name}.slides.html').as_uri()}#/{n}", f"--screenshot={png}", "--window-size=1280,800")
        print(png)
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--deps", type=Path, default=ROOT / "_build/slides-deps/node_modules",
                        help="node_modules with reveal.js, mathjax, requirejs, jquery")
    parser.add_argument("--check", action="store_true", help="check the decks in headless Chromium")
    parser.add_argument("--screenshot", nargs="+", metavar=("DECK", "SLIDE"), help="PNGs of a deck's slides")
    args = parser.parse_args(argv)
    if args.check:
        return check()
    if args.screenshot:
        return screenshot(args.screenshot[0], [int(n) for n in args.screenshot[1:]] or [0])
    return build(args.deps)


if __name__ == "__main__":
    sys.exit(main())
