"""The exercises' self-checks (nsa_tutorial/exercises.py, nsa_tutorial/checks/): the book's answer
cells pass them, the student edition's untouched cells fail every one, a deliberately wrong answer
fails each with its message, and the instructor's grading command writes the table."""

import csv
import re
import sys
from pathlib import Path

import jupytext
import nbformat
import pytest

otter = pytest.importorskip("otter")

from nsa_tutorial import exercises  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import notebooks  # noqa: E402  (tools/notebooks.py: the student edition's notebooks)

# What a chapter defined before its answer cell, where the answer uses it (chapter 07's example).
CONTEXT = {"ex-evaluation-2": '''
import numpy as np
from nsa_tutorial.metrics import au_pro, pixel_auroc
masks = np.zeros((3, 24, 24), bool)
masks[1, 3:9, 4:12] = True
masks[1, 16:19, 17:20] = True
masks[2, 10:20, 8:11] = True
'''}

# One deliberately wrong answer per check, and a piece of the message it must fail with.
WRONG = {
    "ex-poisson-1": ("import numpy as np\nfrom skimage import data\nfrom nsa_tutorial.poisson import seamless_clone\n"
                     "dst = data.camera()[100:200, 100:200]\nsrc = dst + np.uint8(100)\n"
                     "mask = np.zeros(dst.shape, bool); mask[20:80, 20:80] = True\n"
                     "out = seamless_clone(src, dst, mask, (50, 50))", "overflow"),
    "ex-poisson-2": ("import numpy as np\nfrom nsa_tutorial.poisson import guidance_divergence\n"
                     "def mixed_divergence(src, dst):\n    return guidance_divergence(src, dst, 'normal')",
                     "differ from eq. 4"),
    "ex-patches-1": ("from scipy import integrate, stats\ndef mean_relative_side(lo, hi):\n"
                     "    g = stats.gamma(a=2, scale=0.1)\n"
                     "    return integrate.quad(lambda r: (0.06 + r) * g.pdf(r), lo - 0.06, hi - 0.06)[0]",
                     "against the mean of 400,000 draws: off by"),
    "ex-patches-2": ("def p_cut(u, w_min):\n    return u", "against 8000 patches from sample_source_rect: off by"),
    "ex-patches-4": ("import numpy as np\ndef resized_hw_reference(r, patch_hw, shape, config):\n"
                     "    (h, w), (height, width) = patch_hw, shape\n"
                     "    r = float(np.clip(r, config.s_min, config.s_max))\n"
                     "    upper = min(r, config.w_max * width / w, config.h_max * height / h)\n"
                     "    s = max(config.w_min * width / w, config.h_min * height / h, upper)\n"
                     "    return max(round(s * h), 3), max(round(s * w), 3)", "draws differ from size_clip='reference'"),
    "ex-labels-1": ("import numpy as np\ndef change_at(config, p):\n    return config.y0 + np.log(p / (1 - p))",
                    "the logistic label at your change_at"),
    "ex-synthesis-1": ("count_pmf = [1 / 2, 1 / 4, 1 / 8, 1 / 8]\nmean_count = 1 / 2 + 2 / 4 + 3 / 8 + 4 / 8",
                       "against its frequency in 500 samples of make_anomaly"),
    "ex-synthesis-3": ("x_d, x_s1, a1, x_s2, a2 = 100, 200, 0.5, 180, 0.6", "the two blended pixels are"),
    "ex-model-1": ("saved = 64 * 7 * 7", "does not match the parameter counts"),
    "ex-model-2": ("accepted_sizes = [s for s in range(200, 301) if s % 16 == 0]\ngrid_256 = (8, 8)",
                   "your list disagrees with the model"),
    "ex-evaluation-2": ("m = masks.astype(float)\npixel, pro = 1.0, 1.0", "the small region (9 pixels) is found"),
    "ex-ablations-1": ("expected_patches = 1 + 1 / 2 + 1 / 4", "against the mean count of 500 samples"),
    "ex-ablations-3": ("most_helped, most_hurt = 'cable', 'carpet'", "D helps"),
}


def answer_cells():
    """{exercise: source of its answer cell} from the chapters, checked to sit right before its check cell."""
    found = {}
    for md in sorted((ROOT / "book").glob("*.md")):
        cells = [c for c in jupytext.read(md, fmt="md:myst").cells if c.cell_type == "code"]
        for cell, after in zip(cells, cells[1:]):
            if "answer" in cell.metadata.get("tags", []):
                name = exercises.CHECK_CALL.search(after.source)
                assert name and "check" in after.metadata.get("tags", []), f"{md.name}: an answer cell without its check"
                found[name.group(1)] = cell.source
    return found


