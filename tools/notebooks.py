"""Generate the committed .ipynb of every chapter from its MyST .md (what Colab opens).

    python tools/notebooks.py            # write book/*.ipynb
    python tools/notebooks.py --check    # exit 1, naming the files, if a committed .ipynb is stale
    python tools/notebooks.py --student DIR   # notebooks without solutions, into DIR

The .md is the source. jupytext turns it into cells; then the Markdown is made readable
without Sphinx: MyST roles become plain Markdown ({doc} -> a link that opens the chapter on
Colab, {cite:p} -> "(Author Year)" from book/references.bib, {glue:text} -> the glued name,
which the cell prints as ``name = value`` outside a book build), exercises become bold
paragraphs with their solution in a collapsed <details> block, and every
``literalinclude`` of package code becomes a code cell that prints that code with
``inspect.getsource``. A role or directive it does not know is an error, so none reaches a
notebook as raw text.
"""

from __future__ import annotations

import argparse
import hashlib
import re
import sys
import unicodedata
from pathlib import Path
from typing import Dict, List, Optional

import jupytext
import nbformat
import yaml

from nsa_tutorial.exercises import strip_solutions

ROOT = Path(__file__).resolve().parents[1]
BOOK = ROOT / "book"
KEEP_METADATA = ("accelerator", "colab", "kernelspec")
NOTE = ("*This notebook is generated from the book's page `book/{name}.md`. Numbers that the "
        "text refers to appear as `names`; the code cells print them (`name = value`).*")


def chapters() -> List[Path]:
    """The .md pages that are notebooks (they declare a kernel)."""
    return sorted(p for p in BOOK.glob("*.md") if "kernelspec:" in p.read_text().split("\n---", 1)[0])


def bib_labels(bib: Path) -> Dict[str, tuple]:
    """``key -> (authors as in a citation, year)`` from a BibTeX file (first author's surname)."""
    out = {}
    for key, body in re.findall(r"@\w+\{([^,]+),(.*?)\n\}", bib.read_text(), flags=re.S):
        author = re.search(r"author\s*=\s*\{(.*)\},?\s*$", body, flags=re.M).group(1)
        year = re.search(r"year\s*=\s*\{?(\d{4})", body).group(1)
        names = [a.split(",")[0].strip() for a in author.split(" and ")]
        names = [_tex_to_text(n) for n in names]
        who = names[0] if len(names) == 1 else (" and ".join(names) if len(names) == 2 else f"{names[0]} et al.")
        out[key.strip()] = (who, year)
    return out


def _tex_to_text(name: str) -> str:
    accents = {'"': "\u0308", "'": "\u0301", "`": "\u0300", "^": "\u0302", "~": "\u0303"}
    name = re.sub(r"\{\\(.)(\w)\}", lambda m: m.group(2) + accents.get(m.group(1), ""), name)
    return unicodedata.normalize("NFC", name.replace("{", "").replace("}", ""))


