"""A decision threshold from normal images only, at a chosen false-positive rate.

Book chapter: *Using a trained model*.

A user of their own data has no labelled defects to tune a threshold on.  ``train`` holds
back a seeded share of the normal training images (:func:`calibration_split`), scores them
after training and stores, in ``model.pt``, their image scores and the thresholds at which a
target share of normal images (and of normal pixels) would be flagged (:func:`calibrate`;
:func:`nsa_tutorial.checkpoint.load_calibration` reads them back).  :func:`resolve_thresholds`
turns the stored calibration, or a threshold the user gives, into the decision rule that
:func:`nsa_tutorial.inference.predict` applies.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np

from .layout import Category, image_batches, read_images

DEFAULT_CALIBRATION_FRACTION = 0.2
DEFAULT_TARGET_FPR = 0.01
#: FPRs at which the pixel threshold is stored (log-spaced), so ``fpr=...`` works for pixels too.
PIXEL_FPR_GRID = np.logspace(-6, 0, 601)


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


def calibrate(scorer, images: Sequence, target_fpr: float = DEFAULT_TARGET_FPR,
              batch_size: int = 16) -> dict:
    """Score normal ``images`` (paths or uint8 arrays) with ``scorer`` (a
    :class:`~nsa_tutorial.inference.Predictor`) and derive the image and pixel thresholds.

    Pixel thresholds count only the pixels the model sees (objects: the centre crop).
    Returns the dict stored in ``model.pt`` under ``"calibration"``.
    """
    _check_fpr(target_fpr)
    scores, pixels, unreadable = [], [], []
    window = scorer.window
    for batch, _ in image_batches(read_images(images), scorer.size, batch_size, unreadable):
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
            "image_scores": [float(s) for s in scores], "score": scorer.config.score,
            "pixel_fpr_grid": PIXEL_FPR_GRID.tolist(), "pixel_thresholds": pixels[ks - 1].tolist()}


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


def calibrated_score(calibration: dict) -> str:
    """The image score (``"mean"``, ``"max"``, ``"topP%"``) under which ``calibration`` was made."""
    score = calibration.get("score", "mean")
    return "mean" if score == "mean of the anomaly map" else score  # the wording of earlier files


def resolve_thresholds(calibration: Optional[dict], threshold=None, pixel_threshold: Optional[float] = None,
                       bounded: bool = True, score: str = "mean") -> Thresholds:
    """The thresholds to use: the calibrated ones by default, ``threshold`` (a score or
    ``("fpr", rate)``, see :func:`parse_threshold`) when given; ``pixel_threshold`` overrides
    the pixel one (default: calibrated, or the image threshold for an uncalibrated model).

    ``score`` is how the images to decide on are scored: a calibrated image threshold is used
    only under the score it was calibrated with (a mean and a maximum are different scales).
    """
    threshold = parse_threshold(threshold)
    if calibration is not None and not isinstance(threshold, float) and calibrated_score(calibration) != score:
        raise ValueError(f"the image threshold was calibrated with the {calibrated_score(calibration)!r} score, "
                         f"these images are scored with {score!r}: calibrate again with this score, or pass "
                         "an explicit score threshold (--threshold 0.3)")
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
