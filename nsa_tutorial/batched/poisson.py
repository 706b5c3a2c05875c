"""Poisson blending on patch rectangles for a whole batch in PyTorch (paper eq. 1-4).

The torch twin of :mod:`nsa_tutorial.poisson` (:func:`nsa_tutorial.poisson.clone_rect`):
OpenCV's problem on a rectangle, solved exactly with sine transforms.
Book chapter: *Synthetic anomalies* (section "Synthesis on the GPU").
"""

from __future__ import annotations

import math
from typing import Tuple

import torch

from ..config import BLEND_MODES

Tensor = torch.Tensor


def _solve_dtype(device: torch.device) -> torch.dtype:
    """float64 on GPUs: TF32 matrix products, which training code often enables, would cost
    ~0.1 grey level; data-centre GPUs multiply float64 matrices on tensor cores."""
    return torch.float64 if device.type == "cuda" else torch.float32


def _sine_basis(start: Tensor, length: Tensor, size: int) -> Tensor:
    """Orthonormal DST-I basis of the interval ``[start, start + length)`` inside ``size`` pixels.

    B x size x size (pixel, frequency), float64: column ``k < length`` is
    ``sqrt(2 / (n + 1)) sin(pi (p - start + 1)(k + 1) / (n + 1))`` on the interval, 0 elsewhere.
    """
    pixel = torch.arange(size, device=start.device)[None, :, None] - start[:, None, None] + 1
    freq = torch.arange(1, size + 1, device=start.device)[None, None, :]
    n = length[:, None, None]
    angle = math.pi * (pixel * freq % (2 * n + 2)).double() / (n + 1)  # sin has period 2(n + 1)
    basis = torch.sqrt(2 / (n + 1).double()) * torch.sin(angle)
    return torch.where((pixel >= 1) & (pixel <= n) & (freq <= n), basis, 0.0)


def _sine_eigenvalues(length: Tensor, size: int) -> Tensor:
    """Eigenvalues ``2 - 2 cos(pi k / (n + 1))`` of the 1-D Dirichlet Laplacian: B x size, 1 past ``n``."""
    freq = torch.arange(1, size + 1, device=length.device)[None]
    n = length[:, None]
    return torch.where(freq <= n, 2 - 2 * torch.cos(math.pi * freq.double() / (n + 1)), 1.0)


def _forward(a: Tensor, dim: int) -> Tensor:
    """``a[p + 1] - a[p]`` along ``dim`` (wrapping at the image border, which the solve never reads)."""
    return torch.roll(a, -1, dim) - a


def _correction_rhs(dst: Tensor, src: Tensor, weight: Tensor, mode: str) -> Tensor:
    """Right-hand side ``b`` of ``4 u_p - sum_q u_q = b_p`` for the correction ``u = f - f*``.

    As :func:`nsa_tutorial.poisson.clone_rect` (OpenCV's problem): the guidance is the
    source's forward differences where ``weight`` is 1, the destination's elsewhere;
    ``"mixed"`` takes both components from the image with the larger ``|v_x - v_y|``.
    With ``f = f* + u``, only the guidance's departure from ``∇f*`` is left:
    ``b = -div(weight (v - ∇f*))``, with backward differences for the divergence.
    """
    gx, gy, fx, fy = _forward(src, -1), _forward(src, -2), _forward(dst, -1), _forward(dst, -2)
    if mode == "mixed":
        use_src = (gx - gy).abs() > (fx - fy).abs()
        gx, gy = torch.where(use_src, gx, fx), torch.where(use_src, gy, fy)
    ex, ey = weight * (gx - fx), weight * (gy - fy)
    return torch.roll(ex, 1, -1) - ex + torch.roll(ey, 1, -2) - ey


def _shrink(rects: Tensor, pixels: int) -> Tensor:
    """Rectangles (x0, y0, x1, y1) without a frame of ``pixels``; empty ones come back empty."""
    return rects + rects.new_tensor([pixels, pixels, -pixels, -pixels])


