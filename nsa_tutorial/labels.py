"""Pixel labels from the intensity change a blend caused (paper eq. 13-14).

Book chapter: *Labels*.

All labels start from the difference image ``d = mean_c |x_tilde - x_dest|``
(0-255 scale) inside the patch masks:

* binary ``m``: ``d > tol``, then a 5x5 median filter removes grain;
* continuous ``c``: a median filter with a disk of radius 5 over ``m * d``;
* logistic ``m / (1 + exp(-k (c - y0)))``, bounded in [0, 1].
"""

from __future__ import annotations

import numpy as np
from skimage.filters.rank import median as rank_median
from skimage.morphology import disk

from .patches import binary_median

DISK_RADIUS = 5


def channel_sum_difference(image: np.ndarray, dest: np.ndarray, region: np.ndarray) -> np.ndarray:
    """``sum_c |image - dest|`` inside ``region`` as uint16 (exact; ``d`` is this over C)."""
    diff = np.abs(image.astype(np.int16) - dest.astype(np.int16))
    total = diff.sum(axis=2) if diff.ndim == 3 else diff
    return (total * region).astype(np.uint16)


def binary_label(diff_sum: np.ndarray, channels: int, tol: float = 1.0) -> np.ndarray:
    """Eq. 13 (binary) with the 5x5 median filter: ``d > tol`` where ``d = diff_sum / C``."""
    return binary_median(diff_sum > tol * channels, 5)


def median_disk(values: np.ndarray, radius: int = DISK_RADIUS) -> np.ndarray:
    """Median over a disk of ``radius`` of a non-negative integer image (uint16, < 4096).

    Equal to ``skimage.filters.rank.median(values, disk(radius))`` on the whole
    image (pixels outside the image are not counted), but computed only over the
    bounding box of the non-zero pixels plus a margin: far from them every
    neighbourhood is all zero and so is the median.  This is the fast path that
    replaces the reference code's float median filter (about half its time).
    """
    ys, xs = np.nonzero(values)
    out = np.zeros_like(values)
    if len(ys) == 0:
        return out
    h, w = values.shape
    y0, y1 = max(ys.min() - 2 * radius, 0), min(ys.max() + 2 * radius + 1, h)
    x0, x1 = max(xs.min() - 2 * radius, 0), min(xs.max() + 2 * radius + 1, w)
    crop = rank_median(values[y0:y1, x0:x1], disk(radius))
    # keep pixels within `radius` of the non-zero box: their neighbourhoods are complete
    iy0, iy1 = max(ys.min() - radius, 0), min(ys.max() + radius + 1, h)
    ix0, ix1 = max(xs.min() - radius, 0), min(xs.max() + radius + 1, w)
    out[iy0:iy1, ix0:ix1] = crop[iy0 - y0:iy1 - y0, ix0 - x0:ix1 - x0]
    return out


def continuous_label(diff_sum: np.ndarray, m: np.ndarray, channels: int) -> np.ndarray:
    """Eq. 13 (continuous): disk-median of ``m * d`` on the 0-255 scale (float32)."""
    return median_disk(diff_sum * m.astype(np.uint16)).astype(np.float32) / channels


def logistic_label(m: np.ndarray, c: np.ndarray, y0: float, k: float) -> np.ndarray:
    """Eq. 14: ``m / (1 + exp(-k (c - y0)))``; ``y0`` and ``k`` on the 0-255 scale (Table 4)."""
    return (m / (1.0 + np.exp(-k * (c.astype(np.float64) - y0)))).astype(np.float32)


def make_label(image: np.ndarray, dest: np.ndarray, region: np.ndarray, kind: str,
               y0: float = 0.0, k: float = 1.0, tol: float = 1.0) -> np.ndarray:
    """The label of one synthetic sample: ``kind`` is binary, continuous or logistic.

    ``image`` is the blended sample, ``dest`` the normal image it came from and
    ``region`` the union of the patch masks (pixels outside can never be labelled).
    The work is done on the bounding box of ``region`` plus a margin wide enough
    for both median filters, which gives the same result as the whole image.
    """
    if image.shape != dest.shape or region.shape != dest.shape[:2]:
        raise ValueError(f"image {image.shape}, dest {dest.shape} and region {region.shape} must align")
    if kind not in ("binary", "continuous", "logistic"):
        raise ValueError(f"label kind must be 'binary', 'continuous' or 'logistic', got {kind!r}")
    label = np.zeros(region.shape, np.float32)
    ys, xs = np.nonzero(region)
    if len(ys) == 0:
        return label
    margin = 2 * DISK_RADIUS + 2
    window = (slice(max(ys.min() - margin, 0), ys.max() + margin + 1),
              slice(max(xs.min() - margin, 0), xs.max() + margin + 1))
    channels = image.shape[2] if image.ndim == 3 else 1
    diff_sum = channel_sum_difference(image[window], dest[window], region[window])
    m = binary_label(diff_sum, channels, tol)
    if kind == "binary":
        label[window] = m
    else:
        c = continuous_label(diff_sum, m, channels)
        label[window] = c if kind == "continuous" else logistic_label(m, c, y0, k)
    # the median filters can fill holes of the region (background in both images, gaps
    # between overlapping patches): those pixels were never part of a patch mask
    return label * region
