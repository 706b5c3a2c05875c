"""Figures the chapters share: image grids, heatmap overlays and the pictures they show.

Book chapters: all (first used in *Poisson image editing*).
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np


def overlay_heatmap(image: np.ndarray, heatmap: np.ndarray, alpha: float = 0.5,
                    vmax: Optional[float] = None, cmap: str = "jet") -> np.ndarray:
    """An RGB uint8 picture of ``heatmap`` (HxW, >= 0) blended over ``image`` (HxW or HxWx3 uint8).

    ``vmax`` fixes the colour scale (default: the map's maximum, or 1 for an all-zero map).
    """
    from matplotlib import colormaps

    if image.shape[:2] != heatmap.shape:
        raise ValueError(f"image {image.shape[:2]} and heatmap {heatmap.shape} must have the same size")
    rgb = np.repeat(image[:, :, None], 3, axis=2) if image.ndim == 2 else image[:, :, :3]
    scale = vmax if vmax is not None else (float(heatmap.max()) or 1.0)
    colours = colormaps[cmap](np.clip(heatmap / scale, 0, 1))[:, :, :3] * 255
    return np.round((1 - alpha) * rgb + alpha * colours).astype(np.uint8)


def show_grid(images: Sequence[np.ndarray], titles: Optional[Sequence[str]] = None, ncols: Optional[int] = None,
              size: float = 2.4, cmap: str = "gray", vmax: Optional[float] = None, suptitle: Optional[str] = None,
              colorbar: Optional[str] = None, title_size: float = 9):
    """Show images in a grid (no axes). Returns the figure.

    Grey uint8 images are shown on 0-255; other 2-D arrays (labels, maps) with
    ``cmap`` on ``[0, vmax]`` (default: their own maximum).  ``colorbar`` (its label)
    adds one colour bar for those arrays; it needs a common ``vmax``.  ``title_size``: the titles'
    font size in points (a wide grid is shrunk to the page's width, its titles with it).
    """
    if colorbar is not None and vmax is None:
        raise ValueError("a colour bar needs a common scale: pass vmax together with colorbar")
    import matplotlib.pyplot as plt

    n = len(images)
    ncols = ncols or n
    nrows = int(np.ceil(n / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, size * nrows + (0.4 if suptitle else 0)),
                             squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i, image in enumerate(images):
        ax = axes.flat[i]
        grey = image.ndim == 2
        top = 255 if image.dtype == np.uint8 else vmax
        ax.imshow(image, cmap=cmap if grey else None, vmin=0 if grey else None,
                  vmax=top if grey else None, interpolation="nearest")
        if titles is not None:
            ax.set_title(titles[i], fontsize=title_size)
    if suptitle:
        fig.suptitle(suptitle)
    fig.tight_layout()
    if colorbar is not None:
        add_colorbar(fig, vmax, cmap, colorbar)
    return fig


def add_colorbar(fig, vmax: float, cmap: str = "jet", label: str = "anomaly score", vmin: float = 0.0,
                 fontsize: float = 10):
    """One colour bar beside all panels of ``fig`` for values drawn with ``cmap`` on ``[vmin, vmax]``.

    Use it with :func:`overlay_heatmap` (same ``cmap`` and ``vmax``), whose RGB pictures carry no scale.
    ``fontsize``: of its label and ticks (a wide figure is shrunk to the page, its text with it).
    Returns the colour bar.  Book chapters: *Labels*, *Evaluation*.
    """
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    scale = ScalarMappable(Normalize(vmin, vmax), cmap)
    bar = fig.colorbar(scale, ax=fig.axes, shrink=0.8, fraction=0.03, pad=0.02)
    bar.set_label(label, size=fontsize)
    bar.ax.tick_params(labelsize=fontsize)
    return bar


def show_heatmaps(images: Sequence[np.ndarray], maps: Sequence[np.ndarray], titles: Sequence[str],
                  vmax: float, ncols: int = 4, size: float = 2.6):
    """Each image next to its anomaly map (an overlay on one colour scale, ``[0, vmax]``), with a colour bar.

    Book chapter: *Evaluation*.  ``ncols`` counts panels, two per image.  Returns the figure.
    """
    panels, names = [], []
    for image, heat, title in zip(images, maps, titles):
        panels += [image, overlay_heatmap(image, heat, vmax=vmax)]
        names += [title, "anomaly map"]
    fig = show_grid(panels, names, ncols=ncols, size=size)
    add_colorbar(fig, vmax, label="anomaly score")
    return fig


def draw_rects(image: np.ndarray, rects, colour=(255, 0, 0), thickness: int = 1) -> np.ndarray:
    """A copy of ``image`` (RGB uint8) with rectangles ``(x0, y0, x1, y1)`` drawn on it."""
    import cv2

    out = np.ascontiguousarray(np.repeat(image[:, :, None], 3, axis=2) if image.ndim == 2 else image.copy())
    for x0, y0, x1, y1 in rects:
        cv2.rectangle(out, (int(x0), int(y0)), (int(x1) - 1, int(y1) - 1), colour, thickness)
    return out


def square(image: np.ndarray, size: int) -> np.ndarray:
    """The centred square of a photo, resized to ``size`` x ``size``."""
    from .layout import resize_image

    h, w = image.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    return resize_image(image[top:top + side, left:left + side], size)


def on_canvas(image: np.ndarray, side: int, rng: np.random.Generator, size: int) -> np.ndarray:
    """``image`` shrunk to ``side`` pixels at a random place on a black ``size`` x ``size`` canvas:
    an object on a dark background, like MVTec AD's hazelnut, made from any picture."""
    from .layout import resize_image

    canvas = np.zeros((size, size, 3), np.uint8)
    y, x = rng.integers(0, size - side + 1, 2)
    canvas[y:y + side, x:x + side] = resize_image(image, side)
    return canvas
