"""Check the built book's HTML for what renders badly in a browser (run after `jupyter-book build`).

It fails (exit code 1, one line per problem) on:

* a raw-pipe paragraph: a ``<p>`` whose text starts with ``|``, a Markdown table that was
  rendered as text (myst-nb renders ``text/markdown`` outputs as CommonMark unless
  ``nb_render_markdown_format: myst``);
* TeX that MathJax 3 rejects: ``\\tag`` inside ``split``/``aligned``/``gathered`` (Sphinx wraps a
  multi-line ``$$`` display in ``split``), unbalanced braces, unmatched ``\\begin``/``\\end``;
* a stray echo in a cell's output: a bare number, a quoted string, a NumPy scalar or a
  matplotlib object's repr (``glue`` without ``display=False``, a last line that is an expression);
* machine detail in a cell's output (printed text, a result or a Markdown table): a path of
  the machine that built the book (the checkout, the home folder, the temporary folder, ``/tmp/``)
  or its platform string (``Linux-6.1...-x86_64-with-glibc2.36``);
* an exercise's check (a cell tagged ``check``) whose output does not report that every test
  case passed: the book's own answer failed its check, or the check did not run.

With ``--mathjax NODE_MODULES`` (a folder holding the ``mathjax-full`` npm package) and
``node`` on the path, it also typesets every formula with MathJax 3 itself
(``tools/typeset_tex.js``) and fails on each one MathJax rejects, undefined macros included.

Usage: ``python tools/check_render.py [--mathjax NODE_MODULES] _build/html`` (the Makefile's
``book`` target runs it).
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

# A cell output whose whole text is one of these is an echo nobody meant to show.
STRAY = re.compile(r"""^(
      [-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?             # 3, 0.25, 1e-06
    | '[^'\n]*' | "[^"\n]*"                             # '0.1.0'
    | np\.(float|int|bool)\w*\(.*\) | (True|False|None)  # np.float64(0.5)
    | \[?<matplotlib\..*>\]? | Text\(.*\)                # <matplotlib.image.AxesImage at 0x...>
    | <Figure\ size.*>
)$""", re.VERBOSE | re.DOTALL)
MATH_ENVS = ("split", "aligned", "gathered")
PLATFORM = re.compile(r"\b(Linux|Darwin|macOS|Windows)-\d[\w.+-]*|-with-glibc\d|\bx86_64\b|\baarch64\b")


def machine_paths() -> list[str]:
    """Folders of this machine that no page should show: the checkout, home, the temporary folder."""
    found = {str(Path(__file__).resolve().parent.parent), str(Path.home()), tempfile.gettempdir(), "/tmp"}
    return sorted((f.rstrip("/") + "/" for f in found if len(f) > 1), key=len, reverse=True)


def leaks(text: str, paths: list[str]) -> list[str]:
    """The machine detail in one output's text (an empty list when there is none)."""
    found = [f"path {path!r}" for path in paths if path in text]
    found += [f"platform string {m.group(0)!r}" for m in PLATFORM.finditer(text)]
    return found


class _Collector(HTMLParser):
    """Collects paragraph starts, math sources and plain-text cell outputs of one page."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.paragraphs: list[str] = []
        self.math: list[str] = []
        self.display: list[bool] = []  # per formula: a display (div) or inline (span)
        self.outputs: list[str] = []
        self.shown: list[str] = []  # the whole text of every cell output, whatever its kind
        self.checks: list[str] = []  # the whole text of every exercise check cell (tag "check")
        self._stack: list[tuple[str, str | None]] = []  # (tag, what we collect inside it)
        self._text: list[str] = []
        self._shown: list[str] = []
        self._check: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag in ("br", "img", "meta", "link", "input", "hr", "col"):
            return
        classes = (dict(attrs).get("class") or "").split()
        kind = None
        if tag == "p":
            kind = "p"
        elif "math" in classes and tag in ("div", "span"):
            kind = "math"
            if not self._collecting():
                self.display.append(tag == "div")
        elif tag == "pre" and any(k == "text_plain" for _, k in self._stack):
            kind = "output"
        elif tag == "div" and "output" in classes and "text_plain" in classes:
            kind = "text_plain"
        elif "eqno" in classes:  # a numbered equation's "(7.1)" and its link, inside the math div
            kind = "skip"
        if tag == "div" and "tag_check" in classes:
            self._check = []
            self._stack.append((tag, "check"))
            return
        if tag == "div" and "cell_output" in classes and not self._in("cell_output"):
            self._shown = []
            self._stack.append((tag, "cell_output"))
            return
        if kind in ("p", "math", "output") and not self._collecting():
            self._text = []
        self._stack.append((tag, kind))

    def _collecting(self) -> bool:
        return any(k in ("p", "math", "output") for _, k in self._stack)

    def _in(self, kind: str) -> bool:
        return any(k == kind for _, k in self._stack)

    def handle_endtag(self, tag):
        while self._stack:
            top, kind = self._stack.pop()
            if kind in ("p", "math", "output") and not self._collecting():
                text = "".join(self._text)
                {"p": self.paragraphs, "math": self.math, "output": self.outputs}[kind].append(text)
            if kind == "check":
                self.checks.append("".join(self._check))
            if kind == "cell_output" and not self._in("cell_output"):
                self.shown.append("".join(self._shown))
            if top == tag:
                break

    def handle_data(self, data):
        if self._in("check"):
            self._check.append(data)
        if self._in("cell_output"):
            self._shown.append(data)
        if self._collecting() and not self._in("skip"):
            self._text.append(data)


def _brace_balance(tex: str) -> bool:
    """True when every ``{`` has its ``}`` (escaped ``\\{``, ``\\}`` do not count)."""
    depth = 0
    for token in re.findall(r"\\\\|\\[{}]|[{}]", tex):
        if token == "{":
            depth += 1
        elif token == "}":
            depth -= 1
            if depth < 0:
                return False
    return depth == 0


def tex_problems(tex: str) -> list[str]:
    """What in one formula MathJax 3 would reject (an empty list when it is fine)."""
    problems = []
    if not _brace_balance(tex):
        problems.append("unbalanced braces")
    begins = re.findall(r"\\begin\{(\w+\*?)\}", tex)
    ends = re.findall(r"\\end\{(\w+\*?)\}", tex)
    if sorted(begins) != sorted(ends):
        problems.append(f"\\begin {begins} does not match \\end {ends}")
    for env in MATH_ENVS:
        for body in re.findall(rf"\\begin\{{{env}\}}(.*?)\\end\{{{env}\}}", tex, re.DOTALL):
            if "\\tag" in body:
                problems.append(f"\\tag inside {env}")
    return problems


def strip_delimiters(tex: str) -> str:
    """The formula inside Sphinx's ``\\[...\\]`` or ``\\(...\\)`` (amsmath blocks have none)."""
    tex = tex.strip()
    if tex[:2] in ("\\[", "\\(") and tex[-2:] in ("\\]", "\\)"):
        return tex[2:-2]
    return tex


