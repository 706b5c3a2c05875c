"""Patch sampling for NSA: sizes, object masks, constraints and placement (paper eq. 5-12).

Book chapter: *Patch sampling*.

Rectangles are ``(x0, y0, x1, y1)`` in pixels, half-open (``image[y0:y1, x0:x1]``).
Every retry loop is bounded by ``config.max_tries``: a patch whose constraints
cannot be met is skipped (the caller counts it), never retried forever.
"""

from __future__ import annotations

from typing import Optional, Tuple

import cv2
import numpy as np

from .config import Config

OBJECT_MEDIAN = 7  # side of the square median filter of the object mask (eq. 8)

Rect = Tuple[int, int, int, int]

GAMMA_SHAPE, GAMMA_SCALE, GAMMA_OFFSET = 2.0, 0.1, 0.06  # eq. 5-6
SCALE_MEAN, SCALE_STD = 1.0, 0.5  # eq. 9: N(1, 1/4) has variance 1/4


def truncated_gamma_fraction(rng: np.random.Generator, lo: float, hi: float, size=None):
    """Relative patch side ``min(max(lo, 0.06 + r), hi)``, ``r ~ Gamma(2, 0.1)`` (eq. 5-6)."""
    return np.clip(GAMMA_OFFSET + rng.gamma(GAMMA_SHAPE, GAMMA_SCALE, size), lo, hi)


def sample_patch_size(rng: np.random.Generator, height: int, width: int,
                      config: Config) -> Tuple[int, int]:
    """Patch height and width in pixels from the truncated Gamma of eq. 5-6.

    Batch twin in PyTorch: ``nsa_tutorial.batched.patches._patch_sizes``.
    """
    h = truncated_gamma_fraction(rng, config.h_min, config.h_max) * height
    w = truncated_gamma_fraction(rng, config.w_min, config.w_max) * width
    return max(int(round(h)), 1), max(int(round(w)), 1)


def sample_cutpaste_size(rng: np.random.Generator, height: int, width: int) -> Tuple[int, int]:
    """CutPaste's patch shape (ablation C): area ratio U(0.02, 0.15), aspect from (0.3, 1) or (1, 3.3)."""
    area = rng.uniform(0.02, 0.15) * height * width
    aspect = rng.uniform(0.3, 1.0) if rng.random() < 0.5 else rng.uniform(1.0, 3.3)
    h = int(round(np.sqrt(area * aspect)))
    w = int(round(np.sqrt(area / aspect)))
    return min(max(h, 1), height - 2), min(max(w, 1), width - 2)


def binary_median(mask: np.ndarray, ksize: int) -> np.ndarray:
    """``cv2.medianBlur(mask, ksize)`` for a 0/1 mask, computed as a box count (exact, ~20x faster).

    The median of 0/1 values over a k x k window is 1 exactly when more than half
    of the window is 1; borders are replicated as in ``medianBlur``.

    Batch twin in PyTorch: :func:`~nsa_tutorial.batched.patches.binary_median_batch`.
    """
    counts = cv2.boxFilter(mask.astype(np.uint8), cv2.CV_16U, (ksize, ksize), normalize=False,
                           borderType=cv2.BORDER_REPLICATE)
    return counts > (ksize * ksize) // 2


def object_mask(image: np.ndarray, background: float, t_brightness: float) -> np.ndarray:
    """Object pixels of ``image`` (eq. 8): grey value far from the background brightness.

    The grey value is the mean over colour channels; a pixel is *object* when
    ``|grey - b| > t_brightness`` (the paper prints ``<``, but the intent, and the
    authors' code, mark pixels far from the background).  A 7x7 median filter then
    removes grain.  Computed on the channel sum, so the test is exact in integers.

    Batch twin in PyTorch: :func:`~nsa_tutorial.batched.patches.object_mask_batch`.
    """
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    channels = image.shape[2] if image.ndim == 3 else 1
    grey = image.astype(np.float32)
    total = cv2.transform(grey, np.ones((1, channels))) if channels > 1 else grey
    far = np.abs(total - channels * background) > channels * t_brightness
    return binary_median(far, OBJECT_MEDIAN)


def fraction_in_rects(integral: np.ndarray, rects: np.ndarray) -> np.ndarray:
    """Fraction of mask pixels inside each rectangle, from the mask's integral image.

    ``integral`` is ``cv2.integral(mask)``; ``rects`` is an ``(N, 4)`` array of
    ``(x0, y0, x1, y1)``.  O(1) per rectangle, so a retry loop can test all its
    candidates at once.

    Batch twin in PyTorch: ``nsa_tutorial.batched.patches._fraction_in_rects``.
    """
    x0, y0, x1, y1 = rects.T
    inside = integral[y1, x1] - integral[y0, x1] - integral[y1, x0] + integral[y0, x0]
    area = np.maximum((x1 - x0) * (y1 - y0), 1)
    return inside / area


def sample_source_rect(rng: np.random.Generator, size: Tuple[int, int], shape: Tuple[int, int],
                       config: Config, src_integral: Optional[np.ndarray]) -> Optional[Rect]:
    """Source patch (eq. 7): uniform centre, clipped by the border, accepted by the object test.

    The centre is uniform in ``[W w_min / 2, W - W w_min / 2]`` (same for y), so a
    patch may be cut by the image border.  With background constraints the patch
    must satisfy ``|p_s & m_s| / |p_s| > t_object``; only the centre is redrawn, at
    most ``config.max_tries`` times.  Returns ``None`` when no centre passes.

    Batch twin in PyTorch: ``nsa_tutorial.batched.patches._source_rects``.
    """
    (h, w), (height, width) = size, shape
    n = config.max_tries
    cx = rng.uniform(width * config.w_min / 2, width - width * config.w_min / 2, n)
    cy = rng.uniform(height * config.h_min / 2, height - height * config.h_min / 2, n)
    left, top = np.round(cx - w / 2).astype(int), np.round(cy - h / 2).astype(int)
    # clip both ends: a patch sticking out on any side is cut by the border, never shifted
    x0, x1 = np.clip(left, 0, width), np.clip(left + w, 0, width)
    y0, y1 = np.clip(top, 0, height), np.clip(top + h, 0, height)
    rects = np.stack([x0, y0, x1, y1], axis=1)
    rects = rects[(rects[:, 2] - rects[:, 0] >= 2) & (rects[:, 3] - rects[:, 1] >= 2)]
    if src_integral is not None:
        rects = rects[fraction_in_rects(src_integral, rects) > config.t_object]
    return tuple(int(v) for v in rects[0]) if len(rects) else None


