"""The paper's published numbers, as data, and a table that puts ours next to them.

Book chapter: *Evaluation* (and the results pages that compare our runs with the paper).

Every number is a percentage, transcribed from the paper's Tables 1, 2, 3, 7 and 8
(in ``paper_tables.txt``, next to this module):
the mean over five seeds and, where the paper gives one, its standard error.
Row keys are the class names of :mod:`nsa_tutorial.config` (``metal_nut``) plus
``average_objects``, ``average_textures`` and ``average_overall``.  Column keys
are ``cutpaste`` (end-to-end), ``fpi``, ``pii``, ``nsa_binary``,
``nsa_continuous``, ``nsa_logistic`` and the reference methods ``draem``,
``cutpaste_3way`` (Tables 1-2) and ``padim`` (Table 8).  A ``-`` cell is a value
the paper does not report.

Two cells are missing from the texture-average row of our copy of the paper, both
for NSA (logistic): Table 2's is taken from Table 7's *final* column (the same
models; its other values equal Table 2's); Table 8's is left out, and
:func:`results_table` shows the mean of the per-class values instead, marked.
Table 7's pixel-level column C is transcribed as printed although its three
averages (all 92.3) do not follow from its per-class values (objects 92.5,
textures 90.9, overall 92.0); every other average agrees with its classes
to within rounding.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import NamedTuple, Optional

from .config import MVTEC_CLASSES, OBJECTS, TEXTURES


class Reported(NamedTuple):
    """One published value in percent: the mean over seeds and its standard error."""

    mean: float
    se: Optional[float]  # None where the paper gives no standard error


def _read_tables() -> dict[str, str]:
    """The tables of ``paper_tables.txt`` (next to this module) by name, e.g. ``"table1"``."""
    text = (Path(__file__).parent / "paper_tables.txt").read_text(encoding="utf-8")
    tables: dict[str, list[str]] = {}
    for line in text.splitlines():
        if line.startswith("[") and line.endswith("]"):
            rows = tables[line[1:-1]] = []
        elif line.strip() and not line.startswith("#"):
            rows.append(line)
    return {name: "\n".join(rows) for name, rows in tables.items()}


_TABLES = _read_tables()


def _parse(text: str) -> dict[str, dict[str, Reported]]:
    """``{column: {row: Reported}}`` from one of the tables above."""
    header, *lines = text.strip().splitlines()
    columns = header.split()[1:]
    table: dict[str, dict[str, Reported]] = {column: {} for column in columns}
    for line in lines:
        row, *cells = line.split()
        if len(cells) != len(columns):
            raise ValueError(f"row {row!r} has {len(cells)} cells, expected {len(columns)}")
        for column, cell in zip(columns, cells):
            if cell != "-":
                mean, _, se = cell.partition("±")
                table[column][row] = Reported(float(mean), float(se) if se else None)
    return table


#: ``MVTEC[metric][method][row]`` for the metrics of Tables 1, 2 and 8.
MVTEC = {"image_auroc": _parse(_TABLES["table1"]), "pixel_auroc": _parse(_TABLES["table2"]),
         "au_pro": _parse(_TABLES["table8"])}
#: ``RCXR_IMAGE_AUROC[method][row]``, rows ``rcxr_male`` and ``rcxr_female`` (Table 3).
RCXR_IMAGE_AUROC = _parse(_TABLES["table3"])
#: ``ABLATIONS[metric][variant][row]``, variants ``final`` and ``A``-``D`` (Table 7).
ABLATIONS = {"image_auroc": _parse(_TABLES["table7_image"]), "pixel_auroc": _parse(_TABLES["table7_pixel"])}

METHOD_NAMES = {
    "draem": "DRAEM", "cutpaste_3way": "CutPaste (3-way)", "padim": "PaDiM",
    "cutpaste": "CutPaste (end-to-end)", "fpi": "FPI", "pii": "PII", "nsa_binary": "NSA (binary)",
    "nsa_continuous": "NSA (continuous)", "nsa_logistic": "NSA (logistic)",
}
_GROUPS = (("object", "objects", OBJECTS, "average_objects"),
           ("texture", "textures", TEXTURES, "average_textures"))
_MISSING = "–"


def _check_ours(ours, metric: str) -> dict[str, float]:
    """``{class: percent}`` for the classes of ``ours`` that have ``metric``."""
    if not isinstance(ours, dict):
        raise ValueError(f"ours must be a dict {{class: {{metric: value}}}}, got {type(ours).__name__}")
    percent = {}
    for name, values in ours.items():
        if name not in MVTEC_CLASSES:
            raise ValueError(f"unknown class {name!r} in ours; expected MVTec AD classes {MVTEC_CLASSES}")
        if not isinstance(values, dict):
            raise ValueError(f"ours[{name!r}] must be a dict {{metric: value}}, got {type(values).__name__}")
        if values.get(metric) is not None:
            value = float(values[metric])
            if not (math.isfinite(value) and 0 <= value <= 1):
                raise ValueError(f"ours[{name!r}][{metric!r}] must be a fraction in [0, 1] as the "
                                 f"functions of nsa_tutorial.metrics return it, got {value}")
            percent[name] = 100 * value
    return percent


def _format(value: Optional[Reported]) -> str:
    if value is None:
        return _MISSING
    return f"{value.mean:.1f}" if value.se is None else f"{value.mean:.1f} ± {value.se:.1f}"


def _average_row(label: str, plural: str, classes, key: str, ours: dict[str, float],
                 paper: dict[str, Reported]) -> tuple[str, bool]:
    """One average row, and whether its paper value had to be computed (the paper lacks it).

    When ``ours`` has only some of ``classes``, both columns average over those classes.
    """
    present = [c for c in classes if c in ours]
    paper_text, computed = _format(paper.get(key)), False
    if 0 < len(present) < len(classes):
        label = f"average over the {len(present)} of {len(classes)} {plural} present"
        paper_text = f"{sum(paper[c].mean for c in present) / len(present):.1f}"
    elif key not in paper:
        paper_text, computed = f"{sum(paper[c].mean for c in classes) / len(classes):.1f}*", True
    ours_text = f"{sum(ours[c] for c in present) / len(present):.1f}" if present else _MISSING
    return f"| | **{label}** | {ours_text} | {paper_text} |", computed


def results_table(ours: dict[str, dict[str, float]], metric: str, method: str = "nsa_logistic") -> str:
    """A Markdown table of our per-class results next to the paper's (Tables 1, 2, 8).

    ``ours[class][metric]`` is a fraction in [0, 1], as :mod:`nsa_tutorial.metrics`
    returns it; ``metric`` is ``"image_auroc"``, ``"pixel_auroc"`` or ``"au_pro"``.
    Rows are the objects, their average, the textures, theirs and the overall
    average; values are in percent and classes missing from ``ours`` (or whose
    value is ``None``) show "–".

    >>> print(results_table({"bottle": {"au_pro": 0.9}}, "au_pro").splitlines()[2])
    | object | bottle | 90.0 | 92.9 ± 0.3 |
    """
    if metric not in MVTEC:
        raise ValueError(f"metric must be one of {tuple(MVTEC)}, got {metric!r}")
    if method not in MVTEC[metric]:
        raise ValueError(f"the paper's table for {metric} has methods {tuple(MVTEC[metric])}, got {method!r}")
    paper, percent = MVTEC[metric][method], _check_ours(ours, metric)
    lines = [f"| | class | ours | paper: {METHOD_NAMES[method]} |", "|---|---|---:|---:|"]
    averages = []
    for kind, plural, classes, key in _GROUPS:
        for i, name in enumerate(classes):
            ours_text = f"{percent[name]:.1f}" if name in percent else _MISSING
            lines.append(f"| {kind if i == 0 else ''} | {name} | {ours_text} | {_format(paper[name])} |")
        averages.append(_average_row(f"average ({plural})", plural, classes, key, percent, paper))
        lines.append(averages[-1][0])
    averages.append(_average_row("overall average", "classes", MVTEC_CLASSES, "average_overall",
                                 percent, paper))
    lines.append(averages[-1][0])
    if any(computed for _, computed in averages):
        lines.append("\n\\* not in our copy of the paper: the mean of its per-class values.")
    return "\n".join(lines)
