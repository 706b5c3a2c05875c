"""The student edition: the book and its notebooks without the exercises' solutions (`make student`).

    python tools/student.py            # build _build/student/ from the executed main build, then check it
    python tools/student.py --check    # only check: no solution text in the student HTML and notebooks

Answer cells (tag ``answer``) reach the student notebooks with their solution cut out
(``nsa_tutorial.exercises.strip_solutions``) and are removed from the student pages, with
the outputs of the checks that report on them. The book is rebuilt by jupyter-book with sphinx-exercise's ``hide_solutions``, from the
same sources, with the outputs that `make book` stored in its execution cache
(``_build/.jupyter_cache``): nothing is executed again, so it takes a Sphinx build's time. Source copies, download and launch buttons are switched
off, as they would hand out the sources with their solutions. The notebooks come from
tools/notebooks.py with ``--student``. The check takes, from every solution in book/*.md, a
stretch of its plain text that occurs nowhere else in the chapter, and fails if any of
them appears in the student HTML or notebooks, or (so that it can fail) is missing from
the main build's HTML.
"""

from __future__ import annotations

import argparse
import html
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Optional

import jupytext
import yaml
from bs4 import BeautifulSoup

from nsa_tutorial.exercises import strip_solutions

sys.path.insert(0, str(Path(__file__).resolve().parent))
import notebooks  # noqa: E402  (tools/notebooks.py)

ROOT = Path(__file__).resolve().parents[1]
MAIN = ROOT / "_build"
OUT = ROOT / "_build" / "student"
SOLUTION = re.compile(r"^(:{3,})\{solution\}.*?\n(.*?)^\1\s*$", flags=re.M | re.S)


def _plain(text: str) -> str:
    """Whitespace collapsed, typographic quotes and dashes made ASCII (Sphinx's smartquotes)."""
    text = text.replace("\u2019", "'").replace("\u2018", "'").replace("\u201c", '"').replace("\u201d", '"')
    text = text.replace("\u2013", "--").replace("\u2014", "---").replace("\u00a0", " ")
    return re.sub(r"\s+", " ", text)


def solution_fragments(md_text: str, min_words: int = 5) -> List[str]:
    """One telling fragment per solution: the longest run of plain words (letters, spaces,
    commas) in its body that occurs nowhere in the page outside the solutions."""
    outside = _plain(SOLUTION.sub("", md_text))
    fragments = []
    for match in SOLUTION.finditer(md_text):
        body = re.sub(r"^:[\w-]+:.*$", "", match.group(2), flags=re.M)
        runs = sorted((r.strip(" ,") for r in re.findall(r"[A-Za-z][A-Za-z ,]+", _plain(body))), key=len, reverse=True)
        good = [r for r in runs if len(r.split()) >= min_words and r not in outside]
        if good:
            fragments.append(good[0])
    return fragments


def answer_fragments(md: Path) -> List[str]:
    """From each answer cell of ``md`` (tag ``answer``), its longest solution line (what
    ``strip_solutions`` cuts out of the student edition)."""
    fragments = []
    for cell in jupytext.read(md, fmt="md:myst").cells:
        if cell.cell_type == "code" and "answer" in cell.metadata.get("tags", []):
            kept = set(strip_solutions(cell.source).splitlines())
            cut = [line.split("#")[0].strip() for line in cell.source.splitlines() if line not in kept]
            fragments.append(_plain(max(cut, key=len)))
    return fragments


def all_fragments() -> Dict[str, List[str]]:
    return {md.name: solution_fragments(md.read_text()) + answer_fragments(md)
            for md in sorted((ROOT / "book").glob("*.md"))}


def remove_answers(html_dir: Path) -> int:
    """Delete the answer cells (and the checks' outputs, which report on them) from the built
    pages: their tags become the cells' CSS classes ``tag_answer`` and ``tag_check``."""
    removed = 0
    for page in html_dir.rglob("*.html"):
        soup = BeautifulSoup(page.read_text(), "html.parser")
        found = soup.select("div.tag_answer") + soup.select("div.tag_check div.cell_output")
        for element in found:
            element.decompose()
        if found:
            page.write_text(str(soup))
            removed += len(found)
    return removed


