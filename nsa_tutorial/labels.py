"""Pixel labels from the intensity change a blend caused (paper eq. 13-14).

Book chapter: *Labels*.

All labels start from the difference image ``d = mean_c |x_tilde - x_dest|``
(0-255 scale) inside the patch masks:

* binary ``m``: ``d > tol``, then a 5x5 median filter removes grain;
* continuous ``c``: a median filter with a disk of radius 5 over ``m * d``;
* logistic ``m / (1 + exp(-k (c - y0)))``, bounded in [0, 1].
"""

from __future__ import annotations

import cv2
import numpy as np
from numba import njit

from .config import LABELS
from .patches import binary_median

DISK_RADIUS = 5
LABEL_MEDIAN = 5  # side of the square median filter of the binary label (eq. 13)


def channel_sum_difference(image: np.ndarray, dest: np.ndarray, region: np.ndarray) -> np.ndarray:
    """``sum_c |image - dest|`` inside ``region`` as uint16 (exact; ``d`` is this over C)."""
    diff = cv2.absdiff(image, dest).astype(np.uint16)  # |a - b| of uint8 images is exact in uint8
    channels = np.atleast_3d(diff)  # H x W x C, also for grey images
    total = channels[..., 0].copy()
    for c in range(1, channels.shape[2]):  # one add per channel: ~7x faster than sum(axis=2)
        total += channels[..., c]
    total *= region
    return total