def typeset_problems(formulas: list[tuple[bool, str]], node_modules: Path) -> list[str]:
    """Typeset ``(display, tex)`` formulas with MathJax 3 in node; one message per rejected formula."""
    script = Path(__file__).with_name("typeset_tex.js")
    env = {**os.environ, "NODE_PATH": str(node_modules)}
    done = subprocess.run(["node", str(script)], input=json.dumps(formulas), capture_output=True, text=True,
                          env=env, check=False, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"MathJax (node {script.name}) failed: {done.stderr.strip()[-300:]}")
    return [f"MathJax rejects {formulas[i][1].strip()[:60]!r}: {message}" for i, message in json.loads(done.stdout)]


def page_problems(html: str, node_modules: Path | None = None) -> list[str]:
    """Every problem on one HTML page, each a short description (MathJax's own only with node_modules)."""
    page = _Collector()
    page.feed(html)
    problems = [f"raw Markdown table: {p.strip()[:60]!r}" for p in page.paragraphs if p.lstrip().startswith("|")]
    for tex in page.math:
        problems += [f"TeX ({what}): {tex.strip()[:60]!r}" for what in tex_problems(tex)]
    if node_modules is not None and page.math:
        problems += typeset_problems([(d, strip_delimiters(t)) for d, t in zip(page.display, page.math)],
                                     node_modules)
    problems += [f"stray output: {o.strip()[:60]!r}" for o in page.outputs if STRAY.match(o.strip())]
    paths = machine_paths()
    for text in page.shown:
        problems += [f"machine detail in an output: {leak}" for leak in leaks(text, paths)]
    for text in page.checks:
        # otter's text says "All test cases passed!", its HTML "ex-... passed!" and an emoji; a failure "❌"
        if not re.search(r"All test cases passed|[\w-]+ passed!", text) or "\u274c" in text:
            name = re.search(r"grader\.check\(\W*([\w-]+)", text)
            problems.append(f"exercise check {name.group(1) if name else '?'} did not pass: "
                            f"{' '.join(text.split())[-100:]!r}")
    return problems


def main(argv: list[str] | None = None) -> int:
    """Check every page under the HTML folder; print the problems; 0 when there are none."""
    args = list(sys.argv[1:] if argv is None else argv)
    node_modules = None
    if args[:1] == ["--mathjax"] and len(args) == 3:
        node_modules = Path(args[1])
        if not (node_modules / "mathjax-full").is_dir() or shutil.which("node") is None:
            print(f"check_render: no node or no {node_modules}/mathjax-full: MathJax itself is not run")
            node_modules = None
        args = args[2:]
    if len(args) != 1 or not Path(args[0]).is_dir():
        print("usage: check_render.py [--mathjax NODE_MODULES] HTML_DIR (the book's _build/html folder, "
              "built first)", file=sys.stderr)
        return 2
    root = Path(args[0])
    pages = sorted(p for p in root.rglob("*.html") if "_static" not in p.parts and "_sources" not in p.parts)
    count = 0
    for page in pages:
        for problem in page_problems(page.read_text(encoding="utf-8"), node_modules):
            print(f"{page.relative_to(root)}: {problem}")
            count += 1
    print(f"check_render: {len(pages)} pages, {count} problems"
          + ("" if node_modules is None else " (every formula typeset by MathJax)"))
    return 1 if count else 0


if __name__ == "__main__":
    sys.exit(main())
