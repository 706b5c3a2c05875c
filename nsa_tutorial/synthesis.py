"""Synthetic anomalies: NSA and the CutPaste, FPI and PII baselines (paper Sec. 3, Tables 5-7).

Book chapter: *Synthetic anomalies*.

Each method is composed from the same three pieces: a patch sampler
(:mod:`nsa_tutorial.patches`), a blend (Poisson editing, copy-paste or linear
interpolation) and a label (:mod:`nsa_tutorial.labels`).  What each method does at each
step is one table, :data:`METHOD_STEPS`, which the code reads and the book renders.
The batched twin for NSA is :mod:`nsa_tutorial.batched.synthesis`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, NamedTuple, Optional, Tuple

import cv2
import numpy as np

from . import patches as P
from .config import Config
from .labels import make_label
from .layout import as_rgb
from .poisson import clone_into

MIN_POISSON_PIXELS = 50  # OpenCV's seamlessClone fails on tiny masks
#: Poisson solvers of synthesis: :data:`nsa_tutorial.poisson.BACKENDS` but the slow sparse "numpy" one.
SYNTHESIS_BACKENDS = ("fast", "opencv")


class Steps(NamedTuple):
    """What one method does at each step of :func:`make_anomaly` (a row of :data:`METHOD_STEPS`)."""

    source: str  # where the patch comes from: "other image" or "same image"
    resize: bool  # the patch is rescaled (eq. 9)
    placement: str  # "moved" (eq. 10-12) or "same location"
    blend: str  # "Poisson", "copy-paste" or "interpolation" ((1 - a) dest + a src)
    mixed: bool  # Poisson always with mixed gradients (otherwise as config.blend says)
    factor: bool  # one factor a ~ U(0.05, 0.95) per image weights the blend and the label
    label: str  # "config.label" (eq. 13-14: binary, continuous or logistic) or "binary" (times a)


#: The paper's methods (Tables 5-7) as steps: the code reads this table, the book renders it.
METHOD_STEPS = {
    "nsa": Steps("other image", True, "moved", "Poisson", False, False, "config.label"),
    "cutpaste": Steps("same image", False, "moved", "copy-paste", False, False, "binary"),
    "fpi": Steps("other image", False, "same location", "interpolation", False, True, "binary"),
    "pii": Steps("other image", False, "same location", "Poisson", True, True, "binary"),
}


@dataclass
class Anomaly:
    """One synthetic sample with what it took to make it."""

    image: np.ndarray  # uint8, the destination's shape
    label: np.ndarray  # float32 HxW
    region: np.ndarray  # bool HxW, union of the patch masks (labels live only here)
    source_rects: List[P.Rect] = field(default_factory=list)
    dest_rects: List[P.Rect] = field(default_factory=list)
    attempted: int = 0  # patches tried (the first always, further ones on a coin flip)
    skipped: int = 0  # patches whose constraints or blend failed

    @property
    def is_normal(self) -> bool:
        """True when every patch failed: the sample is a normal image with an all-zero label."""
        return not self.dest_rects


def _check_inputs(dest: np.ndarray, src: np.ndarray, config: Config, rng) -> Tuple[np.ndarray, np.ndarray]:
    if not isinstance(config, Config):
        raise ValueError(f"config must be a nsa_tutorial.config.Config (use get_config), got {type(config).__name__}")
    if not isinstance(rng, np.random.Generator):
        raise ValueError(f"rng must be a numpy.random.Generator (np.random.default_rng(seed)), got {type(rng).__name__}")
    dest3, src3 = as_rgb(dest, "dest"), as_rgb(src, "src")
    if dest3.shape != src3.shape:
        raise ValueError(f"dest and src must have the same height and width, got {dest.shape[:2]} and "
                         f"{src.shape[:2]}; resize the source to the destination's size first")
    height, width = dest3.shape[:2]
    min_h, min_w = config.h_min * height, config.w_min * width
    if min(min_h, min_w) < 3 or height * width < 4 * MIN_POISSON_PIXELS:
        raise ValueError(f"image of {height}x{width} px is too small: the smallest patch would be "
                         f"{min_h:.1f}x{min_w:.1f} px; need at least 3 px per side (e.g. >= "
                         f"{int(np.ceil(3 / min(config.h_min, config.w_min)))} px images for this config)")
    return dest3, src3


def _seamless(patch: np.ndarray, image: np.ndarray, mask: np.ndarray, corner: Tuple[int, int],
              mode: str, backend: str, margin: int = 4) -> Optional[np.ndarray]:
    """Poisson-blend ``patch`` (weights ``mask``) into ``image`` with its pixel (0, 0) at ``corner``.

    ``backend="fast"`` solves OpenCV's problem with a sine transform
    (:func:`nsa_tutorial.poisson.clone_into`); ``"opencv"`` calls ``cv2.seamlessClone``
    on a window around the patch (OpenCV differentiates the whole destination but
    solves only over the mask's box, so the window gives the same result with much
    less work), with the centre computed so that there is no one-pixel shift for odd
    sizes.  Returns ``None`` where the blend fails (tiny or degenerate masks, and
    OpenCV's rare internal assertion).
    """
    _, _, box_w, box_h = cv2.boundingRect(mask)
    # A mask 1 or 2 px thin (a 3- or 4-px patch minus its frame) has no interior to solve for.
    if np.count_nonzero(mask) < MIN_POISSON_PIXELS or min(box_w, box_h) < 3:
        return None
    if backend == "fast":
        return clone_into(image, patch, mask, corner, mode)
    h, w = patch.shape[:2]
    wy0, wx0 = max(corner[1] - margin, 0), max(corner[0] - margin, 0)
    window = image[wy0:corner[1] + h + margin, wx0:corner[0] + w + margin]
    x, y, bw, bh = cv2.boundingRect(mask)
    centre = (corner[0] - wx0 + x + bw // 2, corner[1] - wy0 + y + bh // 2)
    flags = cv2.MIXED_CLONE if mode == "mixed" else cv2.NORMAL_CLONE
    try:
        blended = cv2.seamlessClone(patch, np.ascontiguousarray(window), mask.copy(), centre, flags)
    except cv2.error:
        return None
    out = image.copy()
    out[wy0:wy0 + window.shape[0], wx0:wx0 + window.shape[1]] = blended
    return out


def _blend(image, patch, region, poisson_mask, corner, config: Config, factor: float, backend: str):
    """Blend ``patch`` into ``image`` at ``corner``; ``None`` if the blend fails."""
    x0, y0 = corner
    h, w = patch.shape[:2]
    steps = METHOD_STEPS[config.method]
    if steps.blend == "Poisson":
        mask = poisson_mask.astype(np.uint8) * (int(np.ceil(factor * 255)) if steps.factor else 255)
        mask[0, :] = mask[-1, :] = mask[:, 0] = mask[:, -1] = 0  # avoids artefacts at the rectangle's edge
        mixed = steps.mixed or config.blend == "mixed"
        return _seamless(patch, image, mask, corner, "mixed" if mixed else "normal", backend)
    out = image.copy()
    window = out[y0:y0 + h, x0:x0 + w]
    if steps.blend == "copy-paste":
        window[region] = patch[region]
    else:  # fpi: linear interpolation with one factor per image
        mixed = (1 - factor) * window.astype(np.float64) + factor * patch.astype(np.float64)
        window[region] = np.round(mixed[region]).astype(np.uint8)
    return out


def _source_patch(src, src_obj, src_integral, config: Config, rng):
    """Steps 1-2: sample the source rectangle (eq. 5-7) and resize it (eq. 9).

    Returns ``(src_rect, patch, patch_obj)`` (``patch_obj``: the patch's object pixels) or None."""
    height, width = src.shape[:2]
    if config.variant == "C":
        ph, pw = P.sample_cutpaste_size(rng, height, width)
        x0, y0 = int(rng.integers(0, width - pw + 1)), int(rng.integers(0, height - ph + 1))
        src_rect = (x0, y0, x0 + pw, y0 + ph)
    else:
        size = P.sample_patch_size(rng, height, width, config)
        src_rect = P.sample_source_rect(rng, size, (height, width), config, src_integral)
        if src_rect is None:
            return None
    sx0, sy0, sx1, sy1 = src_rect
    patch = src[sy0:sy1, sx0:sx1]
    patch_obj = src_obj[sy0:sy1, sx0:sx1] if src_obj is not None else np.ones(patch.shape[:2], bool)
    if METHOD_STEPS[config.method].resize and config.variant != "C":
        s = P.resize_scale(rng, patch.shape[:2], (height, width), config)
        new_size = (P.resized_side(s, patch.shape[1], config), P.resized_side(s, patch.shape[0], config))
        patch = cv2.resize(patch, new_size, interpolation=cv2.INTER_LINEAR)
        patch_obj = cv2.resize(patch_obj.astype(np.float32), new_size, interpolation=cv2.INTER_LINEAR) >= 0.5
    return src_rect, patch, patch_obj


def _add_patch(image, src, masks, config: Config, factor: float, rng, backend: str):
    """Sample, place and blend one patch. Returns (image, region, src_rect, dest_rect) or None."""
    height, width = image.shape[:2]
    src_obj, dest_obj, src_integral, dest_integral = masks
    constrained = src_obj is not None
    source = _source_patch(src, src_obj, src_integral, config, rng)
    if source is None:
        return None
    src_rect, patch, patch_obj = source
    ph, pw = patch.shape[:2]
    if METHOD_STEPS[config.method].placement == "same location":
        corner = src_rect[:2]  # same location in the destination
    else:
        corner = P.sample_dest_offset(rng, patch_obj, (height, width), config, dest_obj, dest_integral)
        if corner is None:
            return None
    x0, y0 = corner
    # The whole rectangle is blended (pixels that are background in both images too, which
    # avoids artefacts); only object pixels of either image can be labelled.
    poisson_mask = np.ones((ph, pw), bool)
    region = patch_obj | dest_obj[y0:y0 + ph, x0:x0 + pw] if constrained else poisson_mask
    if config.variant == "D":
        shape = P.ellipse_mask(rng, ph, pw)
        region, poisson_mask = region & shape, shape
    blended = _blend(image, patch, region, poisson_mask, corner, config, factor, backend)
    if blended is None:
        return None
    full_region = np.zeros((height, width), bool)
    full_region[y0:y0 + ph, x0:x0 + pw] = region
    return blended, full_region, src_rect, (x0, y0, x0 + pw, y0 + ph)


def make_anomaly(dest: np.ndarray, src: np.ndarray, config: Config,
                 rng: np.random.Generator, backend: str = "fast") -> Anomaly:
    """Blend up to ``config.n_max`` patches of ``src`` into ``dest`` and label the change.

    The first patch is always attempted, each further one on a fair coin flip.
    Object masks (eq. 8) and their integral images are computed once per image pair.  A patch whose
    constraints cannot be met within ``config.max_tries`` draws, or whose blend
    fails, is skipped and counted in ``Anomaly.skipped``; if all fail the
    sample is normal (all-zero label).  ``backend`` is the Poisson solver:
    ``"fast"`` (default, :func:`nsa_tutorial.poisson.clone_into`) or ``"opencv"``
    (``cv2.seamlessClone``, as the authors' code).

    Batch twin in PyTorch: :func:`~nsa_tutorial.batched.synthesis.make_anomaly_batch`.
    """
    if backend not in SYNTHESIS_BACKENDS:
        raise ValueError(f"backend must be one of {SYNTHESIS_BACKENDS}, got {backend!r}")
    dest3, src3 = _check_inputs(dest, src, config, rng)
    steps = METHOD_STEPS[config.method]
    if steps.source == "same image":
        src3 = dest3
    masks = (None,) * 4  # object masks and their integral images, once per image pair
    if config.has_background_constraints:
        objects = [P.object_mask(img, config.background, config.t_brightness) for img in (src3, dest3)]
        masks = (*objects, *(cv2.integral(obj.astype(np.uint8)) for obj in objects))
    factor = float(rng.uniform(0.05, 0.95)) if steps.factor else 1.0
    result = Anomaly(dest3.copy(), np.zeros(dest3.shape[:2], np.float32), np.zeros(dest3.shape[:2], bool))
    for i in range(config.n_max):
        if i > 0 and rng.random() < 0.5:
            continue
        result.attempted += 1
        added = _add_patch(result.image, src3, masks, config, factor, rng, backend)
        if added is None:
            result.skipped += 1
            continue
        result.image, region, src_rect, dest_rect = added
        result.region |= region  # overlapping patches: OR, never overwrite
        result.source_rects.append(src_rect)
        result.dest_rects.append(dest_rect)
    result.label = _label(result, dest3, config, factor)
    result.image = _like(result.image, dest)
    return result


def _label(result: Anomaly, dest3: np.ndarray, config: Config, factor: float) -> np.ndarray:
    if METHOD_STEPS[config.method].label == "config.label":
        return make_label(result.image, dest3, result.region, config.label, config.y0, config.k)
    binary = make_label(result.image, dest3, result.region, "binary")
    return (factor * binary).astype(np.float32)  # cutpaste: factor 1; fpi, pii: the interpolation factor


def _like(image3: np.ndarray, original: np.ndarray) -> np.ndarray:
    """Back to the caller's layout (grey images are blended as three equal channels)."""
    if original.ndim == 2:
        return image3[:, :, 0].copy()
    return image3[:, :, :1].copy() if original.shape[2] == 1 else image3


def synthesize(dest: np.ndarray, src: np.ndarray, config: Config,
               rng: np.random.Generator, backend: str = "fast") -> Tuple[np.ndarray, np.ndarray]:
    """One self-supervised training sample: ``(image, label)``.

    ``dest`` and ``src`` are uint8 HxW or HxWxC (C = 1 or 3) of the same size;
    ``image`` has ``dest``'s shape, ``label`` is float32 HxW.  The same generator
    state gives the same result.

    >>> import numpy as np
    >>> from nsa_tutorial.config import get_config
    >>> rng = np.random.default_rng(0)
    >>> a, b = (rng.integers(0, 256, (64, 64, 3), dtype=np.uint8) for _ in range(2))
    >>> image, label = synthesize(a, b, get_config("carpet"), rng)
    >>> image.shape, label.dtype.name
    ((64, 64, 3), 'float32')

    Batch twin in PyTorch: :func:`~nsa_tutorial.batched.synthesis.synthesize_batch`.
    """
    anomaly = make_anomaly(dest, src, config, rng, backend)
    return anomaly.image, anomaly.label