class Converter:
    """Rewrites one book's MyST Markdown into notebook Markdown (see the module docstring)."""

    def __init__(self, student: bool = False):
        self.student = student
        self.bib = bib_labels(BOOK / "references.bib")
        config = yaml.safe_load((ROOT / "_config.yml").read_text())
        repo = config["repository"]["url"].rstrip("/").removeprefix("https://github.com/")
        branch = config["repository"].get("branch", "main")
        self.colab = f"https://colab.research.google.com/github/{repo}/blob/{branch}/book/"
        self.github = f"https://github.com/{repo}/blob/{branch}/book/"
        self.notebooks = {p.stem for p in chapters()}
        self.titles = {p.stem: _title(p) for p in BOOK.glob("*.md")}

    # ------------------------------------------------------------------ roles
    def role(self, name: str, text: str, ctx: dict) -> str:
        label, target = _split_target(text)
        if name == "doc":
            stem = Path(target).name
            url = (self.colab + stem + ".ipynb") if stem in self.notebooks else (self.github + stem + ".md")
            return f"[{label if label != target else self.titles.get(stem, stem)}]({url})"
        if name in ("cite", "cite:p", "cite:t"):
            refs = [self.bib[k.strip()] for k in target.split(",")]
            if name == "cite:t":
                return "; ".join(f"{who} ({year})" for who, year in refs)
            return "(" + "; ".join(f"{who} {year}" for who, year in refs) + ")"
        if name in ("glue:text", "glue", "glue:"):
            return f"`{target.split(':')[0]}`"
        if name in ("py:func", "py:class", "py:meth", "py:mod", "py:obj"):
            shown = target.lstrip("~").split(".")[-1] if target.startswith("~") else target
            return f"`{shown}`"
        if name == "term":
            return f"*{label}*"
        if name == "eq":
            return f"({target})"
        if name == "ref":
            return ctx["exercises"].get(target, label)
        raise ValueError(f"unknown MyST role {{{name}}}`{text}` in {ctx['file']}")

    def roles(self, text: str, ctx: dict) -> str:
        return re.sub(r"\{([a-z:]+)\}`([^`]*)`", lambda m: self.role(m.group(1), m.group(2), ctx), text)

    # ------------------------------------------------------------------ cells
    def markdown(self, source: str, ctx: dict) -> List[nbformat.NotebookNode]:
        """One Markdown cell of the .md as notebook cells (literalincludes become code cells)."""
        cells, text = [], []
        lines = source.split("\n")
        i = 0
        while i < len(lines):
            line = lines[i]
            m = re.match(r"^(:{3,})\{(exercise|solution)\}\s*(.*)$", line)
            if line.startswith("```{literalinclude}"):
                end = lines.index("```", i + 1)
                cells += self._flush(text, ctx) + [self._include(line, lines[i + 1:end])]
                text, i = [], end + 1
                continue
            if m:
                end = next(j for j in range(i + 1, len(lines)) if lines[j] == m.group(1))
                text += self._exercise(m.group(2), lines[i + 1:end], ctx)
                i = end + 1
                continue
            box = re.match(r"^(:{3,})\{admonition\}\s*(.*)$", line)
            if box:  # a titled box: its title in bold, then its text
                end = next(j for j in range(i + 1, len(lines)) if lines[j] == box.group(1))
                body = [b for b in lines[i + 1:end] if not re.match(r"^:[\w-]+:", b)]
                text += [f"**{box.group(2)}**", "", *body]
                i = end + 1
                continue
            if line.startswith("```{nb-exec-table}"):  # execution times exist only in a built book
                text.append("*(The table of each page's run time is in the rendered book.)*")
                i = lines.index("```", i + 1) + 1
                continue
            directive = re.match(r"^(`{3,}|:{3,})\{([\w-]+)\}", line)
            if directive:
                raise ValueError(f"unknown directive {{{directive.group(2)}}} in {ctx['file']}")
            text.append(re.sub(r"^\$\$\s*\((.+)\)\s*$", r"\\tag{\1}\n$$", line))
            i += 1
        return cells + self._flush(text, ctx)

    def _flush(self, text: List[str], ctx: dict) -> List[nbformat.NotebookNode]:
        body = self.roles("\n".join(text), ctx).strip("\n")
        return [nbformat.v4.new_markdown_cell(body)] if body.strip() else []

    def _exercise(self, kind: str, body: List[str], ctx: dict) -> List[str]:
        options = {}
        while body and re.match(r"^:[\w-]+:", body[0]):
            key, _, value = body.pop(0)[1:].partition(":")
            options[key] = value.strip()
        if kind == "exercise":
            return [f"**{ctx['exercises'][options['label']]}.** " + (body[0] if body else "")] + body[1:]
        if self.student:
            return []
        return ["<details><summary>Solution</summary>", "", *body, "", "</details>"]

    @staticmethod
    def _include(line: str, options: List[str]) -> nbformat.NotebookNode:
        path = line.split("}", 1)[1].strip()
        opts = dict(re.match(r"^:([\w-]+):\s*(.*)$", o).groups() for o in options if o.strip())
        if "pyobject" not in opts or not path.startswith("../nsa_tutorial/"):
            raise ValueError(f"literalinclude of {path} needs :pyobject: and a file of the package")
        module = "nsa_tutorial." + Path(path).stem
        source = f"import inspect\n\nimport {module}\n\nprint(inspect.getsource({module}.{opts['pyobject']}))"
        return nbformat.v4.new_code_cell(source)

    # ------------------------------------------------------------------ notebook
    def notebook(self, md: Path) -> nbformat.NotebookNode:
        nb = jupytext.read(md, fmt="md:myst")
        prefix = re.match(r"^(\d+)_", md.name)
        labels = re.findall(r"^:{3,}\{exercise\}.*\n:label:\s*(\S+)", md.read_text(), flags=re.M)
        number = (lambda k: f"{int(prefix.group(1))}.{k}") if prefix else str
        ctx = {"file": md.name, "exercises": {lab: f"Exercise {number(k)}" for k, lab in enumerate(labels, 1)}}
        cells = []
        for cell in nb.cells:
            if cell.cell_type == "markdown":
                cells += self.markdown(cell.source, ctx)
            else:
                tags = cell.metadata.get("tags")
                # an exercise's answer cell: the student edition gets it with the solution cut out
                source = strip_solutions(cell.source) if self.student and "answer" in (tags or []) else cell.source
                cells.append(nbformat.v4.new_code_cell(source, metadata={"tags": tags} if tags else {}))
        cells.insert(1, nbformat.v4.new_markdown_cell(NOTE.format(name=md.stem)))
        for k, cell in enumerate(cells):
            cell["id"] = hashlib.sha1(f"{md.stem}:{k}".encode()).hexdigest()[:8]
        out = nbformat.v4.new_notebook(cells=cells)
        out.metadata = {k: nb.metadata[k] for k in KEEP_METADATA if k in nb.metadata}
        return out


def _split_target(text: str) -> tuple:
    m = re.match(r"^(.*?)\s*<([^>]+)>$", text)
    return (m.group(1), m.group(2)) if m else (text, text)


def _title(md: Path) -> str:
    m = re.search(r"^# (.+)$", md.read_text(), flags=re.M)
    return m.group(1).strip() if m else md.stem


def render(md: Path, student: bool = False) -> str:
    """The .ipynb text for ``md``, as committed."""
    return nbformat.writes(Converter(student).notebook(md)) + "\n"


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="fail if a committed .ipynb is stale")
    parser.add_argument("--student", type=Path, metavar="DIR", help="write notebooks without solutions to DIR")
    args = parser.parse_args(argv)
    stale = []
    for md in chapters():
        target = (args.student / md.with_suffix(".ipynb").name) if args.student else md.with_suffix(".ipynb")
        text = render(md, student=bool(args.student))
        if args.check:
            if not target.is_file() or target.read_text() != text:
                stale.append(target.name)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(".ipynb.tmp")
        tmp.write_text(text)
        tmp.replace(target)
    if stale:
        print(f"stale notebooks (run `python tools/notebooks.py`): {', '.join(stale)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