def html_text(folder: Path) -> str:
    """The visible text of every HTML page under ``folder`` plus the search index, plain."""
    parts = []
    for path in sorted(folder.rglob("*")):
        if path.suffix in (".html", ".js", ".txt", ".md", ".ipynb", ".py") and path.is_file():
            text = path.read_text(errors="replace")
            if path.suffix == ".html":
                text = html.unescape(re.sub(r"<[^>]+>", "", text))
            parts.append(text)
    return _plain("\n".join(parts))


def notebook_text(folder: Path) -> str:
    return _plain("\n".join("".join(c["source"]) for p in sorted(folder.glob("*.ipynb"))
                            for c in json.loads(p.read_text())["cells"]))


def check(student_html: Path, student_notebooks: Path, main_html: Optional[Path]) -> List[str]:
    """Problems found: solution text in the student edition, or missing from the main build."""
    problems = []
    for folder in (student_html, student_notebooks):
        if not folder.is_dir():
            problems.append(f"{folder} does not exist: build the student edition first")
    if problems:
        return problems
    texts = {"student HTML": html_text(student_html), "student notebooks": notebook_text(student_notebooks)}
    main = html_text(main_html) if main_html and main_html.is_dir() else None
    n = 0
    for page, fragments in all_fragments().items():
        for fragment in fragments:
            n += 1
            for where, text in texts.items():
                if fragment in text:
                    problems.append(f"{page}: solution text in the {where}: {fragment!r}")
            if main is not None and fragment not in main:
                problems.append(f"{page}: solution fragment not found in the main build, so the check "
                                f"cannot see it: {fragment!r}")
    if n == 0:
        problems.append("no solutions found in book/*.md: nothing was checked")
    return problems


def student_config() -> dict:
    """_config.yml for the student build: no execution, solutions hidden, no source copies."""
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    config["title"] = config["title"] + " (student edition)"
    # The main build's cache: the code cells are the same, so nothing runs again.
    config["execute"].update(execute_notebooks="cache", cache=str(MAIN / ".jupyter_cache"))
    config["only_build_toc_files"] = True
    config["launch_buttons"] = {}
    config.setdefault("html", {}).update(use_repository_button=False, use_download_button=False,
                                         use_edit_page_button=False)
    sphinx = config.setdefault("sphinx", {}).setdefault("config", {})
    sphinx.update(hide_solutions=True, html_copy_source=False, html_show_sourcelink=False)
    return config


def stage(src: Path) -> None:
    """The book's sources into ``src``; their outputs come from the main build's execution cache."""
    if not (MAIN / ".jupyter_cache").is_dir():
        raise SystemExit(f"{MAIN / '.jupyter_cache'} is missing: run `make book` first")
    shutil.rmtree(src, ignore_errors=True)
    (src / "book").mkdir(parents=True)
    for path in (ROOT / "book").iterdir():
        if path.is_file() and path.suffix != ".ipynb":
            shutil.copy2(path, src / "book" / path.name)
    (src / "nsa_tutorial").symlink_to(ROOT / "nsa_tutorial")  # literalinclude ../nsa_tutorial/...
    for name in ("_toc.yml", "_static"):
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, src / name)
        elif (ROOT / name).is_file():
            shutil.copy2(ROOT / name, src / name)
    (src / "_config.yml").write_text(yaml.safe_dump(student_config(), sort_keys=False))


def build(strict: bool = True) -> None:
    src = OUT / "src"
    stage(src)
    shutil.rmtree(OUT / "_build", ignore_errors=True)
    subprocess.run([str(Path(sys.executable).parent / "jupyter-book"), "build", str(src), "--path-output", str(OUT),
                    *(["--warningiserror"] if strict else []), "--keep-going", "--all"], check=True)
    remove_answers(OUT / "_build" / "html")
    notebooks.main(["--student", str(OUT / "notebooks")])


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only check an existing student edition")
    parser.add_argument("--allow-warnings", action="store_true",
                        help="build even with Sphinx warnings (e.g. from a partial main build)")
    args = parser.parse_args(argv)
    if not args.check:
        build(strict=not args.allow_warnings)
    problems = check(OUT / "_build" / "html", OUT / "notebooks", MAIN / "html")
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        return 1
    print(f"Student edition: {OUT / '_build' / 'html' / 'index.html'} and {OUT / 'notebooks'}, "
          f"no solution text in either ({sum(map(len, all_fragments().values()))} solutions checked)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