def _rect_mask(rects: Tensor, shape: Tuple[int, int]) -> Tensor:
    """B x H x W bool: the pixels inside each rectangle (x0, y0, x1, y1), half-open."""
    ys, xs = (torch.arange(n, device=rects.device) for n in shape)
    inside_y = (ys >= rects[:, 1, None]) & (ys < rects[:, 3, None])
    inside_x = (xs >= rects[:, 0, None]) & (xs < rects[:, 2, None])
    return inside_y[:, :, None] & inside_x[:, None, :]


def poisson_rect_batch(dst: Tensor, src: Tensor, rects: Tensor, mode: str = "normal",
                       erosion: int = 3) -> Tensor:
    """Seamless cloning (eq. 1-4) of aligned B x C x H x W float images, one rectangle each.

    ``dst`` is ``f*``, ``src`` is ``g``; ``rects`` (B x 4 int64, (x0, y0, x1, y1),
    half-open, inside the image; empty where ``x1 - x0 < 3`` or ``y1 - y0 < 3``) are
    the rectangles whose 1-px border stays fixed (Dirichlet boundary), as in
    :func:`nsa_tutorial.poisson.clone_rect`.  The guidance is the source's inside the
    rectangle shrunk by ``erosion`` pixels and the destination's elsewhere: ``erosion=3``
    is OpenCV's problem (synthesis's default), ``erosion=0`` the textbook one of
    :func:`nsa_tutorial.poisson.solve_poisson` on the rectangle's interior (``"normal"``).
    On a rectangle the Dirichlet Laplacian is diagonal in the sine basis (OpenCV's
    method too), so the solve is exact: four batched matrix products and one division,
    no iterations, no tolerance.  Returns the float solution ``f`` (``f*`` outside).
    """
    _check_float_batch(dst, "dst")
    if src.shape != dst.shape or rects.shape != (len(dst), 4) or rects.dtype != torch.int64:
        raise ValueError(f"need src of dst's shape {tuple(dst.shape)} and int64 rects of shape "
                         f"({len(dst)}, 4); got {tuple(src.shape)} and {rects.dtype} {tuple(rects.shape)}")
    if mode not in BLEND_MODES:
        raise ValueError(f"mode must be one of {BLEND_MODES}, got {mode!r}")
    shape = (dst.shape[2], dst.shape[3])
    unknowns = _shrink(rects, 1)
    x0, y0, x1, y1 = unknowns.unbind(1)
    empty = (x1 <= x0) | (y1 <= y0)
    if (~empty & ((x0 < 1) | (y0 < 1) | (x1 > shape[1] - 1) | (y1 > shape[0] - 1))).any():
        raise ValueError("every rectangle must lie inside the image")
    height, width = torch.where(empty, 0, y1 - y0), torch.where(empty, 0, x1 - x0)
    dtype = _solve_dtype(dst.device)
    phi_y = _sine_basis(y0, height, shape[0]).to(dtype)[:, None]
    phi_x = _sine_basis(x0, width, shape[1]).to(dtype)[:, None]
    eigen = (_sine_eigenvalues(height, shape[0])[:, :, None]
             + _sine_eigenvalues(width, shape[1])[:, None, :]).to(dtype)
    weight = _rect_mask(_shrink(rects, erosion), shape)[:, None].to(dst)
    rhs = _correction_rhs(dst, src, weight, mode).to(dtype)
    coefficients = phi_y.mT @ rhs @ phi_x / eigen[:, None]
    return dst + (phi_y @ coefficients @ phi_x.mT).to(dst.dtype)


def _check_float_batch(images: Tensor, name: str) -> None:
    if not isinstance(images, Tensor) or images.ndim != 4 or not images.is_floating_point():
        raise ValueError(f"{name} must be a float B x C x H x W tensor on the 0-255 scale, got "
                         f"{getattr(images, 'dtype', type(images).__name__)} with shape "
                         f"{tuple(getattr(images, 'shape', ()))}")
