"""Using a trained model: predictions, heatmaps and masks on new images.

Book chapter: *Using a trained model*.

A :class:`Predictor` runs :class:`nsa_tutorial.evaluate.ScoringModel`, the one graph that
evaluation and PyTorch prediction run and that :mod:`nsa_tutorial.export` writes to ONNX
(:func:`load_onnx` runs it with onnxruntime): uint8 RGB images at the evaluation size in, image
scores (the config's score of the map, the paper's mean by default) and anomaly maps out.
Images of any size are resized to that square size (as in evaluation) and the maps resized
back, so masks and overlays have each image's own resolution.  The decision thresholds come from
:mod:`nsa_tutorial.calibration`.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, List, Optional, Sequence, Tuple, Union

import cv2
import numpy as np
import torch
from torch import nn

from .calibration import Thresholds, resolve_thresholds
from .config import Config
from .layout import collect_images, image_batches, read_images

# --------------------------------------------------------------------------- the scoring graph

@dataclass
class Predictor:
    """A model ready to score images: ``run`` maps uint8 ``B x S x S x 3`` to (scores, maps)."""

    run: Callable[[np.ndarray], Tuple[np.ndarray, np.ndarray]]
    config: Config
    calibration: Optional[dict]
    backend: str
    source: str

    @property
    def size(self) -> int:
        from .evaluate import eval_size

        return eval_size(self.config)

    @property
    def window(self) -> slice:
        from .evaluate import centre_window

        return centre_window(self.size, self.config.image_size)

    def score(self, images: np.ndarray, batch_size: int = 16) -> Tuple[np.ndarray, np.ndarray]:
        """``run`` over uint8 ``N x S x S x 3`` images in batches: (scores ``N``, maps ``N x S x S``).

        ``S`` is :attr:`size`, this model's evaluation size: images of another size are refused
        (a network runs on any size a multiple of 32, and its scores would silently differ);
        :func:`predict` resizes images of any size itself."""
        shape = getattr(images, "shape", ())
        if len(shape) != 4 or tuple(shape[1:]) != (self.size, self.size, 3):
            raise ValueError(f"images must be N x {self.size} x {self.size} x 3 (this model's evaluation size, "
                             f"e.g. evaluate.load_test_set(category, predictor.config)), got shape {tuple(shape)}")
        parts = [self.run(images[i:i + batch_size]) for i in range(0, len(images), batch_size)]
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    @property
    def bounded(self) -> bool:
        """Scores lie in [0, 1] (sigmoid output) unless the model was trained with the MSE loss."""
        return self.config.loss != "mse"


def load_predictor(model: Union[str, Path, "Predictor"], device: Union[str, torch.device, None] = None) -> Predictor:
    """A :class:`Predictor` from ``model.pt`` (PyTorch) or a ``.onnx`` file (onnxruntime)."""
    if isinstance(model, Predictor):
        return model
    path = Path(model)
    if path.suffix.lower() == ".onnx":
        return load_onnx(path, device)
    from .checkpoint import load_calibration, load_model
    from .runtime import pick_device

    device = pick_device(device)
    net, config = load_model(path, device=device)
    return torch_predictor(net, config, load_calibration(path), device, str(path))


def torch_predictor(model: nn.Module, config: Config, calibration: Optional[dict] = None,
                    device: Union[str, torch.device] = "cpu", source: str = "in memory") -> Predictor:
    """A :class:`Predictor` for a model in memory (e.g. straight after :func:`~nsa_tutorial.train.train`)."""
    from .evaluate import ScoringModel

    scoring = ScoringModel(model, config).to(device).eval()

    @torch.inference_mode()
    def run(batch: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        scores, maps = scoring(torch.from_numpy(batch).to(device))
        return scores.float().cpu().numpy(), maps.float().cpu().numpy()

    return Predictor(run, config, calibration, "torch", source)


# --------------------------------------------------------------------------- exported files

#: Prefix of the metadata keys that :mod:`nsa_tutorial.export` writes into an ONNX file.
METADATA_PREFIX = "nsa_tutorial."


def needs_extra(module: str):
    """Import an optional dependency of the ``export`` extra, or say how to install it."""
    import importlib
    import importlib.util

    importlib.invalidate_caches()  # a package pip installed into the running kernel (Colab's install cell)
    if importlib.util.find_spec(module) is None:
        raise RuntimeError(f"{module} is not installed: pip install \"nsa-tutorial[export]\" "
                           "(onnx and onnxruntime)")
    return importlib.import_module(module)  # an installed package that fails to import says why


def read_metadata(path: Union[str, Path]) -> dict:
    """The ``nsa_tutorial.*`` metadata of an exported file: config, calibration, input size."""
    ort = needs_extra("onnxruntime")
    meta = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).get_modelmeta().custom_metadata_map
    return _parse_metadata(meta, path)


def _parse_metadata(meta: dict, path) -> dict:
    try:
        return {"config": Config(**json.loads(meta[METADATA_PREFIX + "config"])),
                "calibration": json.loads(meta[METADATA_PREFIX + "calibration"]),
                "input_size": int(meta[METADATA_PREFIX + "input_size"])}
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"{path} is not an ONNX file written by nsa-tutorial export "
                         f"(its nsa_tutorial metadata is missing or unreadable: {err})") from None


def load_onnx(path: Union[str, Path], device: Union[str, torch.device, None] = None) -> Predictor:
    """A :class:`Predictor` that runs ``path`` with onnxruntime
    (on CUDA if asked for and available, else the CPU)."""
    ort = needs_extra("onnxruntime")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no ONNX file at {path}")
    providers = ["CPUExecutionProvider"]
    if device is not None and str(device).startswith("cuda") and "CUDAExecutionProvider" in ort.get_available_providers():
        providers.insert(0, "CUDAExecutionProvider")
    try:
        session = ort.InferenceSession(str(path), providers=providers)
    except Exception as err:  # onnxruntime raises its own exception types for unreadable files
        raise ValueError(f"{path} is not a readable ONNX model ({type(err).__name__}: {err})") from None
    meta = _parse_metadata(session.get_modelmeta().custom_metadata_map, path)

    def run(batch: np.ndarray):
        scores, maps = session.run(["scores", "maps"], {"images": np.ascontiguousarray(batch, np.uint8)})
        return scores, maps

    return Predictor(run, meta["config"], meta["calibration"], "onnxruntime", str(path))


# --------------------------------------------------------------------------- predicting

@dataclass
class Prediction:
    """One image's result; ``map`` (float32) and ``mask`` (bool) have the image's own size."""

    name: str
    score: float
    anomalous: bool
    image: np.ndarray
    map: np.ndarray
    mask: np.ndarray


def iter_predictions(predictor: Predictor, items: Sequence, thresholds: Thresholds, batch_size: int = 16,
                     skipped: Optional[list] = None, progress: bool = False) -> Iterator[Prediction]:
    """:class:`Prediction` per readable image of ``items`` (from :func:`collect_images`), in order;
    unreadable files go to ``skipped``.  Maps are resized back to each image's size (bilinear)."""
    from tqdm.auto import tqdm

    with tqdm(total=len(items), desc="predict", unit="img", disable=not progress) as bar:
        for batch, entries in image_batches(read_images(items), predictor.size, batch_size, skipped):
            scores, maps = predictor.run(batch)
            for (name, image), score, small in zip(entries, scores, maps):
                h, w = image.shape[:2]
                full = small if small.shape == (h, w) else cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
                yield Prediction(name, float(score), bool(score > thresholds.image), image, full,
                                 full > thresholds.pixel)
            bar.update(len(entries))
        bar.update(bar.total - bar.n)


