"""One category, end to end: what ``nsa-tutorial train`` and ``nsa-tutorial evaluate`` do, as functions.

Book chapters: *Training from the command line*, *Using a trained model*.

:func:`train_category` reads and checks a whole category, holds back the calibration images,
prints the settings and trains (and calibrates) one model; :func:`evaluate_category` scores a
model on a category's test split.  The command line (:mod:`nsa_tutorial.cli`), the sweep of
``reproduce`` (:mod:`nsa_tutorial.sweep`) and chapter *Using a trained model* call them.
:func:`is_user_error` and :func:`error_message` say which errors a one-line message explains.
"""

from __future__ import annotations

import dataclasses
import pickle
from pathlib import Path
from typing import Optional, Sequence, Union

from .calibration import DEFAULT_TARGET_FPR
from .config import Config


def is_user_error(error: BaseException) -> bool:
    """Errors of input, files, data or resources, which a one-line message explains."""
    return isinstance(error, (ValueError, OSError, pickle.UnpicklingError, MemoryError)) \
        or type(error).__name__ == "OutOfMemoryError"  # torch's CUDA out of memory


def error_message(error: BaseException) -> str:
    """One line for the user; train()'s remedy ``resume=False`` becomes the command line's ``--restart``."""
    from .checkpoint import ResumeError

    if isinstance(error, ResumeError):
        text = f"{error.problem}; or run again with --restart to start afresh (replacing what the folder holds)"
    else:
        text = str(error) or type(error).__name__
    return " ".join(text.split())


def refuse_inside_data(path: Path, data_root: str, name: str) -> None:
    """Outputs never go into the dataset: everything there is an input."""
    from .sources import resolve_data_root

    folder = resolve_data_root(data_root) / name
    if folder.is_dir() and Path(path).expanduser().resolve().is_relative_to(folder.resolve()):
        raise ValueError(f"--output {path} lies inside the data folder {folder}; write results elsewhere")


def print_settings(config: Config) -> None:
    """The settings of a run (all of them are stored in model.pt) and how it will be scored."""
    from .config import describe
    from .evaluate import centre_cropped

    print(describe(config))
    print("  evaluation: " + ("centre crop, zero-padded back (the paper's protocol for this class)"
                              if centre_cropped(config) else "the whole image"))


def train_category(data_root: str, config: Config, output: Path, seed: int = 0, device: Optional[str] = None,
                   workers: int = 0, restart: bool = False, checkpoint_every: float = 60.0,
                   calibration: float = 0.0, target_fpr: float = 0.01, progress: bool = True) -> Path:
    """Train ``config`` on its category under ``data_root``; returns the path of ``model.pt``.

    The whole category is read first (:func:`nsa_tutorial.layout.check_category`): a corrupt test
    image or a wrong mask stops the run in seconds, not after training.  ``calibration``: the
    share of normal training images held back (:func:`nsa_tutorial.calibration.calibration_split`)
    to calibrate the threshold at ``target_fpr``; 0 trains on all of them (the paper).
    """
    from . import distributed
    from .calibration import calibration_split
    from .layout import check_category, load_category
    from .sources import resolve_data_root
    from .train import train
    from .training_set import SyntheticAnomalyDataset

    output = Path(output)
    if output.exists() and not output.is_dir():
        raise NotADirectoryError(f"--output {output} is a file; expected a folder for the run")
    with distributed.main_first():  # under torchrun, one process unpacks an embedded dataset
        refuse_inside_data(output, data_root, config.name)
        category = load_category(resolve_data_root(data_root), config.name)
    check_category(category)
    category, held_out = calibration_split(category, calibration, seed)
    print_settings(config)
    dataset = SyntheticAnomalyDataset(category, config, seed=seed)
    # train() calibrates on held_out (rank 0 under torchrun) before it writes model.pt
    train(config, dataset, output, device=device, seed=seed, num_workers=workers, resume=not restart,
          checkpoint_every=checkpoint_every, calibration_images=held_out, target_fpr=target_fpr,
          progress=progress)
    return output / "model.pt"


def evaluate_category(data_root: str, category_name: str, checkpoint: Path, device: Optional[str] = None) -> dict:
    """Metrics of the model in ``checkpoint`` (a ``model.pt`` or ``pretrained:NAME``) on the test
    split of ``category_name``, with the decisions at its calibrated threshold if it has one."""
    from .checkpoint import load_calibration, load_model
    from .evaluate import evaluate
    from .layout import load_category
    from .runtime import pick_device
    from .sources import resolve_data_root

    device = pick_device(device)
    model, config = load_model(checkpoint, device=device)
    if config.name != category_name:
        print(f"note: the model was trained on {config.name!r}, evaluating it on {category_name!r}")
    calibration = load_calibration(checkpoint) or {}
    result = evaluate(model, load_category(resolve_data_root(data_root), category_name), config, device,
                      threshold=calibration.get("image_threshold"))
    result["image_fpr_target"] = calibration.get("target_fpr")
    return {"category": category_name, "method": config.method, "label": config.label,
            "mode": config.mode, "checkpoint": str(checkpoint), **result, "config": dataclasses.asdict(config)}


def calibrate_checkpoint(model_path: Union[str, Path], images: Sequence, target_fpr: float = DEFAULT_TARGET_FPR,
                         device=None) -> dict:
    """Calibrate (again) the model in an existing ``model_path`` on normal ``images`` and store the
    result in it (:func:`nsa_tutorial.checkpoint.add_calibration`).  A new run calibrates before
    its one write of ``model.pt`` instead: :func:`nsa_tutorial.train.train` with ``calibration_images``."""
    from .calibration import calibrate
    from .checkpoint import add_calibration
    from .inference import load_predictor

    calibration = calibrate(load_predictor(model_path, device=device), images, target_fpr)
    add_calibration(model_path, calibration)
    return calibration
