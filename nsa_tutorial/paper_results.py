"""The paper's published numbers, as data, and a table that puts ours next to them.

Book chapter: *Evaluation* (and the results pages that compare our runs with the paper).

Every number is a percentage, transcribed from the paper's Tables 1, 2, 3, 7 and 8:
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
from typing import NamedTuple, Optional

from .config import MVTEC_CLASSES, OBJECTS, TEXTURES


class Reported(NamedTuple):
    """One published value in percent: the mean over seeds and its standard error."""

    mean: float
    se: Optional[float]  # None where the paper gives no standard error


# Paper Table 1: image-level AUROC %, image score = mean of the anomaly map.
_TABLE1 = """
row               draem  cutpaste_3way  cutpaste  fpi   pii    nsa_binary  nsa_continuous  nsa_logistic
bottle            99.2   98.3±0.5       100.0     90.2  97.6   97.6±0.2    97.5±0.2        97.7±0.3
cable             91.8   80.6±0.5       75.4      68.0  68.9   92.1±2.4    90.2±3.0        94.5±1.0
capsule           98.5   96.2±0.5       89.2      87.5  84.9   93.2±0.8    92.8±2.2        95.2±1.7
hazelnut          100.0  97.3±0.3       81.4      86.0  82.7   93.5±1.9    89.3±4.9        94.7±1.1
metal_nut         98.7   99.3±0.2       70.6      88.4  98.9   99.4±0.3    94.6±2.1        98.7±0.7
pill              98.9   92.4±1.3       90.3      71.8  86.3   97.0±0.9    94.3±1.1        99.2±0.6
screw             93.9   86.3±1.0       65.5      61.2  74.7   90.3±1.2    90.1±0.9        90.2±1.4
toothbrush        100.0  98.3±0.9       96.7      85.8  93.1   100.0±0.0   99.6±0.5        100.0±0.0
transistor        93.1   95.5±0.5       88.2      79.6  90.1   93.5±0.9    92.8±2.2        95.1±0.2
zipper            100.0  99.4±0.2       98.7      97.7  99.8   99.8±0.1    99.5±0.7        99.8±0.1
average_objects   97.4   94.3±0.6       85.6      81.6  87.7   95.6±0.5    94.1±1.0        96.5±0.3
carpet            97.0   93.1±1.1       53.1      56.0  65.6   85.6±7.6    90.9±2.2        95.6±0.6
grid              99.9   99.9±0.1       99.7      99.5  100.0  99.9±0.1    98.5±3.3        99.9±0.1
leather           100.0  100.0±0.0      86.6      91.7  100.0  99.9±0.1    100.0±0.0       99.9±0.1
tile              99.6   93.4±1.0       87.8      90.2  98.4   99.7±0.2    100.0±0.0       100.0±0.0
wood              99.1   98.6±0.5       84.6      74.4  91.9   96.7±1.2    97.8±0.8        97.5±1.5
average_textures  99.1   97.0±0.5       82.4      82.4  91.2   96.4±1.4    97.5±0.9        98.6±0.3
average_overall   98.0   95.2±0.6       84.5      81.9  88.9   95.9±0.7    95.2±0.5        97.2±0.3
"""

# Paper Table 2: pixel-level AUROC %.  nsa_logistic average_textures from Table 7 (see above).
_TABLE2 = """
row               draem  cutpaste_3way  cutpaste  fpi   pii   nsa_binary  nsa_continuous  nsa_logistic
bottle            99.1   97.6±0.1       97.7      91.8  93.1  98.4±0.2    97.3±0.5        98.3±0.1
cable             94.7   90.0±0.2       81.0      66.5  70.2  93.3±3.4    91.0±2.8        96.0±1.4
capsule           94.3   97.4±0.1       97.5      95.9  90.2  98.1±0.2    91.6±5.6        97.6±0.9
hazelnut          99.7   97.3±0.1       94.8      89.8  97.0  97.2±0.6    97.7±0.6        97.6±0.6
metal_nut         99.5   93.1±0.4       68.1      96.2  95.4  98.2±0.2    97.3±0.3        98.4±0.2
pill              97.6   95.7±0.1       98.1      62.3  95.3  98.5±0.2    97.1±2.7        98.5±0.3
screw             97.6   96.7±0.1       90.7      90.4  92.8  96.7±0.4    92.3±5.3        96.5±0.1
toothbrush        98.1   98.1±0.0       95.7      81.8  81.3  95.6±0.6    94.5±0.7        94.9±0.7
transistor        90.9   93.0±0.2       85.9      78.5  86.9  87.8±1.9    80.2±3.3        88.0±1.8
zipper            98.8   99.3±0.0       92.9      91.8  93.8  94.2±0.2    90.7±1.5        94.2±0.3
average_objects   97.0   95.8±0.1       90.2      84.5  89.6  95.8±0.4    93.0±1.7        96.0±0.4
carpet            95.5   98.3±0.0       83.3      70.8  97.2  94.5±4.1    81.8±6.8        95.5±2.3
grid              99.7   97.5±0.1       97.6      94.2  98.9  99.1±0.0    98.0±0.3        99.2±0.1
leather           98.6   99.5±0.0       96.4      88.3  99.2  99.6±0.0    99.5±0.2        99.5±0.1
tile              99.2   90.5±0.2       72.7      65.0  98.0  99.0±0.2    97.4±0.7        99.3±0.0
wood              96.4   95.5±0.1       84.0      71.1  91.1  94.0±0.8    90.6±3.7        90.7±1.9
average_textures  97.9   96.3±0.1       86.8      77.9  96.9  97.3±0.7    93.5±0.9        96.8±0.7
average_overall   97.3   96.0±0.1       89.1      82.3  92.0  96.3±0.2    93.1±1.1        96.3±0.4
"""

# Paper Table 8: AU-PRO up to FPR 0.3, %, at 256 x 256.
_TABLE8 = """
row               padim  cutpaste  fpi   pii   nsa_binary  nsa_continuous  nsa_logistic
bottle            94.8   91.2      66.0  79.0  93.0±0.9    89.9±1.1        92.9±0.3
cable             88.8   59.8      51.9  55.7  87.6±3.4    85.4±2.1        89.9±1.0
capsule           93.5   83.5      79.9  67.6  91.8±0.8    79.9±9.0        91.4±2.2
hazelnut          92.6   81.3      71.4  90.9  93.6±0.4    93.1±1.3        93.6±0.9
metal_nut         85.6   54.4      72.2  91.5  94.9±0.2    90.8±1.1        94.6±0.6
pill              92.7   83.1      50.4  65.2  93.7±0.9    92.5±3.5        96.0±0.5
screw             94.4   72.6      69.8  78.4  90.6±1.3    80.6±10.3       90.1±0.3
toothbrush        93.1   88.1      60.3  66.8  91.2±0.6    89.0±1.8        90.7±1.0
transistor        84.5   68.5      55.4  57.4  72.6±4.4    63.3±1.2        75.3±2.4
zipper            95.9   84.9      81.2  86.6  88.9±0.5    83.6±3.3        89.2±0.3
average_objects   91.6   76.7      65.8  73.9  89.8±0.8    84.8±2.8        90.4±0.5
carpet            96.2   50.4      21.6  93.5  84.0±11.8   71.1±8.2        85.0±6.2
grid              94.6   91.5      86.0  95.9  96.5±0.1    94.2±0.8        96.8±0.4
leather           97.8   83.7      84.1  98.1  98.9±0.1    98.6±0.4        98.7±0.1
tile              86.0   54.4      42.0  83.2  93.9±0.9    90.3±2.5        95.3±0.5
wood              91.1   64.0      41.7  81.7  89.2±2.4    86.1±5.7        85.3±3.7
average_textures  93.2   68.8      55.1  90.5  92.5±2.0    88.1±1.3        -
average_overall   92.1   74.1      62.3  79.4  90.7±0.4    85.9±2.1        91.0±0.6
"""

# Paper Table 3: image-level AUROC % on the chest X-ray data (rCXR).
_TABLE3 = """
row          cutpaste  fpi   pii       nsa_binary  nsa_continuous  nsa_logistic
rcxr_male    59.8      73.7  91.7±0.6  94.0±0.5    93.4±0.3        94.0±0.6
rcxr_female  56.2      67.4  92.8±0.4  94.3±0.6    93.0±0.4        94.0±0.5
"""

# Paper Table 7, image-level AUROC % of the NSA (logistic) ablations A-D.
# Variant A (no foreground constraints) only exists for classes that have constraints.
_TABLE7_IMAGE = """
row               final      A          B          C          D
bottle            97.7±0.3   97.5±0.5   97.1±0.4   97.1±0.7   98.4±0.2
cable             94.5±1.0   -          96.1±1.0   92.4±2.0   91.8±1.4
capsule           95.2±1.7   91.7±1.9   89.7±1.3   84.6±0.8   95.6±0.7
hazelnut          94.7±1.1   93.1±0.8   92.2±2.7   85.2±2.5   94.1±2.0
metal_nut         98.7±0.7   99.0±0.6   97.7±1.0   94.4±1.0   99.3±0.3
pill              99.2±0.6   99.0±0.2   97.8±0.5   94.5±1.6   96.9±1.0
screw             90.2±1.4   77.8±3.3   85.3±3.4   56.3±1.8   90.3±1.0
toothbrush        100.0±0.0  100.0±0.0  100.0±0.0  99.7±0.2   100.0±0.0
transistor        95.1±0.2   -          93.7±1.5   91.2±1.7   93.2±0.8
zipper            99.8±0.1   100.0±0.0  99.8±0.3   98.9±1.1   99.9±0.1
average_objects   96.5±0.3   -          94.9±0.6   89.4±0.4   96.0±0.2
carpet            95.6±0.6   -          88.7±2.8   87.4±5.7   97.2±1.3
grid              99.9±0.1   -          100.0±0.0  98.6±0.8   100.0±0.0
leather           99.9±0.1   -          99.9±0.1   100.0±0.0  100.0±0.0
tile              100.0±0.0  -          100.0±0.0  100.0±0.0  99.9±0.1
wood              97.5±1.5   -          91.4±4.3   91.4±2.5   98.0±0.3
average_textures  98.6±0.3   -          96.0±0.7   95.5±1.5   99.0±0.3
average_overall   97.2±0.3   -          95.3±0.5   91.4±0.5   97.0±0.2
"""

# Paper Table 7, pixel-level AUROC % of the ablations (wood C is printed with two decimals).
_TABLE7_PIXEL = """
row               final      A          B          C          D
bottle            98.3±0.1   98.4±0.1   97.9±0.1   97.4±0.2   98.9±0.0
cable             96.0±1.4   -          94.7±2.7   96.7±0.5   86.8±2.4
capsule           97.6±0.9   96.4±0.4   95.2±1.4   92.7±0.9   97.1±0.2
hazelnut          97.6±0.6   97.5±0.7   93.6±0.9   94.5±1.2   97.5±0.4
metal_nut         98.4±0.2   98.5±0.1   96.5±0.9   97.0±0.3   98.2±0.4
pill              98.5±0.3   97.5±0.2   90.5±4.5   92.8±2.2   97.1±1.0
screw             96.5±0.1   92.9±0.6   95.6±0.8   82.6±1.6   96.2±0.2
toothbrush        94.9±0.7   93.8±1.1   91.7±2.8   94.4±0.9   95.3±0.2
transistor        88.0±1.8   -          83.8±0.9   83.1±2.2   86.0±1.1
zipper            94.2±0.3   94.1±0.2   94.0±0.3   94.0±0.3   94.9±0.1
average_objects   96.0±0.4   -          93.3±0.9   92.3±0.5   94.8±0.3
carpet            95.5±2.3   -          95.8±5.0   88.3±4.5   98.0±0.7
grid              99.2±0.1   -          98.4±0.7   92.5±2.0   99.4±0.0
leather           99.5±0.1   -          99.3±0.5   99.5±0.1   99.7±0.0
tile              99.3±0.0   -          98.5±0.4   95.6±2.1   98.2±0.4
wood              90.7±1.9   -          86.5±3.9   78.56±2.0  92.4±0.6
average_textures  96.8±0.7   -          95.7±1.6   92.3±1.1   97.5±0.1
average_overall   96.3±0.4   -          94.1±0.8   92.3±0.5   95.7±0.2
"""


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
MVTEC = {"image_auroc": _parse(_TABLE1), "pixel_auroc": _parse(_TABLE2), "au_pro": _parse(_TABLE8)}
#: ``RCXR_IMAGE_AUROC[method][row]``, rows ``rcxr_male`` and ``rcxr_female`` (Table 3).
RCXR_IMAGE_AUROC = _parse(_TABLE3)
#: ``ABLATIONS[metric][variant][row]``, variants ``final`` and ``A``-``D`` (Table 7).
ABLATIONS = {"image_auroc": _parse(_TABLE7_IMAGE), "pixel_auroc": _parse(_TABLE7_PIXEL)}

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