ANSWERS = answer_cells()


def run(name, source):
    env = {}
    exec(CONTEXT.get(name, ""), env)
    exec(source, env)
    return exercises.result(name, exercises.new_grader().check(name, env))


@pytest.fixture(autouse=True)
def _otter_log_elsewhere(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # grader.check writes .OTTER_LOG into the working directory


def test_every_check_has_an_answer_cell_and_a_wrong_answer():
    assert sorted(ANSWERS) == exercises.names() == sorted(WRONG)
    assert len(exercises.names()) >= 13


@pytest.mark.parametrize("name", exercises.names())
def test_the_books_answer_passes(name):
    assert run(name, ANSWERS[name]) == (True, "passed")


def student_answer_cells():
    """{exercise: its answer cell in the student edition's notebook} (tools/notebooks.py --student)."""
    found = {}
    for md in notebooks.chapters():
        cells = [c for c in notebooks.Converter(student=True).notebook(md).cells if c.cell_type == "code"]
        for cell, after in zip(cells, cells[1:]):
            if "answer" in cell.metadata.get("tags", []):
                found[exercises.CHECK_CALL.search(after.source).group(1)] = cell.source
    return found


@pytest.fixture(scope="module")
def student_cells():
    return student_answer_cells()


@pytest.mark.parametrize("name", exercises.names())
def test_the_untouched_student_cell_fails(name, student_cells):
    student = student_cells[name]
    assert "SOLUTION" not in student and student != ANSWERS[name]
    assert student == exercises.strip_solutions(ANSWERS[name])
    passed, message = run(name, student)
    assert not passed
    assert "still ..." in message or "returned None" in message, message


@pytest.mark.parametrize("name", exercises.names())
def test_a_wrong_answer_fails_with_its_message(name):
    code, expected = WRONG[name]
    passed, message = run(name, code)
    assert not passed
    assert expected in message, message
    assert "SOLUTION" not in message


def test_strip_solutions_follows_otters_markers():
    source = ("import numpy as np\n\ndef f(x):\n    # BEGIN SOLUTION\n    y = x + 1\n    return y\n    # END SOLUTION\n"
              "a = f(1)  # SOLUTION\nb[0] = 2  # SOLUTION\nd, e = 1, 2  # SOLUTION\nc = 3\n")
    assert exercises.strip_solutions(source) == "import numpy as np\n\ndef f(x):\n    ...\na = ...\nd = e = ...\nc = 3"
    with pytest.raises(ValueError, match="END SOLUTION"):
        exercises.strip_solutions("# BEGIN SOLUTION\nx = 1\n")


def test_the_failure_message_names_the_property_and_the_miss():
    passed, message = run("ex-labels-1", "def change_at(config, p):\n    return config.y0")
    assert not passed
    assert re.search(r"logistic label at your change_at\(config, 0\.1\).*off by \d", message), message


def _notebook(path, answer):
    cells = [nbformat.v4.new_code_cell("from nsa_tutorial.exercises import new_grader\ngrader = new_grader()"),
             nbformat.v4.new_code_cell(answer), nbformat.v4.new_code_cell('grader.check("ex-model-1")')]
    nbformat.write(nbformat.v4.new_notebook(cells=cells, metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                                                   "language": "python"}}), path)


def test_grade_writes_one_row_per_student_and_exercise(tmp_path):
    folder = tmp_path / "submissions"
    folder.mkdir()
    _notebook(folder / "ada.ipynb", "saved = 6272")
    _notebook(folder / "bob.ipynb", "saved = ...")
    _notebook(folder / "cy.ipynb", "raise RuntimeError('my cell fails')\nsaved = 1")
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    assert exercises.main(["grade", str(folder), "--output", str(tmp_path / "grades.csv")]) == 0
    rows = list(csv.DictReader((tmp_path / "grades.csv").open()))
    assert [(r["student"], r["exercise"], r["passed"]) for r in rows] == [
        ("ada", "ex-model-1", "yes"), ("bob", "ex-model-1", "no"), ("cy", "ex-model-1", "no")]
    assert "still ..." in rows[1]["message"]
    assert "saved" in rows[2]["message"]  # the cell failed before it defined saved
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before  # submissions untouched


def test_grade_rejects_a_folder_without_notebooks(tmp_path, capsys):
    assert exercises.main(["grade", str(tmp_path / "missing")]) == 2
    assert exercises.main(["grade", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(line.startswith("error: ") and "expected a folder of student notebooks" in line
                                 for line in err)
