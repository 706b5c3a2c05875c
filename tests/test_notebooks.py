"""tools/notebooks.py (the .ipynb generator), tools/student.py's check and tools/colab_check.py's rewrite."""

import re
import sys
from pathlib import Path

import nbformat
import pytest

TOOLS = Path(__file__).resolve().parents[1] / "tools"
sys.path.insert(0, str(TOOLS))
import colab_check  # noqa: E402
import notebooks  # noqa: E402
import student  # noqa: E402

PAGE = """\
# A page

Text with {doc}`06_training`, {doc}`the glossary <glossary>`, {cite:p}`schluter2022nsa`,
{cite:p}`tan2022fpi,tan2021pii`, {glue:text}`lr_last:.1e`, {py:func}`~nsa_tutorial.train.train`,
{term}`synthetic anomalies <synthetic anomaly>` and eq. {eq}`bce`:

$$
a = b
$$ (bce)

```{literalinclude} ../nsa_tutorial/training_set.py
:pyobject: SyntheticAnomalyDataset.pair
:language: python
```

:::{exercise}
:label: ex-a
Why?
:::

:::{solution} ex-a
:class: dropdown
Because the answer is hidden here.
:::

See {ref}`ex-a`.
"""


@pytest.fixture(scope="module")
def converter():
    return notebooks.Converter()


def convert(converter, text=PAGE, name="06_x.md"):
    return converter.markdown(text, {"file": name, "exercises": {"ex-a": "Exercise 6.1"}})


def test_roles_become_plain_markdown(converter):
    cells = convert(converter)
    text = "\n".join(c.source for c in cells if c.cell_type == "markdown")
    assert not re.search(r"\{[a-z:]+\}`|^:::|^```\{", text, flags=re.M)
    assert "[Training on a GPU](https://colab.research.google.com/github/nsa-tutorial/nsa-tutorial/blob/main/book/06_training.ipynb)" in text
    assert "[the glossary](https://github.com/nsa-tutorial/nsa-tutorial/blob/main/book/glossary.md)" in text
    assert "(Schlüter et al. 2022)" in text and "(Tan et al. 2022; Tan et al. 2021)" in text
    assert "`lr_last`" in text and "`train`" in text and "*synthetic anomalies*" in text
    assert "eq. (bce)" in text and "\\tag{bce}\n$$" in text
    assert "**Exercise 6.1.** Why?" in text and "See Exercise 6.1." in text
    assert "<details><summary>Solution</summary>" in text and "hidden here" in text


def test_literalinclude_becomes_a_getsource_cell_that_runs(converter, capsys):
    code = [c for c in convert(converter) if c.cell_type == "code"]
    assert len(code) == 1
    exec(code[0].source, {})
    assert capsys.readouterr().out.startswith("    def pair(")


def test_student_notebooks_drop_solutions():
    cells = notebooks.Converter(student=True).markdown(PAGE, {"file": "x.md", "exercises": {"ex-a": "Exercise 1"}})
    text = "\n".join(c.source for c in cells)
    assert "Why?" in text and "hidden here" not in text and "details" not in text


@pytest.mark.parametrize("bad", ["{unknownrole}`x`", ":::{note}\nhi\n:::", "```{figure} a.png\n```"])
def test_unknown_markup_is_an_error(converter, bad):
    with pytest.raises(ValueError, match="unknown"):
        convert(converter, bad)


def test_committed_notebooks_are_up_to_date():
    assert notebooks.main(["--check"]) == 0, "run `make notebooks`"


def test_solution_fragments_are_found_only_in_solutions():
    assert student.solution_fragments(PAGE) == ["Because the answer is hidden here"]
    # a solution sentence that the exercise repeats is no evidence of a leak: not used
    assert student.solution_fragments(PAGE.replace("Why?", "Why? Because the answer is hidden here.")) == []


