"""Made-up defects with exact masks, drawn on real textures (the embedded ``textures`` data).

Book chapter: *Beyond MVTec AD*.
"""

from __future__ import annotations

from typing import Callable, Tuple

import cv2
import numpy as np

TEXTURE_DEFECTS = ("scratch", "crack", "hole", "stain", "missing_chunk", "border_chunk")


def add_texture_defect(image: np.ndarray, defect: str,
                       rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray]:
    """Draw one made-up defect on a uint8 grey image: ``(image, mask)``.

    Each mechanism paints an opacity map ``alpha`` in [0, 1] with a colour:
    ``out = (1 - alpha) * image + alpha * colour``.  The mask is ``alpha >= 1/2``: the pixels
    the defect dominates.  Book chapter: *Beyond MVTec AD*.
    """
    painters = {"scratch": _scratch, "crack": _crack, "hole": _hole, "stain": _stain,
                "missing_chunk": _missing_chunk, "border_chunk": _border_chunk}
    if defect not in painters:
        raise ValueError(f"defect must be one of {TEXTURE_DEFECTS}, got {defect!r}")
    if image.dtype != np.uint8 or image.ndim != 2:
        raise ValueError(f"image must be a uint8 HxW grey array, got {image.dtype} {image.shape}")
    grey = image.astype(np.float32)
    alpha, colour = painters[defect](grey, rng)
    out = (1 - alpha) * grey + alpha * colour
    return np.clip(np.round(out), 0, 255).astype(np.uint8), alpha >= 0.5


def _canvas_alpha(shape: Tuple[int, ...], draw: Callable[[np.ndarray], None]) -> np.ndarray:
    canvas = np.zeros(shape[:2], np.uint8)
    draw(canvas)
    return canvas.astype(np.float32) / 255


def _random_point(shape: Tuple[int, ...], rng: np.random.Generator, margin: float = 0.2) -> np.ndarray:
    h, w = shape[:2]
    return np.array([rng.uniform(margin * w, (1 - margin) * w), rng.uniform(margin * h, (1 - margin) * h)])


def _contrast(grey: np.ndarray, rng: np.random.Generator) -> float:
    """A colour far from the image's mean, so the defect is visible."""
    return rng.uniform(0, 30) if grey.mean() > 110 else rng.uniform(210, 255)


def _scratch(grey: np.ndarray, rng: np.random.Generator) -> Tuple[np.ndarray, float]:
    """A thin straight anti-aliased line, 40-110 px long, 1-2 px thick."""
    centre, angle = _random_point(grey.shape, rng), rng.uniform(0, np.pi)
    half = rng.uniform(20, 55) * np.array([np.cos(angle), np.sin(angle)])
    p, q = np.round(centre - half).astype(int), np.round(centre + half).astype(int)
    thickness = int(rng.integers(1, 3))
    alpha = _canvas_alpha(grey.shape, lambda c: cv2.line(c, tuple(map(int, p)), tuple(map(int, q)), 255,
                                                         thickness, cv2.LINE_AA))
    return alpha, _contrast(grey, rng)


def _crack(grey: np.ndarray, rng: np.random.Generator) -> Tuple[np.ndarray, float]:
    """A dark random walk: 2-px steps whose direction drifts, 60-150 steps."""
    steps = int(rng.integers(60, 151))
    angles = rng.uniform(0, 2 * np.pi) + np.cumsum(rng.normal(0, 0.3, steps))
    # Steps that leave the image are simply not drawn (OpenCV clips), as a crack would run on.
    points = _random_point(grey.shape, rng, 0.3) + np.cumsum(2 * np.stack([np.cos(angles), np.sin(angles)], 1), 0)
    points = np.round(points).astype(np.int32)
    alpha = _canvas_alpha(grey.shape, lambda c: cv2.polylines(c, [points], False, 255, 1, cv2.LINE_AA))
    return alpha, rng.uniform(0, 25)


def _hole(grey: np.ndarray, rng: np.random.Generator) -> Tuple[np.ndarray, float]:
    """A round dark hole of radius 5-14 px with an anti-aliased rim."""
    centre = tuple(int(v) for v in np.round(_random_point(grey.shape, rng)))
    radius = int(rng.integers(5, 15))
    alpha = _canvas_alpha(grey.shape, lambda c: cv2.circle(c, centre, radius, 255, -1, cv2.LINE_AA))
    return alpha, rng.uniform(0, 20)


def _stain(grey: np.ndarray, rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray]:
    """A soft blotch of 3 overlapping Gaussians that darkens the texture underneath (it stays visible)."""
    h, w = grey.shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    centre, blob = _random_point(grey.shape, rng, 0.3), np.zeros((h, w), np.float32)
    for _ in range(3):
        cx, cy = centre + rng.normal(0, 8, 2)
        sigma = rng.uniform(6, 14)
        blob += np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * sigma ** 2))
    alpha = rng.uniform(0.75, 0.95) * np.clip(blob, 0, 1)
    alpha[alpha < 0.02] = 0  # the Gaussian tails would touch every pixel
    return alpha, grey * rng.uniform(0.3, 0.55)


def _missing_chunk(grey: np.ndarray, rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray]:
    """An irregular polygon (radius 10-28 px) where the texture is gone: flat colour plus faint noise."""
    n = int(rng.integers(5, 10))
    angles = np.sort(rng.uniform(0, 2 * np.pi, n))
    radii = rng.uniform(10, 28, n)
    points = _random_point(grey.shape, rng) + np.stack([radii * np.cos(angles), radii * np.sin(angles)], 1)
    points = np.round(points).astype(np.int32)
    alpha = _canvas_alpha(grey.shape, lambda c: cv2.fillPoly(c, [points], 255, cv2.LINE_AA))
    return alpha, _contrast(grey, rng) + rng.normal(0, 2, grey.shape).astype(np.float32)


def _border_chunk(grey: np.ndarray, rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray]:
    """A missing chunk (radius 8-16 px) centred within 3 % of a random edge: a defect in the band
    that a centre crop (the MVTec AD objects' evaluation protocol) would not see."""
    h, w = grey.shape
    n = int(rng.integers(5, 10))
    angles = np.sort(rng.uniform(0, 2 * np.pi, n))
    radii = rng.uniform(8, 16, n)
    along, depth, edge = rng.uniform(0.2, 0.8), rng.uniform(0, 0.03), int(rng.integers(4))
    centre = [(along * w, depth * h), (along * w, (1 - depth) * h), (depth * w, along * h),
              ((1 - depth) * w, along * h)][edge]
    points = np.array(centre) + np.stack([radii * np.cos(angles), radii * np.sin(angles)], 1)
    points = np.round(points).astype(np.int32)
    alpha = _canvas_alpha(grey.shape, lambda c: cv2.fillPoly(c, [points], 255, cv2.LINE_AA))
    return alpha, _contrast(grey, rng) + rng.normal(0, 2, grey.shape).astype(np.float32)
