"""The files of a run folder, in one place: ``history.json``, ``checkpoint.pt`` and ``model.pt``.

Book chapter: *Training*.

:func:`nsa_tutorial.train.train` writes them through this module only: ``history.json`` after
every epoch (:func:`write_history`); ``checkpoint.pt``, everything needed to continue (weights,
optimiser, scheduler, gradient scaler, random states and the run's identity, :func:`run_identity`),
by :func:`save_checkpoint`, read back by :func:`resume_point`; and once, at the end, ``model.pt``
(:func:`write_model`: config, weights, history and the calibration of the threshold, if any), which
:func:`load_model` and :func:`load_calibration` read.  Every write goes to a temporary file that is
then renamed (:func:`nsa_tutorial.files.atomic_write`); every read goes through :func:`torch_load`,
which loads tensors and plain data only.
"""

from __future__ import annotations

import dataclasses
import json
import random
from pathlib import Path
from typing import Optional, Union

import numpy as np
import torch
from torch.utils.data import Dataset

from . import __version__, distributed
from .config import Config
from .files import atomic_write, remove_temporaries
from .model import NSAModel, build_model

FORMAT = "nsa-tutorial-model"
#: Bumped when the layout of ``model.pt`` or ``checkpoint.pt`` changes; independent of the
#: package version (recorded too, as ``package_version``) so that releases keep reading old files.
FORMAT_VERSION = 1
CHECKPOINT_FORMAT = "nsa-tutorial-checkpoint"


class ResumeError(ValueError):
    """A checkpoint that cannot be continued. ``problem`` says why; the message adds the remedy.

    The command line replaces the remedy by its own (``--restart``).
    """

    def __init__(self, problem: str, remedy: str = "pass resume=False to start afresh") -> None:
        super().__init__(f"{problem}; {remedy}")
        self.problem = problem


# --------------------------------------------------------------------------- checkpoint.pt, history.json
# ``parts``: the training state of nsa_tutorial.train (model, optimizer, scheduler, scaler, identity).

def save_checkpoint(output_dir: Path, parts, config: Config, epoch: int, history: dict) -> None:
    """``checkpoint.pt``: the state after ``epoch`` epochs (rank 0 writes; the others return)."""
    if not distributed.is_main():
        return
    state = {"format": CHECKPOINT_FORMAT, "version": FORMAT_VERSION, "epoch": epoch,
             "config": dataclasses.asdict(config), "model": parts.model.state_dict(),
             "optimizer": parts.optimizer.state_dict(), "scheduler": parts.scheduler.state_dict(),
             "scaler": parts.scaler.state_dict(), "rng": _rng_states(), "history": history,
             "identity": parts.identity}
    atomic_write(output_dir / "checkpoint.pt", lambda tmp: torch.save(state, tmp))  # history.json: write_history


def resume_point(output_dir: Path, parts, config: Config, resume: bool) -> Optional[tuple[int, dict]]:
    """``(first epoch, history so far)`` from ``checkpoint.pt`` if resuming (``parts`` then hold
    its state); ``None`` for a fresh start.

    Clears temporary files of writes that a kill interrupted.  Refuses to train afresh over
    the results of a run it cannot continue (``model.pt`` without ``checkpoint.pt``).
    """
    remove_temporaries(output_dir, ("checkpoint.pt", "history.json", "model.pt"))
    checkpoint = output_dir / "checkpoint.pt"
    if resume and checkpoint.exists():
        start, history = _load_checkpoint(checkpoint, parts, config)
        print(f"Resumed from epoch {start} of {config.epochs} ({checkpoint}).")
        return start, history
    # history.json alone is a run killed before its first checkpoint (it is rewritten every
    # epoch, checkpoints only every checkpoint_every seconds): nothing to keep, start afresh.
    if resume and (output_dir / "model.pt").exists():
        raise ResumeError(f"{output_dir} holds the model.pt of a run but no checkpoint.pt to "
                          "continue it; use another output folder, or replace that run",
                          remedy="pass resume=False to train afresh over it")
    return None


