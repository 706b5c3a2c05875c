"""Anomaly maps for a test set and the paper's metrics on them (paper Sec. 4.2, App. B.2).

Book chapter: *Evaluation*.

As the authors evaluate: test images and masks are resized to the evaluation
resolution (256 in full mode; masks nearest-neighbour).  The paper's object classes
are seen by the model as their centre ``image_size`` crop and the map is zero-padded
back to the full resolution before pixel metrics; texture classes are seen whole.
A user's own data (any class not in the paper's Table 4) is trained and scored whole, so
that no part of a user's image is silently dropped (:func:`centre_cropped`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from .config import Config
from .layout import Category, load_test_item
from .training_set import normalize_batch
from .metrics import SCORES, au_pro, image_auroc, image_scores, pixel_auroc, top_count, top_fraction


def centre_cropped(config: Config) -> bool:
    """Whether the model sees only the centre crop of a test image (the map outside is 0).

    Evaluation follows the training geometry: a model trained on centre crops (the paper's
    protocol for MVTec AD objects and chest X-rays) is scored on the centre crop; one
    trained on whole images (textures, and a user's own data even with object settings,
    ``kind="object"`` or ``like="bottle"``: ``get_config`` gives them no crop) sees the whole
    test image resized to ``image_size``.  Scoring whole what was trained on crops shows the
    model a scale and a border it never saw (chance-level results on the solar cells).
    """
    return config.crop is not None


def eval_size(config: Config) -> int:
    """Side of the square images the metrics are computed at (256 for the paper's settings)."""
    return config.resize if centre_cropped(config) else config.image_size


def centre_window(size: int, crop: int) -> slice:
    """The centre ``crop`` pixels of a side of ``size`` pixels: what a centre-cropped model sees."""
    start = (size - crop) // 2
    return slice(start, start + crop)


class ScoringModel(torch.nn.Module):
    """uint8 RGB images ``B x S x S x 3`` at the evaluation size ``S`` -> (scores ``B``, maps ``B x S x S``).

    The one eval forward: evaluation (:func:`predict_maps`), prediction and calibration
    (:mod:`nsa_tutorial.inference`) and the ONNX export (:mod:`nsa_tutorial.export`) all run it.
    It normalises as training does, shows the model the centre crop (objects; the whole image
    otherwise), zero-pads the map back to ``S`` and scores an image by ``config.score`` of the map
    (the paper's mean, Table 1; :func:`nsa_tutorial.metrics.image_scores` computes the same).
    Book chapters: *Evaluation*, *Using a trained model*.
    """

    def __init__(self, model: torch.nn.Module, config: Config) -> None:
        super().__init__()
        self.model, self.size, self.normalize = model, eval_size(config), config.normalize
        self.window = centre_window(self.size, config.image_size)
        self.score, fraction = config.score, top_fraction(config.score)
        self.top = top_count(self.size * self.size, fraction) if fraction else None

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        w = self.window
        maps = self.model(normalize_batch(images[:, w, w], self.normalize))[:, 0]
        before, after = w.start, self.size - w.stop
        maps = torch.nn.functional.pad(maps, (before, after, before, after))
        flat = maps.flatten(1)
        if self.score == "mean":
            return flat.mean(dim=1), maps
        if self.score == "max":
            return flat.amax(dim=1), maps
        return flat.topk(self.top, dim=1).values.mean(dim=1), maps


@torch.no_grad()
def predict_maps(model: torch.nn.Module, images: np.ndarray, config: Config,
                 device: str | torch.device = "cpu", batch_size: int = 16) -> np.ndarray:
    """Pixel anomaly maps (N x S x S, float32) of :class:`ScoringModel` for uint8 images
    N x S x S x 3 at ``S = eval_size(config)``.

    Objects: the model sees the centre ``image_size`` crop; the rest of the map is 0.
    """
    size = eval_size(config)
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.shape[1:] != (size, size, 3):
        raise ValueError(f"images must be uint8 N x {size} x {size} x 3 (the evaluation size of this config), "
                         f"got {getattr(images, 'dtype', type(images))} {getattr(images, 'shape', '')}")
    scoring = ScoringModel(model, config).to(device).eval()
    maps = np.zeros(images.shape[:3], np.float32)
    for start in range(0, len(images), batch_size):
        batch = torch.from_numpy(images[start:start + batch_size]).to(device)
        maps[start:start + len(batch)] = scoring(batch)[1].float().cpu().numpy()
    return maps


def load_test_set(category: Category, config: Config):
    """Test images, masks and labels at the evaluation resolution."""
    size = eval_size(config)
    pairs = [load_test_item(item, size) for item in category.test]
    images = np.stack([p[0] for p in pairs])
    masks = np.stack([p[1] for p in pairs])
    labels = np.array([item.label for item in category.test])
    return images, masks, labels


def compute_metrics(labels: np.ndarray, maps: np.ndarray, masks: Optional[np.ndarray], score: str = "mean") -> dict:
    """Image AUROC (``score`` of the map: the paper's mean by default), pixel AUROC and AU-PRO up
    to FPR 0.3; ``image_auroc_by_score`` gives the image AUROC under every score of
    :data:`nsa_tutorial.metrics.SCORES` (and ``score``), so that the choice is visible.

    Without masks (``masks is None``) the pixel metrics are ``None``.
    """
    by_score = {s: image_auroc(labels, maps, s) for s in dict.fromkeys((*SCORES, score))}
    result = {"image_auroc": by_score[score], "score": score, "image_auroc_by_score": by_score,
              "pixel_auroc": None, "au_pro": None,
              "n_normal": int((labels == 0).sum()), "n_anomalous": int((labels == 1).sum()),
              "resolution": int(maps.shape[1])}
    if masks is not None:
        result["pixel_auroc"] = pixel_auroc(masks, maps)
        result["au_pro"] = au_pro(masks, maps, fpr_limit=0.3)
    return result


def evaluate(model: torch.nn.Module, category: Category, config: Config,
             device: str | torch.device = "cpu", threshold: Optional[float] = None) -> dict:
    """Metrics of ``model`` on the test split of ``category`` (see :func:`compute_metrics`),
    and the decisions at the image-score ``threshold`` (see :func:`decision_metrics`)."""
    images, masks, labels = load_test_set(category, config)
    maps = predict_maps(model, images, config, device)
    result = compute_metrics(labels, maps, masks if category.has_masks else None, config.score)
    result.update(decision_metrics(labels, image_scores(maps, config.score), threshold))
    if not category.has_masks:
        result["note"] = "no ground_truth masks in the data: image-level metrics only"
    return result


def decision_metrics(labels: np.ndarray, scores: np.ndarray, threshold: Optional[float]) -> dict:
    """Image-level decisions (anomalous when the score is above ``threshold``): precision,
    recall, F1 and false-positive rate, plus the best F1 over all thresholds (an *oracle*: it
    picks the threshold on the test labels, which a user never has).

    Undefined values (no threshold, no flagged image, no normal image) are ``None``.
    Book chapter: *Using a trained model*.
    """
    from sklearn.metrics import precision_recall_curve

    labels, scores = np.asarray(labels).astype(bool), np.asarray(scores, dtype=np.float64)
    precision, recall, cut = precision_recall_curve(labels, scores)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros_like(precision),
                   where=precision + recall > 0)
    best = int(np.argmax(f1[:-1])) if len(cut) else 0
    result = {"image_threshold": threshold, "image_precision": None, "image_recall": None, "image_f1": None,
              "image_fpr": None, "oracle_image_f1": float(f1[best]),
              "oracle_image_threshold": float(cut[best]) if len(cut) else None}
    if threshold is None:
        return result
    flagged = scores > threshold
    tp, fp = int((flagged & labels).sum()), int((flagged & ~labels).sum())
    p = tp / (tp + fp) if tp + fp else None
    r = tp / int(labels.sum()) if labels.any() else None
    result.update(image_precision=p, image_recall=r, image_f1=2 * p * r / (p + r) if p and r else 0.0,
                  image_fpr=fp / int((~labels).sum()) if (~labels).any() else None)
    return result


