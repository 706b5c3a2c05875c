"""Poisson image editing (Pérez et al. 2003; NSA paper eq. 1-4), written from scratch.

Book chapter: *Poisson image editing*.

Seamless cloning pastes the *gradients* of a source ``g`` into a region ``Ω`` of a
destination ``f*`` and lets the colours follow from the destination around ``Ω``:
minimise ``∬_Ω |∇f - v|²`` with ``f = f*`` on ``∂Ω`` (eq. 1), i.e. solve the Poisson
equation ``Δf = div v`` (eq. 2) with the guidance field ``v = ∇g`` (eq. 3, "normal")
or the larger of ``∇f*`` and ``∇g`` (eq. 4, "mixed").  Discretised on the pixel grid
with four neighbours ``N(p)``, every pixel ``p`` of ``Ω`` gives one linear equation

    4 f_p - Σ_{q ∈ N(p) ∩ Ω} f_q  =  Σ_{q ∈ N(p) ∩ ∂Ω} f*_q  +  Σ_{q ∈ N(p)} v_pq,

with ``v_pq = g_p - g_q`` (eq. 3) or, for eq. 4, whichever of ``f*_p - f*_q`` and
``g_p - g_q`` has the larger magnitude (per neighbour pair and colour channel, as in
Pérez et al.'s discrete version).  :func:`poisson_system` builds the left-hand side
(one sparse matrix per mask, factorised once for all channels),
:func:`guidance_divergence` the guidance sum, :func:`solve_poisson` solves the
system and :func:`seamless_clone` wraps it with OpenCV's argument conventions.

Which solver NSA uses
---------------------
The paper's reference code calls OpenCV's ``cv2.seamlessClone``.  Synthesis here
solves *the same discrete problem* as OpenCV by default, but faster
(:func:`clone_rect`, :func:`clone_into`: a type-I discrete sine transform along one
axis of the mask's rectangle and tridiagonal solves along the other, agreeing with
OpenCV to one grey level; ``backend="fast"``), and
can call OpenCV itself (``backend="opencv"``).  OpenCV solves over the whole bounding rectangle
of the mask with a discrete-sine-transform (DST) Poisson solver (about 2 ms for a
60x60 patch in a 224x224 image on this project's CPUs) and differs from the textbook
equation above in ways worth knowing:

* it zeroes the mask's outermost 1-pixel frame, then *erodes* the mask by 3 pixels
  (3x3 kernel, 3 iterations) and takes the source's gradients only inside the eroded
  mask, the destination's everywhere else in the rectangle.  The whole rectangle
  except its 1-pixel border is re-solved, so the source's content starts about 2-3 px
  inside the mask, the seam is a soft band rather than a Dirichlet boundary, and
  pixels outside the mask change slightly too.  Inside, OpenCV's result is therefore
  closer to this module's solution on the eroded mask than on the mask itself;
* it places the mask's *bounding rectangle* with its top-left corner at
  ``center - size // 2`` (integer halving), which :func:`destination_rect` reproduces;
* it truncates the float result to uint8 instead of rounding (about -0.5 grey levels);
* MIXED_CLONE compares ``|g_x - g_y|`` with ``|f*_x - f*_y|`` per pixel and channel and
  takes both components from the winner: neither the vector norm of eq. 4 nor a
  per-axis choice (``tests/test_poisson.py`` pins this down);
* it writes into a single-channel ``mask`` argument (we always pass a fresh copy),
  raises ``cv2.error`` when the rectangle leaves the destination (we raise
  ``ValueError`` first) and, rarely (about 1 call in 3,000 with NSA's settings),
  ``(-215:Assertion failed) !fixedSize()``: callers catch ``cv2.error`` and skip the
  patch.

The numpy backend is the readable reference that the book derives: the equation
above over exactly ``Ω``, solved with a sparse LU factorisation (about 14 ms for the
same patch, most of it the factorisation).  Both backends share the placement rule.
"""

