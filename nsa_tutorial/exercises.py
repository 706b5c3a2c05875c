"""Self-checks for the book's code exercises, with otter-grader, and the instructor's grading command.

In a chapter, after the answer cell of an exercise::

    from nsa_tutorial.exercises import new_grader
    grader = new_grader()
    ...
    grader.check("ex-poisson-2")

``grader.check`` runs the exercise's checks (``nsa_tutorial/checks/<name>.py``, otter's
exception-based test files) on the names the answer cell defined, and prints which property
failed and by how much, never the solution. The checks test properties of an answer (agreement
with the package's tested functions or with a simulation of the process the exercise describes,
bounds, invariants), not equality with our solution's output.

An instructor grades a folder of student notebooks with one command::

    python -m nsa_tutorial.exercises grade SUBMISSIONS/ --output grades.csv

It executes each notebook (quick mode) in a fresh kernel, in a temporary working folder (the
submissions are only read), runs every check that the notebook calls, and writes one row per
student and exercise: student, exercise, passed, message.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import re
import sys
import tempfile
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence

CHECKS = Path(__file__).resolve().parent / "checks"
CHECK_CALL = re.compile(r"""grader\.check\(\s*["']([\w-]+)["']\s*\)""")
_RESULTS = "nsa-tutorial-check-results:"


def names() -> List[str]:
    """The exercises that have checks."""
    return sorted(p.stem for p in CHECKS.glob("ex-*.py"))


def strip_solutions(source: str) -> str:
    """An answer cell as the student edition hands it out (otter assign's markers).

    A line ending in ``# SOLUTION`` keeps its assignment target and loses its value
    (``x = f(y)  # SOLUTION`` becomes ``x = ...``, ``x, y = f()  # SOLUTION`` becomes ``x = y = ...``;
    any other such line goes), and the lines from
    ``# BEGIN SOLUTION`` to ``# END SOLUTION`` become one ``...`` at the marker's indent.
    """
    out, inside = [], False
    for line in source.splitlines():
        stripped = line.strip()
        indent = line[: len(line) - len(line.lstrip())]
        if stripped == "# BEGIN SOLUTION":
            inside = True
            out.append(indent + "...")
        elif stripped == "# END SOLUTION":
            inside = False
        elif inside:
            continue
        elif stripped.endswith("# SOLUTION"):
            target = re.match(r"\s*([\w, ]+?)\s*=[^=]", line)
            if target:  # x, y = f()  # SOLUTION  ->  x = y = ...
                out.append(indent + " = ".join(n.strip() for n in target.group(1).split(",")) + " = ...")
        else:
            out.append(line)
    if inside:
        raise ValueError("a # BEGIN SOLUTION without its # END SOLUTION")
    return "\n".join(out)


def new_grader():
    """An otter ``Notebook`` that finds this package's checks (``grader.check(name)``)."""
    import otter

    return otter.Notebook(tests_dir=str(CHECKS))


# Helpers for the check files: each raises an AssertionError that names the property and the size
# of the miss.

def answered(name: str, value):
    """``value``, unless the answer cell still holds the placeholder ``...`` (or ``None``)."""
    if value is Ellipsis or value is None:
        if name.endswith(")"):
            raise AssertionError(f"{name} returned {'...' if value is Ellipsis else 'None'}: "
                                 "write the function's body in the exercise's cell and run it")
        raise AssertionError(f"{name} is still {'...' if value is Ellipsis else 'None'}: "
                             "write your answer in the exercise's cell and run it")
    return value


def near(what: str, got: float, want: float, tol: float) -> None:
    """``got`` within ``tol`` of ``want``; the message says by how much it is off."""
    try:
        diff = abs(float(got) - float(want))
    except (TypeError, ValueError):
        raise AssertionError(f"{what}: expected a number, got {type(got).__name__}") from None
    if not diff <= tol:
        raise AssertionError(f"{what}: off by {diff:.3g} (tolerance {tol:.3g})")


def tried_patches(n_max: int, samples: int, seed: int):
    """How many patches :func:`~nsa_tutorial.synthesis.make_anomaly` tried (blended, or skipped
    because a constraint or the blend failed) in each of ``samples`` samples of a texture config
    with ``n_max``, on a pair of random 64 x 64 images: the count that the patch process draws."""
    import numpy as np

    from .config import get_config
    from .synthesis import make_anomaly

    rng, config = np.random.default_rng(seed), get_config("texture_brick", n_max=n_max)
    dest, src = (rng.integers(0, 256, (64, 64, 3), dtype=np.uint8) for _ in range(2))
    anomalies = (make_anomaly(dest, src, config, np.random.default_rng([seed, i])) for i in range(samples))
    return np.array([len(a.dest_rects) + a.skipped for a in anomalies])


def result(name: str, check) -> tuple[bool, str]:
    """(passed, message) of ``grader.check(name)``: the first failure's last line, or 'passed'."""
    if check.passed_all:
        return True, "passed"
    for case in check.test_case_results:
        if not case.passed:
            lines = [line.strip() for line in str(case.message).strip().splitlines() if line.strip()]
            return False, lines[-1] if lines else "failed"
    return False, "failed"


def results_cell(exercises: Sequence[str]) -> str:
    """Code for a last cell that runs ``exercises``' checks in the notebook and prints the results."""
    return (
        "import json as _json\n"
        "from nsa_tutorial import exercises as _exercises\n"
        "_grader = _exercises.new_grader()\n"
        f"print({_RESULTS!r} + _json.dumps([[_n, *_exercises.result(_n, _grader.check(_n, globals()))]"
        f" for _n in {list(exercises)!r}]))\n")


def grade_notebook(path: Path, timeout: int = 1800) -> List[Dict[str, str]]:
    """Execute one student notebook and run the checks it calls: rows of the grade table."""
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    called = [m for cell in nb.cells if cell.cell_type == "code" for m in CHECK_CALL.findall(cell.source)]
    known = set(names())
    exercises = [n for n in dict.fromkeys(called) if n in known]
    if not exercises:
        return []
    nb.cells.append(nbformat.v4.new_code_cell(results_cell(exercises)))
    # the kernel's environment: quick mode unless the instructor set NSA_MODE
    env = {"NSA_MODE": "quick", "NSA_NO_WIDGETS": "1", **os.environ}
    with tempfile.TemporaryDirectory(prefix="nsa-grade-") as work:  # whatever the notebook writes goes here
        NotebookClient(nb, timeout=timeout, allow_errors=True, resources={"metadata": {"path": work}}).execute(env=env)
    printed = "".join(o.get("text", "") for o in nb.cells[-1].get("outputs", []) if o.get("name") == "stdout")
    student = path.stem
    if _RESULTS not in printed:
        error = next((f"{o.ename}: {o.evalue}" for o in nb.cells[-1].get("outputs", []) if o.output_type == "error"),
                     "the notebook did not run to its end")
        return [dict(student=student, exercise=n, passed="no", message=error) for n in exercises]
    rows = json.loads(printed.split(_RESULTS, 1)[1].strip().splitlines()[0])
    return [dict(student=student, exercise=n, passed="yes" if ok else "no", message=msg) for n, ok, msg in rows]


def grade(folder: Path, output: Path) -> List[Dict[str, str]]:
    """Grade every ``*.ipynb`` in ``folder`` (student = file name) into the CSV ``output``."""
    from .files import atomic_write

    notebooks = sorted(folder.glob("*.ipynb"))
    if not notebooks:
        raise FileNotFoundError(f"no .ipynb in {folder}: expected a folder of student notebooks")
    rows = []
    for path in notebooks:
        found = grade_notebook(path)
        print(f"{path.name}: {sum(r['passed'] == 'yes' for r in found)} of {len(found)} checks passed", flush=True)
        rows += found
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=["student", "exercise", "passed", "message"], lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write(output, lambda tmp: tmp.write_text(text.getvalue()))
    return rows


def main(argv: Optional[Iterable[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nsa_tutorial.exercises", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    g = sub.add_parser("grade", help="grade a folder of student notebooks into a CSV table")
    g.add_argument("folder", type=Path, help="folder of student notebooks (*.ipynb), one per student and chapter")
    g.add_argument("--output", type=Path, default=Path("grades.csv"), help="the table to write (default grades.csv)")
    sub.add_parser("list", help="the exercises that have checks")
    args = parser.parse_args(list(argv) if argv is not None else None)
    if args.command == "list":
        print("\n".join(names()))
        return 0
    if not args.folder.is_dir():
        print(f"error: {args.folder} is not a folder: expected a folder of student notebooks", file=sys.stderr)
        return 2
    if args.output.resolve().parent == args.folder.resolve() and args.output.suffix == ".ipynb":
        print("error: --output must not be a notebook in the submissions folder", file=sys.stderr)
        return 2
    try:
        rows = grade(args.folder, args.output)
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{args.output}: {len(rows)} rows, {sum(r['passed'] == 'yes' for r in rows)} passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