#: The fields every ``metrics.json`` of a finished run holds; one without them is not finished.
RESULT_FIELDS = ("category", "method", "label", "mode", "image_auroc", "pixel_auroc", "au_pro",
                 "n_normal", "n_anomalous", "resolution")


METRICS = ("image_auroc", "pixel_auroc", "au_pro")


def mean_and_se(values) -> tuple[float, Optional[float]]:
    """Mean and standard error over seeds (the paper's "±"); no error for one seed."""
    values = np.asarray(values, dtype=np.float64)
    se = float(values.std(ddof=1) / np.sqrt(len(values))) if len(values) > 1 else None
    return float(values.mean()), se


def provenance() -> dict:
    """Where a result came from: package version, git commit (if any; ``+dirty`` when tracked
    files differ from it), hardware and date."""
    import platform
    import subprocess
    import time

    from . import __version__

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], capture_output=True, text=True, cwd=Path(__file__).parent,
                              timeout=10).stdout.strip()

    try:
        commit = git("rev-parse", "--short", "HEAD") or None
        if commit and git("status", "--porcelain", "--untracked-files=no"):
            commit += "+dirty"  # the code that ran is not the commit: changed tracked files
    except (OSError, subprocess.SubprocessError):
        commit = None
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else None
    return {"package_version": __version__, "commit": commit, "date": time.strftime("%Y-%m-%d"),
            "machine": platform.platform(), "cpu_count": os.cpu_count(), "gpu": gpu,
            "torch": torch.__version__}