from __future__ import annotations

import operator
from functools import lru_cache

import cv2
import numpy as np
import scipy.sparse as sp
from numba import njit
from scipy.fft import dst, next_fast_len
from scipy.sparse.linalg import splu

from .config import BLEND_MODES

BACKENDS = ("numpy", "opencv", "fast")
_NEIGHBOURS = ((-1, 0), (1, 0), (0, -1), (0, 1))  # N(p): up, down, left, right
_CV_FLAGS = {"normal": cv2.NORMAL_CLONE, "mixed": cv2.MIXED_CLONE}


def _neighbour(img: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """``img[y + dy, x + dx]`` at every pixel; the image border repeats its edge.

    Only pixels of ``Ω`` read their neighbours, and ``Ω`` never touches the border,
    so the repeated edge values are never used.
    """
    h, w = img.shape[:2]
    pad = [(1, 1), (1, 1)] + [(0, 0)] * (img.ndim - 2)
    return np.pad(img, pad, mode="edge")[1 + dy:1 + dy + h, 1 + dx:1 + dx + w]


def _check_region(mask: np.ndarray) -> None:
    if mask.ndim != 2 or mask.dtype != bool:
        raise ValueError(f"mask must be a 2-D bool array, got {mask.dtype} with shape {mask.shape}")
    if mask[[0, -1], :].any() or mask[:, [0, -1]].any():
        raise ValueError("mask must not touch the image border: "
                         "every pixel of Ω needs four neighbours")


def poisson_system(mask: np.ndarray) -> sp.csc_matrix:
    """The left-hand side ``4 f_p - Σ_{q ∈ N(p) ∩ Ω} f_q`` of discretised eq. 2.

    Book chapter: *Poisson image editing*.  Unknowns are the pixels of ``Ω = mask``
    in row-major order (the order of ``image[mask]``).  The matrix is symmetric and
    positive definite (diagonally dominant, with Dirichlet boundary around ``Ω``).

    >>> poisson_system(np.pad(np.ones((1, 2), bool), 1)).toarray()
    array([[ 4., -1.],
           [-1.,  4.]])
    """
    _check_region(mask)
    ys, xs = np.nonzero(mask)
    n = ys.size
    index = np.full(mask.shape, -1)
    index[ys, xs] = np.arange(n)
    rows, cols = [np.arange(n)], [np.arange(n)]
    for dy, dx in _NEIGHBOURS:
        q = index[ys + dy, xs + dx]
        inside = q >= 0
        rows.append(np.flatnonzero(inside))
        cols.append(q[inside])
    vals = np.concatenate([np.full(n, 4.0)] + [-np.ones(r.size) for r in rows[1:]])
    return sp.csc_matrix((vals, (np.concatenate(rows), np.concatenate(cols))), shape=(n, n))


def guidance_divergence(src: np.ndarray, dst: np.ndarray, mode: str = "normal") -> np.ndarray:
    """``Σ_{q ∈ N(p)} v_pq`` at every pixel: the guidance term of discretised eq. 2.

    With the left-hand side written as ``4 f_p - Σ f_q`` (that is ``-Δf``), this sum is
    the discrete ``-div v``.

    Book chapter: *Poisson image editing*.  ``mode="normal"``: ``v_pq = g_p - g_q``
    (eq. 3).  ``mode="mixed"``: per neighbour pair and channel, the destination
    difference ``f*_p - f*_q`` where its magnitude is larger, else the source one
    (eq. 4).  ``src`` (``g``) and ``dst`` (``f*``) are aligned float arrays of equal
    shape; values on the image border are meaningless (they lack neighbours).
    """
    if mode not in BLEND_MODES:
        raise ValueError(f"mode must be one of {BLEND_MODES}, got {mode!r}")
    if src.shape != dst.shape:
        raise ValueError(f"src and dst must have the same shape, got {src.shape} and {dst.shape}")
    total = np.zeros(src.shape)
    for dy, dx in _NEIGHBOURS:
        v = src - _neighbour(src, dy, dx)
        if mode == "mixed":
            v_dst = dst - _neighbour(dst, dy, dx)
            v = np.where(np.abs(v_dst) > np.abs(v), v_dst, v)
        total += v
    return total


def solve_poisson(dst: np.ndarray, src: np.ndarray, mask: np.ndarray,
                  mode: str = "normal") -> np.ndarray:
    """Seamless cloning of aligned images: ``f`` of eq. 2 inside ``mask``, ``f*`` outside.

    Book chapter: *Poisson image editing*.  ``dst`` (``f*``) and ``src`` (``g``) are
    float arrays of shape HxW or HxWxC, ``mask`` (``Ω``) is a HxW bool array that does
    not touch the image border.  One sparse LU factorisation solves all channels.
    """
    _check_region(mask)
    if src.shape != dst.shape:
        raise ValueError(f"src and dst must have the same shape, got {src.shape} and {dst.shape}")
    if dst.shape[:2] != mask.shape:
        raise ValueError(f"mask shape {mask.shape} does not match image shape {dst.shape}")
    f_star = np.asarray(dst, dtype=np.float64).reshape(*mask.shape, -1)
    g = np.asarray(src, dtype=np.float64).reshape(f_star.shape)
    f = f_star.copy()
    if not mask.any():
        return f.reshape(dst.shape)
    known = np.where(mask[..., None], 0.0, f_star)  # f* on ∂Ω (and beyond), 0 in Ω
    boundary = sum(_neighbour(known, dy, dx) for dy, dx in _NEIGHBOURS)
    rhs = boundary + guidance_divergence(g, f_star, mode)
    f[mask] = splu(poisson_system(mask)).solve(np.ascontiguousarray(rhs[mask]))
    return f.reshape(dst.shape)


def _inner_mask(mask: np.ndarray) -> np.ndarray:
    """The mask as bool without its outermost 1-pixel frame, as OpenCV uses it."""
    inner = mask.astype(bool)
    inner[[0, -1], :] = False
    inner[:, [0, -1]] = False
    return inner


def _bounding_rect(mask: np.ndarray) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(mask)
    return int(xs.min()), int(ys.min()), int(np.ptp(xs) + 1), int(np.ptp(ys) + 1)


def destination_rect(mask: np.ndarray, center: tuple[int, int]) -> tuple[int, int, int, int]:
    """Where ``cv2.seamlessClone`` puts the mask: ``(x, y, width, height)`` in ``dst``.

    Book chapter: *Poisson image editing*.  OpenCV ignores the mask's 1-pixel frame,
    takes the bounding rectangle of the rest and puts its top-left corner at
    ``center - size // 2``, so an even-sized rectangle has one more pixel left of
    (above) ``center`` than right of (below) it.
    """
    _, _, w, h = _bounding_rect(_inner_mask(mask))
    return center[0] - w // 2, center[1] - h // 2, w, h


def _validate(src: np.ndarray, dst: np.ndarray, mask: np.ndarray, mode: str,
              backend: str) -> None:
    for name, img in (("src", src), ("dst", dst)):
        if not isinstance(img, np.ndarray) or img.dtype != np.uint8:
            raise ValueError(f"{name} must be a uint8 numpy array, "
                             f"got {getattr(img, 'dtype', type(img))}")
        if not (img.ndim == 2 or (img.ndim == 3 and img.shape[2] == 3)):
            raise ValueError(f"{name} must have shape HxW or HxWx3, got {img.shape}")
    if src.ndim != dst.ndim:
        raise ValueError("src and dst must both be grayscale or both colour, "
                         f"got {src.shape} and {dst.shape}")
    if not isinstance(mask, np.ndarray) or mask.dtype not in (np.uint8, np.bool_):
        raise ValueError("mask must be a bool or uint8 numpy array, "
                         f"got {getattr(mask, 'dtype', type(mask))}")
    if mask.shape != src.shape[:2]:
        raise ValueError(f"mask must have src's height and width {src.shape[:2]}, got {mask.shape}")
    if not _inner_mask(mask).any():
        raise ValueError("mask is empty: no nonzero pixel inside its 1-pixel frame "
                         "(OpenCV ignores the frame)")
    if mode not in BLEND_MODES:
        raise ValueError(f"mode must be one of {BLEND_MODES}, got {mode!r}")
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")


def _check_center(center: tuple[int, int], mask: np.ndarray, dst: np.ndarray) -> tuple[int, int]:
    try:
        cx, cy = (operator.index(c) for c in center)
    except (TypeError, ValueError):
        raise ValueError(f"center must be two integers (x, y), got {center!r}") from None
    x, y, w, h = destination_rect(mask, (cx, cy))
    if x < 0 or y < 0 or x + w > dst.shape[1] or y + h > dst.shape[0]:
        raise ValueError(f"the mask's {w}x{h} bounding rectangle centred at {(cx, cy)} leaves the "
                         f"{dst.shape[1]}x{dst.shape[0]} destination (top-left would be {(x, y)})")
    return cx, cy


def _clone_numpy(src: np.ndarray, dst: np.ndarray, mask: np.ndarray,
                 center: tuple[int, int], mode: str) -> np.ndarray:
    inner = _inner_mask(mask)
    sx, sy, _, _ = _bounding_rect(inner)
    x, y, w, h = destination_rect(mask, center)
    # Solve in the rectangle plus a 1-px frame (clipped to dst: Ω pixels on dst's
    # border stay as they are, as in OpenCV, which keeps its rectangle's border).
    y0, y1 = max(y - 1, 0), min(y + h + 1, dst.shape[0])
    x0, x1 = max(x - 1, 0), min(x + w + 1, dst.shape[1])
    src_window = np.s_[y0 + sy - y:y1 + sy - y, x0 + sx - x:x1 + sx - x]
    omega = _inner_mask(inner[src_window])
    out = dst.astype(np.float64)
    out[y0:y1, x0:x1] = solve_poisson(out[y0:y1, x0:x1], src[src_window].astype(np.float64),
                                      omega, mode)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _clone_opencv(src: np.ndarray, dst: np.ndarray, mask: np.ndarray,
                  center: tuple[int, int], mode: str) -> np.ndarray:
    grey = src.ndim == 2
    if grey:  # OpenCV clones colour images: use 3 identical channels (reference facts §2)
        src, dst = np.dstack([src] * 3), np.dstack([dst] * 3)
    # OpenCV weights by mask / 255 and writes into the mask: pass a fresh 0/255 copy.
    cv_mask = np.where(mask.astype(bool), np.uint8(255), np.uint8(0))
    out = cv2.seamlessClone(src, dst, cv_mask, center, _CV_FLAGS[mode])
    return out[..., 0] if grey else out


def _clone_fast(src: np.ndarray, dst: np.ndarray, mask: np.ndarray,
                center: tuple[int, int], mode: str) -> np.ndarray:
    grey = src.ndim == 2
    if grey:
        src, dst = np.dstack([src] * 3), np.dstack([dst] * 3)
    inner = _inner_mask(mask)
    sx, sy, _, _ = _bounding_rect(inner)
    x, y, _, _ = destination_rect(mask, center)
    out = clone_into(dst, src, np.where(inner, np.uint8(255), np.uint8(0)), (x - sx, y - sy), mode)
    return out[..., 0] if grey else out


def seamless_clone(src: np.ndarray, dst: np.ndarray, mask: np.ndarray, center: tuple[int, int],
                   mode: str = "normal", backend: str = "numpy") -> np.ndarray:
    """Blend ``src`` where ``mask`` is set into ``dst`` around ``center`` (eq. 1-4).

    Book chapter: *Poisson image editing*.  Arguments follow
    ``cv2.seamlessClone(src, dst, mask, center, flags)``: ``src`` and ``mask`` share
    height and width; the bounding rectangle of the mask (without its 1-pixel frame)
    is placed so that its centre lands at ``center = (x, y)`` in ``dst`` (see
    :func:`destination_rect`).  Images are uint8, HxW or HxWx3; ``mask`` is bool or
    uint8 (nonzero = inside).  ``mode`` is ``"normal"`` (eq. 3) or ``"mixed"`` (eq. 4);
    ``backend`` is ``"numpy"`` (:func:`solve_poisson`, rounded), ``"opencv"``
    (``cv2.seamlessClone``; may rarely raise ``cv2.error``: catch it and skip the patch)
    or ``"fast"`` (:func:`clone_into`: OpenCV's problem, solved with a sine transform).
    Returns a new uint8 array of ``dst``'s shape.

    >>> dst = np.full((32, 32), 100, np.uint8)
    >>> src = np.full((16, 16), 50, np.uint8)
    >>> out = seamless_clone(src, dst, np.ones((16, 16), bool), (16, 16))
    >>> bool((out == dst).all())  # a flat source has no gradients to paste
    True
    """
    _validate(src, dst, mask, mode, backend)
    center = _check_center(center, mask, dst)
    clone = {"numpy": _clone_numpy, "opencv": _clone_opencv, "fast": _clone_fast}[backend]
    return clone(src, dst, mask, center, mode)


@lru_cache(maxsize=256)
def _dst_matrix(n: int) -> np.ndarray:
    """The orthonormal type-I DST of length ``n`` as a float32 matrix (symmetric, its own inverse)."""
    j = np.arange(1, n + 1)
    return (np.sqrt(2 / (n + 1)) * np.sin(np.pi * np.outer(j, j) / (n + 1))).astype(np.float32)


# A sine transform of length n costs about n/20 ns per value as a matrix product and about
# 6.5 ns as an FFT whose length 2 (n + 1) factors well (one core, benchmarks/bench_synthesis.py
# sizes): the FFT only pays above this length, and never for awkward lengths (Bluestein).
_FFT_ABOVE = 136


def _transform_cost(n: int) -> int:
    """Relative cost per value of a type-I DST of length ``n`` (see ``_FFT_ABOVE``)."""
    return min(n, _FFT_ABOVE) if next_fast_len(2 * (n + 1)) == 2 * (n + 1) else n


def _dst_rows(x: np.ndarray) -> np.ndarray:
    """Orthonormal type-I DST along axis 1 of a C x N x M float32 array: a product with the
    cached DST matrix, or an FFT for long FFT-friendly lengths (the cheaper; both exact)."""
    n = x.shape[1]
    if _transform_cost(n) < n:
        return dst(x, type=1, axis=1, norm="ortho")
    return _dst_matrix(n) @ x  # one matrix product per channel


@njit(cache=True, nogil=True)
def _solve_tridiagonal(x: np.ndarray, lam: np.ndarray) -> None:  # pragma: no cover (compiled)
    """Solve ``u_{i-1} + (lam_j - 2) u_i + u_{i+1} = x_i`` (zero ends) in place: C x K x L, one
    system per channel and frequency ``j < K``, along the last axis (Thomas's algorithm; the
    systems are diagonally dominant, ``|lam_j - 2| > 2``, so it needs no pivoting)."""
    channels, k, length = x.shape
    ratio = np.empty(length, np.float32)
    for j in range(k):
        b = np.float32(lam[j] - 2.0)
        ratio[0] = 1 / b
        for i in range(1, length):
            ratio[i] = 1 / (b - ratio[i - 1])
        for c in range(channels):
            row = x[c, j]
            prev = row[0] * ratio[0]  # forward sweep: eliminate u_{i-1}
            row[0] = prev
            for i in range(1, length):
                prev = (row[i] - prev) * ratio[i]
                row[i] = prev
            for i in range(length - 2, -1, -1):  # back substitution
                prev = row[i] - ratio[i] * prev
                row[i] = prev


def _solve_dirichlet(rhs: np.ndarray) -> np.ndarray:
    """``u`` with ``Σ_{q ∈ N(p)} u_q - 4 u_p = rhs_p`` inside a rectangle, ``u = 0`` around it.

    ``rhs`` is C x N x M (float32).  The 1-D second difference with zero ends is diagonal in the
    type-I discrete sine basis (eigenvalues ``λ_j = 2 cos(π j / (n + 1)) - 2``), so a sine
    transform along one axis splits the 2-D problem into one tridiagonal system per
    frequency along the other, ``u_{i-1} + (λ_j - 2) u_i + u_{i+1} = r_i``, solved in
    O(N M) (:func:`_solve_tridiagonal`); the inverse transform brings ``u`` back.  Exact,
    like a sine transform along both axes, but only one axis needs a transform, and we
    pick the cheaper axis (:func:`_transform_cost`).
    """
    n, m = rhs.shape[1:]
    along_rows = _transform_cost(n) <= _transform_cost(m)
    x = np.ascontiguousarray(rhs if along_rows else rhs.transpose(0, 2, 1), np.float32)
    k = x.shape[1]  # C x K x L: transform along K, tridiagonal along L
    coefficients = np.ascontiguousarray(_dst_rows(x))
    _solve_tridiagonal(coefficients, 2 * np.cos(np.pi * np.arange(1, k + 1) / (k + 1)) - 2)
    u = _dst_rows(coefficients)
    return u if along_rows else u.transpose(0, 2, 1)


@njit(cache=True, nogil=True)
def _correction_rhs(src: np.ndarray, dst: np.ndarray, weight: np.ndarray,
                    mixed: bool) -> np.ndarray:  # pragma: no cover (compiled)
    """``div(w (v_src - ∇f*))`` at the interior pixels, C x (H-2) x (W-2), from HxWxC images.

    ``v_src`` is the source's forward difference ``g[p+1] - g[p]``; in mixed mode, at
    pixels where ``|g_x - g_y| <= |f*_x - f*_y|``, the destination's own (so nothing).
    The divergence uses backward differences, as OpenCV's solver does.
    """
    h, w, channels = src.shape
    out = np.empty((channels, h - 2, w - 2), np.float32)
    # ex[y, x]: weighted departure along x at pixel (y, x); ey likewise along y
    ex = np.zeros((h, w), np.float32)
    ey = np.zeros((h, w), np.float32)
    for c in range(channels):
        for y in range(h - 1):
            for x in range(w - 1):
                g0, f0 = np.float32(src[y, x, c]), np.float32(dst[y, x, c])
                gx, fx = np.float32(src[y, x + 1, c]) - g0, np.float32(dst[y, x + 1, c]) - f0
                gy, fy = np.float32(src[y + 1, x, c]) - g0, np.float32(dst[y + 1, x, c]) - f0
                use = weight[y, x]
                if mixed:  # multiply rather than branch: the choice is unpredictable
                    use *= np.float32(abs(gx - gy) > abs(fx - fy))
                ex[y, x] = use * (gx - fx)
                ey[y, x] = use * (gy - fy)
        for y in range(1, h - 1):
            for x in range(1, w - 1):
                out[c, y - 1, x - 1] = ex[y, x] - ex[y, x - 1] + ey[y, x] - ey[y - 1, x]
    return out


@njit(cache=True, nogil=True)
def _add_correction(dst: np.ndarray, u: np.ndarray) -> np.ndarray:  # pragma: no cover (compiled)
    """``f* + u`` inside the 1-pixel border, truncated to uint8 as OpenCV does; HxWxC out."""
    out = dst.copy()
    h, w, channels = dst.shape
    for y in range(1, h - 1):
        for x in range(1, w - 1):
            for c in range(channels):
                value = np.float32(dst[y, x, c]) + u[c, y - 1, x - 1]
                out[y, x, c] = np.uint8(min(max(value, np.float32(0)), np.float32(255)))
    return out


def clone_rect(src: np.ndarray, dst: np.ndarray, mask: np.ndarray, mode: str = "normal") -> np.ndarray:
    """OpenCV's ``seamlessClone`` problem on one rectangle, solved with a fast direct method.

    Book chapters: *Poisson image editing*, *Training* (speed).  ``src`` and ``dst``
    are the aligned HxWx3 uint8 contents of the mask's bounding rectangle; ``mask``
    (HxW uint8) weights the source's gradients by ``mask / 255`` after a 3-pixel
    erosion, exactly as OpenCV does (so a mask of ``ceil(a * 255)`` mixes gradients
    with weight ``a``, which PII uses).  The rectangle's 1-pixel border is the
    Dirichlet boundary; the result is truncated to uint8 like OpenCV's.  Agrees with
    ``cv2.seamlessClone`` to one grey level (float rounding), at a fraction of its cost.

    The solve is for the *correction* ``u = f - f*``: with the guidance
    ``v = w v_src + (1 - w) ∇f*`` (weight ``w``), ``Δu = div(v - ∇f*) = div(w (v_src - ∇f*))``,
    so only the weighted departure of the guidance from the destination's own
    gradients is needed (:func:`_correction_rhs`), and only inside the eroded mask is it
    non-zero.  OpenCV zeroes the source outside the mask; no difference read there
    crosses the mask's edge (the weight is 0 within 3 pixels of it), so that step is not needed.

    Batch twin in PyTorch: :func:`~nsa_tutorial.batched.poisson.poisson_rect_batch`.
    """
    if mode not in BLEND_MODES:
        raise ValueError(f"mode must be one of {BLEND_MODES}, got {mode!r}")
    if min(mask.shape) < 3 or src.shape != dst.shape or src.shape[:2] != mask.shape or src.ndim != 3:
        raise ValueError(f"src {src.shape}, dst {dst.shape} and mask {mask.shape} must align, "
                         "be HxWxC and HxW, and be >= 3x3")
    eroded = cv2.erode(mask, np.ones((3, 3), np.uint8), iterations=3,
                       borderType=cv2.BORDER_CONSTANT, borderValue=0)
    weight = eroded.astype(np.float32) / 255
    src, dst = np.ascontiguousarray(src), np.ascontiguousarray(dst)
    return _add_correction(dst, _solve_dirichlet(_correction_rhs(src, dst, weight, mode == "mixed")))


def clone_into(image: np.ndarray, patch: np.ndarray, mask: np.ndarray, corner: tuple[int, int],
               mode: str = "normal") -> np.ndarray:
    """Seamlessly clone ``patch`` into ``image`` with the patch's pixel (0, 0) at ``corner = (x, y)``.

    Book chapter: *Training* (speed).  The fast path of synthesis: the problem of
    :func:`clone_rect` (OpenCV's) on the bounding rectangle of the mask's non-zero
    pixels, placed without OpenCV's one-pixel shift for odd sizes.  Returns a new image.
    """
    x, y, w, h = cv2.boundingRect(mask)
    if w < 3 or h < 3:
        raise ValueError(f"the mask's non-zero pixels must span at least 3x3, got {w}x{h}")
    out = image.copy()
    window = np.s_[corner[1] + y:corner[1] + y + h, corner[0] + x:corner[0] + x + w]
    out[window] = clone_rect(patch[y:y + h, x:x + w], image[window], mask[y:y + h, x:x + w], mode)
    return out