def _load_checkpoint(path: Path, parts, config: Config) -> tuple[int, dict]:
    state = torch_load(path, "checkpoint", ResumeError)
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT \
            or state.get("version") != FORMAT_VERSION:
        raise ResumeError(f"{path} is not a version-{FORMAT_VERSION} {CHECKPOINT_FORMAT} file")
    differences = identity_differences(state.get("identity"), parts.identity)
    if differences:
        raise ResumeError(f"{path} belongs to another run; what differs: {'; '.join(differences)}. "
                          "Resume with the same settings and data, or use another output folder")
    parts.model.load_state_dict(state["model"])
    parts.optimizer.load_state_dict(state["optimizer"])
    parts.scheduler.load_state_dict(state["scheduler"])
    if state["scaler"]:  # empty when written without float16 loss scaling (CPU, bfloat16)
        parts.scaler.load_state_dict(state["scaler"])
    _set_rng_states(state["rng"])
    return state["epoch"], state["history"]


def _rng_states() -> dict:
    keys_name, keys, pos, has_gauss, cached = np.random.get_state()
    states = {"torch": torch.get_rng_state(), "python": random.getstate(),
              # Plain lists, so that torch.load(weights_only=True) accepts the checkpoint.
              "numpy": (keys_name, keys.tolist(), pos, has_gauss, cached)}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def _set_rng_states(states: dict) -> None:
    torch.set_rng_state(states["torch"])
    random.setstate(states["python"])
    keys_name, keys, pos, has_gauss, cached = states["numpy"]
    np.random.set_state((keys_name, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def write_history(output_dir: Path, history: dict) -> None:
    """``history.json`` (small: one number per key and epoch), rewritten atomically every epoch."""
    if not distributed.is_main():
        return
    atomic_write(output_dir / "history.json", lambda tmp: tmp.write_text(json.dumps(history, indent=1)))


# --------------------------------------------------------------------------- the run's identity

def data_fingerprint(train_set: Dataset) -> dict:
    """The training data's identity: its size, and the names and sizes of its files if the dataset
    reports them (``train_set.files()``, as :class:`nsa_tutorial.training_set.SyntheticAnomalyDataset`).
    Modification times are left out: a copy of the data changes them, not the data."""
    files = train_set.files() if callable(getattr(train_set, "files", None)) else None
    return {"samples": len(train_set), "files": None if files is None else [[n, int(s)] for n, s in files]}


def run_identity(config: Config, train_set: Dataset, seed: int, max_steps: Optional[int]) -> dict:
    """Everything that determines a run's weights, recorded in its checkpoints: a resume with any
    of it changed would be neither run.  Book chapter: *Training*."""
    return {"config": dataclasses.asdict(config), "seed": seed, "package_version": __version__,
            "max_steps_per_epoch": max_steps, "data": data_fingerprint(train_set)}


#: Config fields that do not change the weights: a run resumes whatever they say (the score of
#: the image is computed from the map after training; calibration at the end uses the new one).
SCORING_ONLY = ("score",)


def identity_differences(saved: Optional[dict], now: dict) -> list[str]:
    """What differs between a checkpoint's :func:`run_identity` and this call's, in words."""
    if not isinstance(saved, dict):
        return ["the checkpoint records no seed, package version or data (written by an older "
                "nsa_tutorial), so it cannot be shown to be this run"]
    out = []
    config_then, config_now = saved.get("config") or {}, now["config"]
    changed = sorted(k for k in config_now if k not in SCORING_ONLY and config_then.get(k) != config_now[k])
    if changed:
        out.append("config fields " + ", ".join(f"{k} (checkpoint {config_then.get(k)!r}, now {config_now[k]!r})"
                                                for k in changed))
    for key in ("seed", "package_version", "max_steps_per_epoch"):
        if saved.get(key) != now[key]:
            out.append(f"{key} (checkpoint {saved.get(key)!r}, now {now[key]!r})")
    data_then, data_now = saved.get("data") or {}, now["data"]
    if data_then.get("samples") != data_now["samples"]:
        out.append(f"number of training samples (checkpoint {data_then.get('samples')}, now {data_now['samples']})")
    elif data_then.get("files") != data_now["files"]:
        then, current = dict(map(tuple, data_then.get("files") or [])), dict(map(tuple, data_now["files"] or []))
        changed = sorted(n for n in then.keys() | current.keys() if then.get(n) != current.get(n))
        out.append(f"training files ({len(changed)} added, removed or of another size, e.g. {changed[:3]})")
    return out


# --------------------------------------------------------------------------- model.pt

def torch_load(path: Path, what: str, error: type = ValueError):
    """``torch.load(path, weights_only=True)``, with errors that name the file and a remedy.

    A file that needs unsafe unpickling is refused, never loaded (it may run code).
    """
    import pickle

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise error(f"{path} is not a readable {what}: not a torch file of tensors and plain data (another "
                    "format, or Python objects that could run code, which are never loaded)") from err
    except (RuntimeError, EOFError, OSError, ValueError, KeyError) as err:
        raise error(f"{path} is not a readable {what} (truncated, corrupt or not a torch file: "
                    f"{type(err).__name__})") from err


def _read_model_file(path: Path) -> dict:
    """The contents of a ``model.pt``, checked to be one this package reads."""
    if not path.is_file():
        raise FileNotFoundError(f"no model file at {path}; train() writes output_dir/model.pt")
    data = torch_load(path, "model file")
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        found = data.get("format") if isinstance(data, dict) else type(data).__name__
        raise ValueError(f"{path} is not an NSA model file: expected format {FORMAT!r}, found {found!r}")
    if data.get("version") != FORMAT_VERSION:
        raise ValueError(f"{path} has format version {data.get('version')!r}; this nsa_tutorial reads "
                         f"version {FORMAT_VERSION}")
    return data


def write_model(output_dir: Path, model: NSAModel, config: Config, history: dict,
                calibration: Optional[dict] = None) -> None:
    """``model.pt``: what :func:`load_model` reads, with ``calibration``
    (:func:`nsa_tutorial.calibration.calibrate`) inside when given."""
    state_dict = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    data = {"format": FORMAT, "version": FORMAT_VERSION, "package_version": __version__,
            "config": dataclasses.asdict(config), "state_dict": state_dict, "history": history}
    if calibration is not None:
        data["calibration"] = calibration
    atomic_write(output_dir / "model.pt", lambda tmp: torch.save(data, tmp))


def load_model(path: Union[str, Path], device: Union[str, torch.device] = "cpu") -> tuple[NSAModel, Config]:
    """The trained model (in eval mode) and its config from a ``model.pt`` written by
    :func:`nsa_tutorial.train.train`, or from ``"pretrained:NAME"``, a shipped reference model
    (:func:`nsa_tutorial.pretrained.pretrained`).

    Book chapter: *Training*.
    """
    from .pretrained import pretrained, pretrained_name

    if pretrained_name(path) is not None:
        reference = pretrained(pretrained_name(path), device)
        return reference.model, reference.config
    path = Path(path)
    data = _read_model_file(path)
    try:
        config = Config(**data["config"])
        model = build_model(config)
        model.load_state_dict(data["state_dict"])
    except (KeyError, TypeError, RuntimeError, ValueError) as err:
        raise ValueError(f"{path} does not hold a config and state_dict of the NSA model "
                         f"(expected nsa_tutorial.model.NSAModel weights): {err}") from err
    return model.to(device).eval(), config


def load_calibration(model_path: Union[str, Path]) -> Optional[dict]:
    """The calibration stored in ``model.pt`` (``None`` for a model trained without a split), or
    that of ``"pretrained:NAME"``."""
    from .pretrained import entry, pretrained_name

    if pretrained_name(model_path) is not None:
        return entry(pretrained_name(model_path)).get("calibration")
    return _read_model_file(Path(model_path)).get("calibration")


def add_calibration(model_path: Union[str, Path], calibration: dict) -> None:
    """Store ``calibration`` in an existing ``model.pt`` (replacing one it holds), atomically."""
    model_path = Path(model_path)
    data = _read_model_file(model_path)
    data["calibration"] = calibration
    atomic_write(model_path, lambda tmp: torch.save(data, tmp))

