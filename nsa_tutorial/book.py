"""Helpers that let the book's notebooks run outside a book build: on Colab, in Jupyter, in CI.

- :func:`glue` is ``myst_nb.glue`` in a book build and a plain stand-in elsewhere, so the
  chapters need nothing beyond this package (Colab has no myst-nb).
- :func:`on_colab` and :func:`drive_run_root` keep the checkpoints of chapters *Training* and
  *Evaluation* on Google Drive, which outlives a Colab runtime.
- :func:`train_or_load` is the chapters' ``MODEL`` switch: train a model, or load the shipped
  reference model.
- :func:`ms_per_sample` times synthesis (chapters *Synthetic anomalies* and *Training*).
- :func:`t4_training_time` says how long a full-mode run takes on a Colab T4 (chapter
  *Training*): from a recorded GPU result when there is one, else an estimate whose
  assumptions it returns with the number.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, Dict, Optional

DRIVE_MOUNT = "/content/drive"  # where Colab mounts Google Drive; $NSA_DRIVE_MOUNT overrides
DRIVE_RUN_FOLDER = "nsa-tutorial/runs"  # inside "My Drive"


def _myst_nb_glue():
    """``myst_nb.glue`` when myst-nb is installed (a book build), else ``None``."""
    try:
        from myst_nb import glue as myst_glue
    except ImportError:
        return None
    return myst_glue


def glue(name: str, value: Any, display: bool = True) -> None:
    """Store ``value`` under ``name`` for the page's ``{glue:text}`` roles (a book build), or show it.

    Without myst-nb (Colab, a plain Jupyter): ``display=True`` displays the value as the cell's
    output would; ``display=False`` prints one line ``name = value``, so that a reader of the
    notebook sees the number the page's text refers to. Book chapters: all of them.
    """
    if hasattr(value, "item") and getattr(value, "shape", None) == ():  # a numpy (or torch) scalar:
        value = value.item()  # myst-nb formats numbers from their repr, which for np.float64 is not one
    myst_glue = _myst_nb_glue()
    if myst_glue is not None:
        myst_glue(name, value, display=display)
        return
    if display:
        from IPython.display import display as ipython_display

        ipython_display(value)
    else:
        print(f"{name} = {_short(value)}")


def _short(value: Any) -> str:
    """Floats to 4 significant digits; everything else as ``str``."""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def on_colab() -> bool:
    """True inside a Google Colab runtime (``google.colab`` is imported there at start-up)."""
    return "google.colab" in sys.modules


def train_or_load(choice: str = "auto") -> str:
    """``"train"`` or ``"load"``: the ``MODEL`` parameter of chapters *Training* and *Evaluation*.

    ``"load"`` uses the shipped reference model (:func:`nsa_tutorial.pretrained.pretrained`)
    instead of training one.  ``"auto"`` loads on a Colab runtime without a GPU, where only a
    quick model could be trained in the chapter's time, and trains everywhere else (a GPU
    runtime, a laptop in class, the book's build).
    """
    if choice not in ("auto", "train", "load"):
        raise ValueError(f"MODEL must be 'auto', 'train' or 'load', got {choice!r}")
    if choice != "auto":
        return choice
    import torch

    return "load" if on_colab() and not torch.cuda.is_available() else "train"


def drive_run_root(folder: str = DRIVE_RUN_FOLDER, mount_point: Optional[str] = None) -> Path:
    """Mount Google Drive (Colab only) and return ``My Drive/folder``, created if missing.

    Chapters *Training* and *Evaluation* keep their run folder there, so checkpoints survive a
    disconnected runtime and chapter 7 finds the model chapter 6 trained, even in a new
    session. ``mount_point`` defaults to ``$NSA_DRIVE_MOUNT`` or ``/content/drive``.
    """
    if not on_colab():
        raise RuntimeError("drive_run_root() mounts Google Drive and works on Colab only; "
                           "elsewhere set NSA_RUN_DIR or RUN_ROOT to a folder")
    from google.colab import drive

    mount_point = mount_point or os.environ.get("NSA_DRIVE_MOUNT") or DRIVE_MOUNT
    drive.mount(mount_point)
    root = Path(mount_point) / "MyDrive" / folder
    root.mkdir(parents=True, exist_ok=True)
    return root


def set_aside(run_dir: "str | os.PathLike") -> Optional[Path]:
    """Move the run folder ``run_dir`` aside, never deleting it: a chapter's ``RESTART = True``.

    The folder becomes ``NAME.old-YYYYmmdd-HHMMSS`` beside it (a number is added if that exists)
    and the new place is returned; ``None`` if there was no folder.  Without ``RESTART`` the
    chapters resume what the folder holds (a disconnected Colab runtime loses nothing).
    Book chapters: *Training*, *Evaluation*, *Using a trained model*.
    """
    import time

    run_dir = Path(run_dir)
    if not run_dir.exists():
        return None
    stamp = time.strftime("%Y%m%d-%H%M%S")
    target, n = run_dir.with_name(f"{run_dir.name}.old-{stamp}"), 1
    while target.exists():
        target, n = run_dir.with_name(f"{run_dir.name}.old-{stamp}-{n}"), n + 1
    run_dir.rename(target)
    print(f"The previous run was moved to {target}; training starts afresh in {run_dir}.")
    return target


def run_root(default: str = "../_build/runs", use_drive: bool = True) -> Path:
    """The run folder of chapters *Training* and *Evaluation*.

    ``$NSA_RUN_DIR`` if set; else, on Colab with ``use_drive``, a folder on Google Drive
    (:func:`drive_run_root`); else ``default``.
    """
    if os.environ.get("NSA_RUN_DIR"):
        return Path(os.environ["NSA_RUN_DIR"]).expanduser()
    if use_drive and on_colab():
        return drive_run_root()
    return Path(default)


# Stated assumptions of the T4 estimate (chapter *Training*, "Full mode on a Colab T4").
T4_ASSUMPTIONS = {
    "t4_peak_tflops_fp16": 65.0,  # NVIDIA's data sheet: tensor cores, float16
    "utilisation": 0.10,  # sustained share of the peak (assumed: about what ResNet-50 training with AMP reaches)
    "backward_factor": 3.0,  # a training step costs about 3 forward passes (forward + backward)
}


def t4_training_time(forward_gflops: float, n_train: int, epochs: int,
                     results_dir: Optional[os.PathLike] = None,
                     assumptions: Optional[Dict[str, float]] = None) -> Dict[str, Any]:
    """Minutes of a full-mode training run on a Colab T4: recorded if possible, else estimated.

    A recorded result is a JSON file in ``results_dir`` whose ``"gpu"`` names a T4 and which
    has ``"seconds_per_epoch"`` (a number): its time per epoch is scaled to ``epochs`` (and to
    ``n_train`` when the file records its own ``"n_train"``). Without
    one the estimate is compute only, ``epochs * n_train * backward_factor * forward_gflops /
    (peak * utilisation)``: it ignores data loading, so it is a lower bound when the GPU waits
    for data. Returns ``minutes``, ``source`` ("recorded" or "estimate"), and the file or the
    assumptions used. Book chapter: *Training*.
    """
    if forward_gflops <= 0 or n_train <= 0 or epochs <= 0:
        raise ValueError(f"forward_gflops, n_train and epochs must be positive, got "
                         f"{forward_gflops}, {n_train}, {epochs}")
    for path in sorted(Path(results_dir).glob("*.json")) if results_dir else []:
        record = json.loads(path.read_text())
        seconds = record.get("seconds_per_epoch")
        if "t4" in str(record.get("gpu") or "").lower() and isinstance(seconds, (int, float)):
            scale = n_train / record["n_train"] if isinstance(record.get("n_train"), int) else 1.0
            return {"minutes": epochs * seconds * scale / 60, "source": "recorded", "file": path.name}
    a = {**T4_ASSUMPTIONS, **(assumptions or {})}
    seconds_per_image = a["backward_factor"] * forward_gflops / (a["t4_peak_tflops_fp16"] * 1e3 * a["utilisation"])
    return {"minutes": epochs * n_train * seconds_per_image / 60, "source": "estimate", "assumptions": a}


def forward_gflops(model, image_size: int) -> float:
    """GFLOPs of one forward pass of ``model`` on one ``3 x image_size x image_size`` image
    (PyTorch's FLOP counter: 2 per multiply-add). Book chapter: *Training*."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    was_training = model.training
    model.eval()
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(torch.zeros(1, 3, image_size, image_size, device=next(model.parameters()).device))
    model.train(was_training)
    return counter.get_total_flops() / 1e9


def ms_per_sample(pool, config, n: int = 40, backend: str = "fast", seed: int = 0) -> float:
    """Mean time of :func:`nsa_tutorial.synthesis.make_anomaly` on ``n`` pairs of different images
    from ``pool``, in milliseconds, after one warm-up sample (numba loads its compiled kernels)."""
    import time

    import numpy as np

    from .synthesis import make_anomaly

    rng = np.random.default_rng(seed)
    pairs = [rng.choice(len(pool), 2, replace=False) for _ in range(n)]
    make_anomaly(pool[0], pool[1], config, rng, backend)
    start = time.perf_counter()
    for d, s in pairs:
        make_anomaly(pool[d], pool[s], config, rng, backend)
    return 1000 * (time.perf_counter() - start) / n
