"""Labels for a whole batch in PyTorch (paper eq. 13-14).

The torch twin of :mod:`nsa_tutorial.labels` (:func:`nsa_tutorial.labels.make_label`).
Book chapter: *Synthetic anomalies* (section "Synthesis on the GPU").
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from skimage.morphology import disk

from ..config import LABELS
from ..labels import DISK_RADIUS, LABEL_MEDIAN
from .patches import binary_median_batch
from .poisson import _check_float_batch

Tensor = torch.Tensor


def median_disk_batch(values: Tensor, radius: int = DISK_RADIUS, max_elements: int = 1 << 24) -> Tensor:
    """Median over a disk of ``radius`` for a non-negative float B x H x W batch.

    As ``skimage.filters.rank.median`` (so :func:`nsa_tutorial.labels.median_disk`):
    pixels outside the image do not count, and of ``n`` values the one at sorted
    position ``n // 2`` is taken.  That value is 0 unless at least ``n - n // 2`` of the
    disk is non-zero, so only such pixels are sorted (their out-of-image neighbours as
    +inf, which sort last), in chunks of at most ``max_elements`` values.
    """
    footprint = torch.as_tensor(disk(radius), dtype=values.dtype, device=values.device)
    counts = F.conv2d(torch.stack([torch.ones_like(values[0]), *(values > 0).to(values)])[:, None],
                      footprint[None, None], padding=radius)[:, 0].round()
    rank = counts[0].long() // 2
    b, y, x = torch.nonzero(counts[1:] >= counts[0] - rank, as_tuple=True)
    dy, dx = torch.nonzero(footprint, as_tuple=True)
    padded = F.pad(values, (radius,) * 4, value=math.inf)
    height, width = padded.shape[1:]
    out = torch.zeros_like(values)
    for part in torch.arange(len(b), device=b.device).split(max(1, max_elements // len(dy))):
        index = ((b[part, None] * height + y[part, None] + dy) * width + x[part, None] + dx)
        ranked = padded.view(-1)[index].sort(1).values
        out[b[part], y[part], x[part]] = ranked.gather(1, rank[y[part], x[part], None])[:, 0]
    return out


def label_batch(images: Tensor, dest: Tensor, region: Tensor, kind: str, y0: float = 0.0,
                k: float = 1.0, tol: float = 1.0) -> Tensor:
    """Labels (eq. 13-14) of a batch, equal to :func:`nsa_tutorial.labels.make_label` per image.

    ``images`` (blended) and ``dest`` are float B x C x H x W with integer values,
    ``region`` bool B x H x W; ``kind`` is binary, continuous or logistic.  Returns
    float32 B x H x W.
    """
    _check_float_batch(images, "images")
    if dest.shape != images.shape or region.shape != images.shape[:1] + images.shape[2:]:
        raise ValueError(f"images {tuple(images.shape)}, dest {tuple(dest.shape)} and region "
                         f"{tuple(region.shape)} must align (B x C x H x W and B x H x W)")
    if kind not in LABELS:
        raise ValueError(f"label kind must be one of {LABELS}, got {kind!r}")
    channels = images.shape[1]
    diff_sum = (images - dest).abs().sum(1) * region  # exact: sums of integers
    m = binary_median_batch(diff_sum > tol * channels, LABEL_MEDIAN)
    if kind == "binary":
        label = m.float()
    else:
        c = median_disk_batch(diff_sum * m) / channels
        label = c if kind == "continuous" else m / (1 + torch.exp(-k * (c.float() - y0)))  # float32, as labels.py
    # the median filters can fill holes of the region (background in both images, gaps
    # between patches): those pixels were never part of a patch mask
    return label * region