def bounding_box(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """``(y0, y1, x0, x1)``, half-open, of the non-zero pixels of a 2-D mask; None if there are none."""
    x, y, w, h = cv2.boundingRect((mask != 0).view(np.uint8))
    return None if w == 0 else (y, y + h, x, x + w)


def binary_label(diff_sum: np.ndarray, channels: int, tol: float = 1.0) -> np.ndarray:
    """Eq. 13 (binary) with the 5x5 median filter: ``d > tol`` where ``d = diff_sum / C``."""
    return binary_median(diff_sum > tol * channels, LABEL_MEDIAN)


@njit(cache=True, nogil=True)
def _sliding_median(values: np.ndarray, radius: int, y0: int, y1: int, x0: int,
                    x1: int) -> np.ndarray:  # pragma: no cover (compiled)
    """Huang's sliding-histogram median over a disk, one row at a time (compiled by numba).

    Moving the disk one pixel right removes its left edge and adds its right edge:
    2 (2 r + 1) histogram updates instead of re-sorting (2 r + 1)^2 values.  ``med``
    tracks the answer with ``below`` = the number of values under it, so it moves
    only as far as the median changed.  Pixels outside the image are not counted;
    the median of ``n`` values is the smallest ``v`` with more than ``n / 2`` values
    ``<= v`` (the upper median when ``n`` is even), as in scikit-image.  Only the
    output window ``[y0, y1) x [x0, x1)`` is computed; the rest stays 0.
    """
    h, w = values.shape
    half = np.empty(2 * radius + 1, np.int64)  # half-widths of the disk's rows
    for dy in range(-radius, radius + 1):
        half[dy + radius] = int(np.sqrt(radius * radius - dy * dy))
    out = np.zeros_like(values)
    hist = np.zeros(int(values.max()) + 1, np.int64)
    for y in range(y0, y1):
        hist[:] = 0
        pop = below = med = 0
        for dy in range(-radius, radius + 1):  # the disk at x = x0
            if 0 <= y + dy < h:
                for x in range(max(x0 - half[dy + radius], 0), min(x0 + half[dy + radius], w - 1) + 1):
                    hist[values[y + dy, x]] += 1
                    pop += 1
        for x in range(x0, x1):
            for dy in range(-radius, radius + 1):
                yy, hw = y + dy, half[dy + radius]
                if x == x0 or yy < 0 or yy >= h:
                    continue
                if x - hw - 1 >= 0:  # leaves on the left
                    v = values[yy, x - hw - 1]
                    hist[v] -= 1
                    pop -= 1
                    below -= v < med
                if x + hw < w:  # enters on the right
                    v = values[yy, x + hw]
                    hist[v] += 1
                    pop += 1
                    below += v < med
            while 2 * below > pop:  # too high: step down
                med -= 1
                below -= hist[med]
            while 2 * (below + hist[med]) <= pop:  # too low: step up
                below += hist[med]
                med += 1
            out[y, x] = med
    return out


def median_disk(values: np.ndarray, radius: int = DISK_RADIUS,
                within: tuple[int, int, int, int] | None = None) -> np.ndarray:
    """Median over a disk of ``radius`` of a non-negative integer image (uint16).

    Equal to ``skimage.filters.rank.median(values, skimage.morphology.disk(radius))``
    on the whole image (pixels outside the image are not counted; tested), but
    about 10x faster: a sliding histogram (:func:`_sliding_median`) computed only
    within ``radius`` of the bounding box of the non-zero pixels, since farther away
    more than half of every disk is zero and so is the median.  ``within = (y0, y1, x0, x1)``
    restricts the result further to that box (zero elsewhere).  The reference code's
    float median filter over the whole image is about half its time.

    Batch twin in PyTorch: :func:`~nsa_tutorial.batched.labels.median_disk_batch`.
    """
    if values.dtype != np.uint16 or values.ndim != 2:
        raise ValueError(f"values must be a 2-D uint16 image, got {values.ndim}-D {values.dtype}")
    box = bounding_box(values)
    if box is None:
        return np.zeros_like(values)
    h, w = values.shape
    y0, y1, x0, x1 = max(box[0] - radius, 0), min(box[1] + radius, h), max(box[2] - radius, 0), min(box[3] + radius, w)
    if within is not None:
        y0, y1, x0, x1 = max(y0, within[0]), min(y1, within[1]), max(x0, within[2]), min(x1, within[3])
    if y0 >= y1 or x0 >= x1:
        return np.zeros_like(values)
    # the input the outputs read: ``radius`` more on every side
    cy0, cx0 = max(y0 - radius, 0), max(x0 - radius, 0)
    crop = np.ascontiguousarray(values[cy0:min(y1 + radius, h), cx0:min(x1 + radius, w)])
    out = np.zeros_like(values)
    out[cy0:cy0 + crop.shape[0], cx0:cx0 + crop.shape[1]] = _sliding_median(
        crop, radius, y0 - cy0, y1 - cy0, x0 - cx0, x1 - cx0)
    return out


def continuous_label(diff_sum: np.ndarray, m: np.ndarray, channels: int,
                     within: tuple[int, int, int, int] | None = None) -> np.ndarray:
    """Eq. 13 (continuous): disk-median of ``m * d`` on the 0-255 scale (float32);
    ``within`` as in :func:`median_disk`."""
    return median_disk(diff_sum * m, within=within).astype(np.float32) / np.float32(channels)


def logistic_label(m: np.ndarray, c: np.ndarray, y0: float, k: float) -> np.ndarray:
    """Eq. 14: ``m / (1 + exp(-k (c - y0)))``; ``y0`` and ``k`` on the 0-255 scale (Table 4)."""
    return m / (1 + np.exp(np.float32(-k) * (c.astype(np.float32) - np.float32(y0))))


def make_label(image: np.ndarray, dest: np.ndarray, region: np.ndarray, kind: str,
               y0: float = 0.0, k: float = 1.0, tol: float = 1.0) -> np.ndarray:
    """The label of one synthetic sample: ``kind`` is binary, continuous or logistic.

    ``image`` is the blended sample, ``dest`` the normal image it came from and
    ``region`` the union of the patch masks (pixels outside can never be labelled).
    The work is done on the bounding box of ``region`` plus a margin wide enough
    for both median filters, which gives the same result as the whole image.

    Batch twin in PyTorch: :func:`~nsa_tutorial.batched.labels.label_batch`.
    """
    if image.shape != dest.shape or region.shape != dest.shape[:2]:
        raise ValueError(f"image {image.shape}, dest {dest.shape} and region {region.shape} must align")
    if kind not in LABELS:
        raise ValueError(f"label kind must be one of {LABELS}, got {kind!r}")
    label = np.zeros(region.shape, np.float32)
    box = bounding_box(region)
    if box is None:
        return label
    margin = 2 * DISK_RADIUS + 2
    top, left = max(box[0] - margin, 0), max(box[2] - margin, 0)
    window = np.s_[top:box[1] + margin, left:box[3] + margin]
    channels = image.shape[2] if image.ndim == 3 else 1
    diff_sum = channel_sum_difference(image[window], dest[window], region[window])
    m = binary_label(diff_sum, channels, tol)
    if kind == "binary":
        label[window] = m
    else:  # only region pixels are kept, so the median is needed only within its box
        c = continuous_label(diff_sum, m, channels, (box[0] - top, box[1] - top, box[2] - left, box[3] - left))
        label[window] = c if kind == "continuous" else logistic_label(m, c, y0, k)
    # the median filters can fill holes of the region (background in both images, gaps
    # between overlapping patches): those pixels were never part of a patch mask
    return label * region
