"""Image AUROC, pixel AUROC and AU-PRO, computed exactly (no threshold grid).

Book chapter: *Evaluation*.

All functions take a stack of anomaly maps, ``N x H x W`` (higher = more
anomalous), and where needed the ground-truth masks of the same shape
(a pixel is anomalous where the mask is > 0).  Evaluate at the resolution of
the masks you compare against; the paper uses 256 x 256 (Table 8).

The pixel metrics share one idea: sort the scores once, then count, for every
distinct score, the normal pixels and the (weighted) anomalous pixels that have
exactly that score.  Cumulative sums of these counts from the highest score
down give every point of the ROC and PRO curves, with tied pixels entering
together, as a threshold between distinct scores would see them.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from sklearn.metrics import roc_auc_score

# Connects the 8 neighbours within an image, never pixels of different images.
_EIGHT_CONNECTED_PER_IMAGE = np.zeros((3, 3, 3), dtype=bool)
_EIGHT_CONNECTED_PER_IMAGE[1] = True


def _check_maps(maps) -> np.ndarray:
    maps = np.asarray(maps)
    if maps.ndim != 3:
        raise ValueError(f"maps must be an N x H x W stack of anomaly maps, got shape {maps.shape}; "
                         "for a single map pass map[None]")
    if not (maps.dtype == bool or np.issubdtype(maps.dtype, np.floating)
            or np.issubdtype(maps.dtype, np.integer)):
        raise ValueError(f"maps must hold real numbers, got dtype {maps.dtype}")
    if maps.size == 0:
        raise ValueError(f"maps must not be empty, got shape {maps.shape}")
    if not np.all(np.isfinite(maps)):
        raise ValueError("maps must be finite, found NaN or infinite scores")
    return maps


def _check_masks_and_maps(masks, maps) -> tuple[np.ndarray, np.ndarray]:
    """Validated ``(anomalous, maps)``: a boolean N x H x W stack and the maps."""
    maps = _check_maps(maps)
    masks = np.asarray(masks)
    if masks.shape != maps.shape:
        raise ValueError(f"masks and maps must have the same N x H x W shape, got masks {masks.shape} "
                         f"and maps {maps.shape}")
    if not (masks.dtype == bool or np.issubdtype(masks.dtype, np.number)):
        raise ValueError(f"masks must be boolean or numeric (anomalous where > 0), got dtype {masks.dtype}")
    anomalous = masks > 0
    if not anomalous.any():
        raise ValueError("masks contain no anomalous pixel (mask > 0); pixel AUROC and AU-PRO need at "
                         "least one anomalous region")
    if anomalous.all():
        raise ValueError("masks contain no normal pixel (mask == 0); pixel AUROC and AU-PRO need "
                         "normal pixels to count false positives")
    return anomalous, maps


#: Image scores from a pixel map: the paper's mean (Table 1's caption), the maximum, and the mean
#: of the top 1 % of pixels; any ``"topP%"`` with 0 < P < 100 works (see :func:`top_fraction`).
SCORES = ("mean", "max", "top1%")


def top_fraction(score: str) -> float | None:
    """``P / 100`` for ``"topP%"``, ``None`` for ``"mean"`` and ``"max"``; anything else is an error."""
    if score in ("mean", "max"):
        return None
    text = score[3:-1] if isinstance(score, str) and score.startswith("top") and score.endswith("%") else ""
    try:
        fraction = float(text) / 100
    except ValueError:
        fraction = float("nan")
    if not 0 < fraction < 1:
        raise ValueError(f"score must be 'mean', 'max' or 'topP%' with 0 < P < 100 (e.g. 'top1%'), got {score!r}")
    return fraction


def top_count(n_pixels: int, fraction: float) -> int:
    """How many pixels ``"topP%"`` averages: ``ceil(P % of n_pixels)``, at least one."""
    return max(1, int(np.ceil(fraction * n_pixels - 1e-9)))


def image_scores(maps, reduce: str = "mean") -> np.ndarray:
    """One anomaly score per image from its pixel map (``N x H x W -> N``).

    ``reduce="mean"`` is the paper's choice (Table 1); ``"max"`` reacts to a single hot pixel;
    ``"topP%"`` (e.g. ``"top1%"``) is the mean of the ``P`` % highest pixels, between the two:
    a small defect is not drowned by the rest of the image, one hot pixel does not decide.

    >>> image_scores(np.array([[[0.0, 1.0], [0.0, 1.0]]])).tolist()
    [0.5]
    >>> image_scores(np.array([[[0.0, 1.0], [0.5, 0.2]]]), "top50%").tolist()
    [0.75]
    """
    maps = _check_maps(maps)
    fraction = top_fraction(reduce)
    if reduce == "mean":
        return maps.mean(axis=(1, 2), dtype=np.float64)
    if reduce == "max":
        return maps.max(axis=(1, 2)).astype(np.float64)
    flat = maps.reshape(len(maps), -1)
    k = top_count(flat.shape[1], fraction)
    return np.partition(flat, flat.shape[1] - k, axis=1)[:, -k:].mean(axis=1, dtype=np.float64)


def image_auroc(labels, maps, score: str = "mean") -> float:
    """Image-level AUROC with ``score`` of each map as the image's score (:func:`image_scores`;
    the paper's is the mean, Table 1).

    ``labels[i]`` is 0 for a normal and 1 for an anomalous test image.
    """
    maps = _check_maps(maps)
    labels = np.asarray(labels)
    if labels.shape != (maps.shape[0],):
        raise ValueError(f"labels must be a vector with one entry per map ({maps.shape[0]}), "
                         f"got shape {labels.shape}")
    if not np.all((labels == 0) | (labels == 1)):
        raise ValueError(f"labels must be 0 (normal) or 1 (anomalous), got values {np.unique(labels)}")
    if labels.min() == labels.max():
        raise ValueError("image AUROC needs at least one normal (0) and one anomalous (1) image, "
                         f"got only label {labels[0]}")
    return float(roc_auc_score(labels.astype(int), image_scores(maps, score)))


def _counts_per_score(scores: np.ndarray, positive: np.ndarray,
                      weights: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each distinct score, ascending: negatives, positives and summed positive weights.

    ``weights`` has one entry per positive (``scores[positive]``).  Only a plain
    sort of all scores is needed (no argsort); positives are few and are located
    by binary search, in ascending order so that the searches stay cache-friendly.
    """
    ordered = np.sort(scores)
    is_start = np.empty(ordered.size, dtype=bool)
    is_start[0] = True
    np.not_equal(ordered[1:], ordered[:-1], out=is_start[1:])
    starts = np.flatnonzero(is_start)
    n_all = np.diff(starts, append=ordered.size)
    positives = scores[positive]
    by_score = np.argsort(positives)
    where = np.searchsorted(ordered[starts], positives[by_score])
    n_pos = np.bincount(where, minlength=starts.size)
    w_pos = np.bincount(where, weights=weights[by_score], minlength=starts.size)
    return n_all - n_pos, n_pos, w_pos


