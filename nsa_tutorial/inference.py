"""Using a trained model: a threshold calibrated on normal images, and predictions on new images.

Book chapter: *Using a trained model*.

The threshold comes from **normal images only** (a user of their own data has no labelled
defects): ``train`` holds back a seeded share of the normal training images (the calibration
split), scores them after training and stores, in ``model.pt``, their image scores and the
thresholds at which a target share of normal images (and of normal pixels) would be flagged
(:func:`calibrate`; :func:`nsa_tutorial.checkpoint.load_calibration` reads them back).

Every prediction goes through :class:`nsa_tutorial.evaluate.ScoringModel`, the one graph that
evaluation and PyTorch prediction run and that :mod:`nsa_tutorial.export` writes to ONNX (and :func:`load_onnx` runs with onnxruntime): uint8 RGB images at the evaluation size in,
image scores (mean of the map, as in the paper's Table 1) and anomaly maps out.  Images of any
size are resized to that square size (as in evaluation) and the maps resized back, so masks
and overlays have each image's own resolution.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

import cv2
import numpy as np
import torch
from torch import nn

from .config import Config
from .layout import Category, ChannelsError, IMAGE_SUFFIXES, as_rgb, read_image, resize_image

DEFAULT_CALIBRATION_FRACTION = 0.2
DEFAULT_TARGET_FPR = 0.01
#: FPRs at which the pixel threshold is stored (log-spaced), so ``fpr=...`` works for pixels too.
PIXEL_FPR_GRID = np.logspace(-6, 0, 601)


# --------------------------------------------------------------------------- calibration

def calibration_split(category: Category, fraction: float, seed: int = 0) -> Tuple[Category, List[Path]]:
    """``(category without the calibration images, calibration image paths)``.

    A seeded share ``fraction`` of the normal training images is held back; ``fraction=0``
    keeps them all for training (the paper's protocol).  At least 2 images stay for training.
    """
    if not isinstance(fraction, (int, float)) or not 0 <= fraction < 1:
        raise ValueError(f"calibration fraction must be in [0, 1), got {fraction!r}")
    n = len(category.train)
    n_held = int(round(fraction * n))
    if fraction > 0 and n_held == 0:
        n_held = 1
    if n - n_held < 2:
        raise ValueError(f"{category.name}: a calibration fraction of {fraction} of {n} training images "
                         "leaves fewer than 2 for training; use a smaller fraction (or 0)")
    order = np.random.default_rng([seed, 0xCA1]).permutation(n)
    held = set(order[:n_held].tolist())
    keep = [p for i, p in enumerate(category.train) if i not in held]
    return dataclasses.replace(category, train=keep), [category.train[i] for i in sorted(held)]


def threshold_at_fpr(normal_scores, fpr: float) -> Tuple[float, float]:
    """``(threshold, expected FPR)``: flag a new image when its score is **above** the threshold.

    The threshold is the ``k``-th largest of ``n`` normal scores with ``k = floor(fpr (n + 1))``.
    A new normal image is exchangeable with the ``n``: it lands among the ``k`` top ranks of the
    ``n + 1`` with probability ``k / (n + 1) <= fpr`` (the expected FPR; exact for continuous
    scores).  With too few images (``k = 0``) the largest score is used and the expected FPR,
    ``1 / (n + 1)``, exceeds the target: the second value says so.
    """
    scores = np.sort(np.asarray(normal_scores, dtype=np.float64).ravel())[::-1]
    _check_fpr(fpr)
    if scores.size == 0 or not np.all(np.isfinite(scores)):
        raise ValueError("normal_scores must be a non-empty array of finite numbers")
    k = int(np.floor(fpr * (scores.size + 1) + 1e-9))
    return float(scores[max(k, 1) - 1]), max(k, 1) / (scores.size + 1)


def _check_fpr(fpr: float) -> None:
    if not isinstance(fpr, (int, float, np.floating)) or not 0 < fpr < 1:
        raise ValueError(f"a false-positive rate must lie in (0, 100%), got {fpr!r}")


def calibrate(scorer: "Predictor", images: Sequence, target_fpr: float = DEFAULT_TARGET_FPR,
              batch_size: int = 16) -> dict:
    """Score normal ``images`` (paths or uint8 arrays) and derive the image and pixel thresholds.

    Pixel thresholds count only the pixels the model sees (objects: the centre crop).
    Returns the dict stored in ``model.pt`` under ``"calibration"``.
    """
    _check_fpr(target_fpr)
    scores, pixels, unreadable = [], [], []
    window = scorer.window
    for batch, _ in _batches(_read_all(images), scorer.size, batch_size, unreadable):
        s, maps = scorer.run(batch)
        scores.extend(s.tolist())
        pixels.append(maps[:, window, window].ravel())
    if unreadable or not scores:
        raise ValueError(f"calibration image {unreadable[0]['name'] if unreadable else '(none given)'} "
                         f"could not be read: {unreadable[0]['error'] if unreadable else 'no images'}")
    pixels = np.sort(np.concatenate(pixels))[::-1]
    image_threshold, expected = threshold_at_fpr(scores, target_fpr)
    ks = np.clip(np.floor(PIXEL_FPR_GRID * (pixels.size + 1) + 1e-9).astype(np.int64), 1, pixels.size)
    return {"n_images": len(scores), "target_fpr": float(target_fpr), "image_threshold": image_threshold,
            "expected_fpr": expected, "pixel_threshold": threshold_at_fpr(pixels, target_fpr)[0],
            "image_scores": [float(s) for s in scores], "score": "mean of the anomaly map",
            "pixel_fpr_grid": PIXEL_FPR_GRID.tolist(), "pixel_thresholds": pixels[ks - 1].tolist()}


def calibrate_checkpoint(model_path: Union[str, Path], images: Sequence, target_fpr: float = DEFAULT_TARGET_FPR,
                         device: Union[str, torch.device, None] = None) -> dict:
    """Calibrate (again) the model in an existing ``model_path`` on normal ``images`` and store the
    result in it (:func:`nsa_tutorial.checkpoint.add_calibration`).  A new run calibrates before
    its one write of ``model.pt`` instead: :func:`nsa_tutorial.train.train` with ``calibration_images``."""
    from .checkpoint import add_calibration

    calibration = calibrate(load_predictor(model_path, device=device), images, target_fpr)
    add_calibration(model_path, calibration)
    return calibration


# --------------------------------------------------------------------------- thresholds

@dataclass(frozen=True)
class Thresholds:
    """The decision rule: an image is anomalous when its score is above ``image``; a pixel
    when its map value is above ``pixel``.  ``source`` says where they came from."""

    image: float
    pixel: float
    source: str


def parse_threshold(text: Union[str, float, None]) -> Union[None, float, Tuple[str, float]]:
    """``"0.3"`` -> 0.3 (a score threshold), ``"fpr=0.5%"`` or ``"fpr=0.005"`` -> ``("fpr", 0.005)``."""
    if text is None or isinstance(text, (int, float)):
        return text
    match = re.fullmatch(r"\s*fpr\s*=\s*([0-9.eE+-]+)\s*(%?)\s*", str(text))
    try:
        if match:
            value = float(match.group(1)) / (100 if match.group(2) else 1)
            _check_fpr(value)
            return ("fpr", value)
        return float(text)
    except ValueError as err:
        raise ValueError(f"threshold {text!r}: expected a score in [0, 1] (e.g. 0.3) or a false-positive "
                         f"rate in (0, 100%) (e.g. fpr=0.5%); {err}") from None


def resolve_thresholds(calibration: Optional[dict], threshold=None, pixel_threshold: Optional[float] = None,
                       bounded: bool = True) -> Thresholds:
    """The thresholds to use: the calibrated ones by default, ``threshold`` (a score or
    ``("fpr", rate)``, see :func:`parse_threshold`) when given; ``pixel_threshold`` overrides
    the pixel one (default: calibrated, or the image threshold for an uncalibrated model)."""
    threshold = parse_threshold(threshold)
    for value in (threshold, pixel_threshold):
        if isinstance(value, float) and (not np.isfinite(value) or value < 0 or (bounded and value > 1)):
            raise ValueError(f"threshold {value} is outside [0, 1], the range of this model's scores")
    if calibration is None and not isinstance(threshold, float):
        raise ValueError("this model was trained without a calibration split (--calibration 0), so it has "
                         "no threshold: pass an explicit score threshold, e.g. --threshold 0.3")
    if threshold is None:
        image, pixel = calibration["image_threshold"], calibration["pixel_threshold"]
        source = f"calibrated at FPR {100 * calibration['target_fpr']:g}% on {calibration['n_images']} normal images"
    elif isinstance(threshold, tuple):
        image = threshold_at_fpr(calibration["image_scores"], threshold[1])[0]
        pixel = float(np.interp(np.log(threshold[1]), np.log(calibration["pixel_fpr_grid"]),
                                calibration["pixel_thresholds"]))
        source = f"FPR {100 * threshold[1]:g}% of the {calibration['n_images']} calibration images"
    else:
        image, source = threshold, "given"
        pixel = calibration["pixel_threshold"] if calibration is not None else threshold
    return Thresholds(float(image), float(pixel if pixel_threshold is None else pixel_threshold), source)


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
        """``run`` over uint8 ``N x S x S x 3`` images in batches: (scores ``N``, maps ``N x S x S``)."""
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


ImageInput = Union[str, Path, np.ndarray]


def collect_images(inputs: Union[ImageInput, Iterable[ImageInput]]) -> List[Tuple[str, ImageInput]]:
    """``(name, path or array)`` of every image: files as given, folders searched recursively
    (``.png/.jpg/.jpeg``), arrays named ``image_0000``...; names are unique."""
    if isinstance(inputs, (str, Path, np.ndarray)):
        inputs = [inputs]
    items: List[Tuple[str, ImageInput]] = []
    for i, item in enumerate(inputs):
        if isinstance(item, np.ndarray):
            items.append((f"image_{i:04d}", item))
            continue
        path = Path(item).expanduser()
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                           and not any(part.startswith(".") for part in p.relative_to(path).parts))
            if not found:
                raise ValueError(f"folder {path} holds no images (expected files ending in "
                                 f"{', '.join(IMAGE_SUFFIXES)})")
            items += [(p.relative_to(path).with_suffix("").as_posix(), p) for p in found]
        elif path.is_file():
            items.append((path.stem, path))
        else:
            raise FileNotFoundError(f"{path} is neither an image file nor a folder")
    if not items:
        raise ValueError("no images given")
    seen: dict = {}
    unique = []
    for name, item in items:
        seen[name] = seen.get(name, 0) + 1
        unique.append((name if seen[name] == 1 else f"{name}-{seen[name]}", item))
    return unique


def _read_all(items) -> Iterator[Tuple[str, Optional[np.ndarray], Optional[str]]]:
    """``(name, RGB image or None, why it was skipped)``; corrupt files are skipped, images whose
    channels do not fit the model are an error."""
    for i, item in enumerate(items):
        name, item = item if isinstance(item, tuple) else (Path(item).stem if not isinstance(item, np.ndarray)
                                                          else f"image_{i:04d}", item)
        if isinstance(item, np.ndarray):
            yield name, as_rgb(item, name), None
            continue
        try:
            yield name, read_image(item), None
        except ChannelsError:
            raise  # a readable image the model cannot take: an error, not a skipped file
        except (ValueError, FileNotFoundError) as err:
            yield name, None, str(err)


def _batches(read: Iterator, size: int, batch_size: int, skipped: Optional[list] = None):
    """Batches of ``(uint8 B x size x size x 3, [(name, image), ...])`` from :func:`_read_all`."""
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    entries: list = []
    for name, image, error in read:
        if image is None:
            if skipped is not None:
                skipped.append({"name": name, "error": error})
            continue
        entries.append((name, image))
        if len(entries) == batch_size:
            yield np.stack([resize_image(im, size) for _, im in entries]), entries
            entries = []
    if entries:
        yield np.stack([resize_image(im, size) for _, im in entries]), entries


def iter_predictions(predictor: Predictor, items: Sequence, thresholds: Thresholds, batch_size: int = 16,
                     skipped: Optional[list] = None, progress: bool = False) -> Iterator[Prediction]:
    """:class:`Prediction` per readable image of ``items`` (from :func:`collect_images`), in order;
    unreadable files go to ``skipped``.  Maps are resized back to each image's size (bilinear)."""
    from tqdm.auto import tqdm

    with tqdm(total=len(items), desc="predict", unit="img", disable=not progress) as bar:
        for batch, entries in _batches(_read_all(items), predictor.size, batch_size, skipped):
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
    thresholds = resolve_thresholds(predictor.calibration, threshold, pixel_threshold, predictor.bounded)
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
    thresholds = resolve_thresholds(predictor.calibration, threshold, pixel_threshold, predictor.bounded)
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


def _write_one(p: Prediction, folder: Path, vmax: float) -> dict:
    from .layout import _write_png
    from .plotting import overlay_heatmap

    overlay = overlay_heatmap(p.image, p.map, vmax=vmax)
    contours, _ = cv2.findContours(p.mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    overlay = cv2.drawContours(np.ascontiguousarray(overlay), contours, -1, (255, 255, 255), 1)
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