def predict(model: Union[str, Path, Predictor], images, threshold=None, pixel_threshold: Optional[float] = None,
            device: Union[str, torch.device, None] = None, batch_size: int = 16) -> List[Prediction]:
    """Score, decide and localise: one :class:`Prediction` per image.

    ``model``: a ``model.pt``, an exported ``.onnx`` file or a :class:`Predictor`; ``images``:
    paths, folders or uint8 arrays (grey or RGB, any size).  Thresholds as in
    :func:`resolve_thresholds` (default: the calibrated ones).  Unreadable files are skipped
    with a warning.  Book chapter: *Using a trained model*.
    """
    import warnings

    predictor = load_predictor(model, device)
    thresholds = resolve_thresholds(predictor.calibration, threshold, pixel_threshold, predictor.bounded,
                                    predictor.config.score)
    skipped: list = []
    results = list(iter_predictions(predictor, collect_images(images), thresholds, batch_size, skipped))
    for entry in skipped:
        warnings.warn(f"skipped {entry['name']}: {entry['error']}", stacklevel=2)
    return results


# --------------------------------------------------------------------------- a run's files

def predict_to_folder(model: Union[str, Path, Predictor], inputs, output: Union[str, Path], threshold=None,
                      pixel_threshold: Optional[float] = None, device=None, batch_size: int = 16,
                      progress: bool = True) -> dict:
    """``nsa-tutorial predict``: ``predictions.csv`` and ``predictions.json`` for the run, and per
    image ``overlays/NAME.png`` (heatmap over the image, mask outline in white) and
    ``masks/NAME.png`` (0/255) at the image's own size.

    Everything is written into a hidden folder beside ``output`` and moved into place only when
    the run succeeded: a failed run leaves an earlier run's results untouched.  Returns the
    run's summary (the JSON without its per-image rows).
    """
    import shutil
    import tempfile

    output = Path(output).expanduser()
    _check_output_folder(output)
    predictor = load_predictor(model, device)
    thresholds = resolve_thresholds(predictor.calibration, threshold, pixel_threshold, predictor.bounded,
                                    predictor.config.score)
    items = collect_images(inputs)
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output.name}.partial-", dir=output.parent))
    try:
        skipped: list = []
        rows = [_write_one(p, staging, 1.0 if predictor.bounded else 2 * thresholds.pixel)
                for p in iter_predictions(predictor, items, thresholds, batch_size, skipped, progress)]
        if not rows:
            raise ValueError(f"none of the {len(items)} images could be read: {skipped[0]['error']}")
        summary = _write_run(staging, predictor, thresholds, rows, skipped)
        _publish(staging, output)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return summary