def resize_scale(rng: np.random.Generator, patch_hw: Tuple[int, int],
                 shape: Tuple[int, int], config: Config) -> float:
    """The resize factor ``s`` of eq. 9.

    ``r_s ~ N(1, 1/4)`` (standard deviation 0.5) is clipped to ``[s_min, s_max]``,
    then ``s`` is clipped so that the resized patch keeps its aspect ratio and stays
    within the size bounds of eq. 5-6 (``config.size_clip == "paper"``, the paper's
    text).  With ``"reference"`` the bounds are halved, as in the authors' code, which
    compares full sides with its half-width bounds: a resized side lies in
    ``[w_min W / 2, w_max W / 2]`` (e.g. at most 0.40 of the image for bottle, 0.12 for
    screw).  :func:`resized_side` turns ``s`` into pixels.

    Batch twin in PyTorch: ``nsa_tutorial.batched.patches._resized_sizes``.
    """
    (h, w), (height, width) = patch_hw, shape
    r = float(np.clip(rng.normal(SCALE_MEAN, SCALE_STD), config.s_min, config.s_max))
    f = 0.5 if config.size_clip == "reference" else 1.0
    upper = min(r, f * config.w_max * width / w, f * config.h_max * height / h)
    s = max(f * config.w_min * width / w, f * config.h_min * height / h, upper)
    # the patch must also fit inside the image with a one-pixel margin
    return min(s, (width - 2) / w, (height - 2) / h)


def resized_side(s: float, side: int, config: Config) -> int:
    """Pixels of a patch side ``side`` after resizing by ``s`` (at least 3).

    ``"paper"``: rounded.  ``"reference"``: the authors' code keeps half-widths in whole
    pixels, ``2 * floor(s * side / 2)`` (about 3 % less area).  Either way a side is at least
    3 pixels, the smallest patch with an interior pixel for the Poisson solve; so a reference
    side of 2 (possible where the halved bound ``w_min W / 2`` is under 4 pixels: 3.8 px for
    ``w_min`` = 0.06 at quick mode's 128 px) becomes 3, the one odd reference side.
    """
    if config.size_clip == "reference":
        return max(2 * int(s * side / 2), 3)
    return max(int(round(s * side)), 3)


def sample_dest_offset(rng: np.random.Generator, src_obj: Optional[np.ndarray],
                       shape: Tuple[int, int], config: Config,
                       dest_obj: Optional[np.ndarray], dest_integral: Optional[np.ndarray]
                       ) -> Optional[Tuple[int, int]]:
    """Top-left corner of the destination patch (eq. 10-12), or ``None``.

    The resized patch (of ``src_obj``'s shape) lies fully inside the image with a
    one-pixel margin.  With background constraints a corner is accepted when the
    destination patch is object enough (eq. 11, ``> t_object``) and the object
    parts of source and destination overlap (eq. 12, ``> t_overlap``).  Eq. 11 is
    tested for all candidates at once; eq. 12 only for those that pass it.

    Eq. 11 is tested on the *destination's* object fraction, as the paper writes it, in
    both ``size_clip`` modes.  The authors' code tests the resized *source* patch's object
    fraction instead, which does not depend on the corner: when it fails, every retry
    fails and the patch is skipped.  We do not reproduce that variant.

    Batch twin in PyTorch: ``nsa_tutorial.batched.patches._dest_corners``.
    """
    (ph, pw), (height, width) = src_obj.shape, shape
    if ph > height - 2 or pw > width - 2:  # cannot keep a one-pixel margin
        return None
    n = config.max_tries if dest_integral is not None else 1
    x0 = rng.integers(1, width - pw, n)  # the patch ends at least one pixel before the border
    y0 = rng.integers(1, height - ph, n)
    if dest_integral is None:
        return int(x0[0]), int(y0[0])
    rects = np.stack([x0, y0, x0 + pw, y0 + ph], axis=1)
    candidates = np.flatnonzero(fraction_in_rects(dest_integral, rects) > config.t_object)
    src_count = src_obj.sum()
    for i in candidates:
        overlap = np.count_nonzero(dest_obj[y0[i]:y0[i] + ph, x0[i]:x0[i] + pw] & src_obj)
        if src_count > 0 and overlap / src_count > config.t_overlap:
            return int(x0[i]), int(y0[i])
    return None


def ellipse_mask(rng: np.random.Generator, h: int, w: int, n: int = 5) -> np.ndarray:
    """Union of ``n`` random ellipses inside an ``h x w`` patch (ablation D)."""
    mask = np.zeros((h, w), np.uint8)
    for _ in range(n):
        centre = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        axes = (int(rng.integers(max(w // 6, 1), max(w // 2, 2))),
                int(rng.integers(max(h // 6, 1), max(h // 2, 2))))
        cv2.ellipse(mask, centre, axes, float(rng.uniform(0, 180)), 0, 360, 1, -1)
    return mask.astype(bool)