def test_student_check_fails_on_a_leak_and_passes_without(tmp_path):
    leak, clean, nbs = tmp_path / "leak", tmp_path / "clean", tmp_path / "nb"
    for folder in (leak, clean, nbs):
        folder.mkdir()
    fragment = next(f for fs in student.all_fragments().values() for f in fs)
    (leak / "page.html").write_text(f"<p>{fragment.replace(' ', chr(10))}</p>")  # wrapped lines still count
    (clean / "page.html").write_text("<p>nothing</p>")
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("no solutions")]), nbs / "a.ipynb")
    assert any("solution text in the student HTML" in p for p in student.check(leak, nbs, None))
    assert student.check(clean, nbs, None) == []
    assert any("not found in the main build" in p for p in student.check(clean, nbs, clean))


def _install_cell(nb) -> list:
    return [c.source for c in nb.cells if c.cell_type == "code" and '"google.colab" in sys.modules' in c.source
            and "pip" in c.source]


def test_colab_check_rewrites_only_the_install_url(tmp_path):
    nb = nbformat.read(TOOLS.parent / "book" / "06_training.ipynb", as_version=4)
    before = _install_cell(nb)
    tag = f"v{colab_check.version()}"
    colab_check.point_install_at(nb, tmp_path, tag)
    after = _install_cell(nb)
    assert len(before) == len(after) == 1
    assert after[0] == colab_check.INSTALL.sub(tmp_path.as_uri(), before[0]) != before[0]
    assert f'"nsa-tutorial[course] @ {tmp_path.as_uri()}"' in after[0]
    with pytest.raises(ValueError, match="one install cell"):
        colab_check.point_install_at(nb, tmp_path, tag)  # the URL is gone now
    fresh = nbformat.read(TOOLS.parent / "book" / "06_training.ipynb", as_version=4)
    with pytest.raises(ValueError, match="pins"):
        colab_check.point_install_at(fresh, tmp_path, "v9.9.9")


def test_an_install_cell_that_cannot_install_says_so_in_one_line(tmp_path, monkeypatch):
    """On 'Colab', with a release that cannot be fetched, the cell stops with one line naming the
    package and pip's own error, instead of pip's log."""
    import types

    nb = nbformat.read(TOOLS.parent / "book" / "06_training.ipynb", as_version=4)
    missing = tmp_path / "no-such-release"
    colab_check.point_install_at(nb, missing, f"v{colab_check.version()}")
    monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    with pytest.raises(SystemExit) as stop:
        exec(_install_cell(nb)[0], {})
    message = str(stop.value)
    assert "\n" not in message and message.startswith("Could not install nsa-tutorial[course] @ file:")
    assert "ERROR" in message and len(message) < 400, message
    monkeypatch.delitem(sys.modules, "google.colab")
    exec(_install_cell(nb)[0], {})  # elsewhere the cell does nothing


def test_every_install_cell_pins_this_version_of_the_configured_repository():
    """The release checklist's one tag: each chapter installs v{__version__} from the repository
    that _config.yml names (what the launch buttons open), and the package says which."""
    import re

    import yaml

    import nsa_tutorial

    root = Path(__file__).resolve().parent.parent
    repository = yaml.safe_load((root / "_config.yml").read_text())["repository"]["url"]
    pattern = re.compile(r"git\+(https://github\.com/[\w.-]+/[\w.-]+)@(v[\w.]+)")
    chapters = sorted((root / "book").glob("*.md"))
    pins = {c.name: pattern.findall(c.read_text()) for c in chapters}
    installing = {name: found for name, found in pins.items() if found}
    assert len(installing) >= 10, f"only {sorted(installing)} have an install cell"
    for name, found in installing.items():
        assert set(found) == {(repository, f"v{nsa_tutorial.__version__}")}, (name, found)
    citation = yaml.safe_load((root / "CITATION.cff").read_text())
    assert citation["version"] == nsa_tutorial.__version__ and citation["repository-code"] == repository