def _check_output_folder(output: Path) -> None:
    if output.exists() and not output.is_dir():
        raise ValueError(f"output {output} is an existing file; expected a folder (new, or of an earlier run)")
    if output.is_dir() and any(output.iterdir()) and not (output / "predictions.json").is_file():
        raise ValueError(f"output folder {output} is not empty and holds no earlier predict run "
                         "(predictions.json); choose a new or empty folder")


def overlay_prediction(p: Prediction, vmax: float) -> np.ndarray:
    """The picture ``predict`` writes for ``p``: its map over the image (jet on ``[0, vmax]``) and
    its mask outlined in white, RGB uint8 at the image's size."""
    from .plotting import overlay_heatmap

    overlay = overlay_heatmap(p.image, p.map, vmax=vmax)
    contours, _ = cv2.findContours(p.mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    return cv2.drawContours(np.ascontiguousarray(overlay), contours, -1, (255, 255, 255), 1)


def _write_one(p: Prediction, folder: Path, vmax: float) -> dict:
    from .layout import _write_png

    overlay = overlay_prediction(p, vmax)
    overlay_path, mask_path = Path("overlays") / f"{p.name}.png", Path("masks") / f"{p.name}.png"
    _write_png(folder / overlay_path, cv2.cvtColor(overlay, cv2.COLOR_RGB2BGR))
    _write_png(folder / mask_path, p.mask.astype(np.uint8) * 255)
    return {"name": p.name, "score": p.score, "anomalous": p.anomalous,
            "anomalous_pixel_fraction": float(p.mask.mean()), "height": int(p.map.shape[0]),
            "width": int(p.map.shape[1]), "overlay": overlay_path.as_posix(), "mask": mask_path.as_posix()}


def _write_run(folder: Path, predictor: Predictor, thresholds: Thresholds, rows: list, skipped: list) -> dict:
    import csv
    import json

    from . import __version__

    summary = {"model": predictor.source, "backend": predictor.backend, "package_version": __version__,
               "image_threshold": thresholds.image, "pixel_threshold": thresholds.pixel,
               "threshold_source": thresholds.source, "n_images": len(rows),
               "n_anomalous": sum(r["anomalous"] for r in rows), "skipped": skipped}
    (folder / "predictions.json").write_text(json.dumps({**summary, "images": rows}, indent=1) + "\n")
    with open(folder / "predictions.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return summary


def _publish(staging: Path, output: Path) -> None:
    """Move the finished run into ``output``, replacing an earlier run only now."""
    import shutil

    old = output.with_name(f".{output.name}.old-{os.getpid()}")
    if output.exists():
        os.replace(output, old)
    os.replace(staging, output)
    shutil.rmtree(old, ignore_errors=True)