def pixel_auroc(masks, maps) -> float:
    """Pixel-level AUROC over all pixels of all images (paper Table 2).

    Computed as the Mann-Whitney statistic: the probability that a random
    anomalous pixel scores higher than a random normal one, ties counting
    half, which equals the area under the ROC curve.
    """
    anomalous, maps = _check_masks_and_maps(masks, maps)
    positive = anomalous.ravel()
    n_neg, n_pos, _ = _counts_per_score(maps.ravel(), positive, np.ones(positive.sum()))
    n_neg, n_pos = n_neg.astype(np.float64), n_pos.astype(np.float64)
    negatives_below = np.cumsum(n_neg) - n_neg
    wins = np.sum(n_pos * (negatives_below + 0.5 * n_neg))
    return float(wins / (n_pos.sum() * n_neg.sum()))


def _region_weights(anomalous: np.ndarray) -> tuple[np.ndarray, int]:
    """``1/|C_jk|`` for every anomalous pixel (in ravel order) and the region count M.

    Regions are the 8-connected components of each image's mask (eq. 17).
    """
    regions, n_regions = ndimage.label(anomalous, structure=_EIGHT_CONNECTED_PER_IMAGE)
    region_of_pixel = regions.ravel()[anomalous.ravel()]
    sizes = np.bincount(region_of_pixel)
    return 1.0 / sizes[region_of_pixel], n_regions


def pro_curve(masks, maps) -> tuple[np.ndarray, np.ndarray]:
    """The per-region-overlap curve ``(fpr, pro)`` at every distinct threshold (eq. 17).

    ``PRO(t) = (1/M) sum_j sum_k |P_j(t) & C_jk| / |C_jk|`` with ``P_j(t)`` the pixels of
    image j scoring >= t and ``C_jk`` its k-th 8-connected ground-truth region;
    FPR(t) is the fraction of normal pixels scoring >= t.  Thresholds run over
    all distinct scores, highest first, so pixels with equal scores enter
    together.  The curve starts at (0, 0) and ends at (1, 1); both arrays are
    non-decreasing.
    """
    anomalous, maps = _check_masks_and_maps(masks, maps)
    weights, n_regions = _region_weights(anomalous)
    n_neg, _, w_pos = _counts_per_score(maps.ravel(), anomalous.ravel(), weights)
    # Float64 cumulative sums from the highest score down; clip rounding above 1.
    fpr = np.minimum(np.cumsum(n_neg[::-1], dtype=np.float64) / n_neg.sum(), 1.0)
    pro = np.minimum(np.cumsum(w_pos[::-1], dtype=np.float64) / n_regions, 1.0)
    fpr, pro = np.append(0.0, fpr), np.append(0.0, pro)
    if fpr[-1] < 1.0 or pro[-1] < 1.0:
        fpr, pro = np.append(fpr, 1.0), np.append(pro, 1.0)
    return fpr, pro


def _area_up_to(x: np.ndarray, y: np.ndarray, limit: float) -> float:
    """Trapezoid area under ``y(x)`` on ``[0, limit]``, interpolating y linearly at ``limit``."""
    inside = np.searchsorted(x, limit, side="right")
    xs, ys = x[:inside], y[:inside]
    area = np.sum((xs[1:] - xs[:-1]) * (ys[1:] + ys[:-1])) / 2
    if xs[-1] < limit:  # then x[inside] > limit, as the curve ends at x = 1 >= limit
        x0, y0, x1, y1 = xs[-1], ys[-1], x[inside], y[inside]
        y_limit = y0 + (y1 - y0) * (limit - x0) / (x1 - x0)
        area += (limit - x0) * (y0 + y_limit) / 2
    return float(area)


def au_pro(masks, maps, fpr_limit: float = 0.3) -> float:
    """Area under the PRO curve up to ``fpr_limit``, divided by it (paper Table 8).

    The MVTec AD definition: exact curve from :func:`pro_curve`, trapezoid rule,
    PRO interpolated linearly at the limit.  Dividing by the limit (not by the
    last FPR reached) keeps the result in [0, 1]; 1 means every region is fully
    found before any normal pixel is flagged.
    """
    if not 0 < fpr_limit <= 1:
        raise ValueError(f"fpr_limit must be in (0, 1], got {fpr_limit}")
    fpr, pro = pro_curve(masks, maps)
    # min() only absorbs rounding: the exact value cannot exceed 1.
    return min(1.0, _area_up_to(fpr, pro, fpr_limit) / fpr_limit)
