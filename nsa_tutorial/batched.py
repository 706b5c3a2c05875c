"""NSA synthesis for a whole batch in PyTorch, on the training device (paper Sec. 3, eq. 1-14).

Book chapter: *Synthetic anomalies* (section "Synthesis on the GPU").

:func:`nsa_tutorial.synthesis.make_anomaly` makes one sample in a few milliseconds on
one CPU core; a large GPU trains faster than the CPUs can feed it.  This module makes
the same anomalies for a batch of ``B`` image pairs at once, with the same
distributions, on any device:

* object masks (eq. 8) as box counts (:func:`object_mask_batch`);
* patch sizes (eq. 5-6), source centres (eq. 7), resize factors (eq. 9) and
  destination corners (eq. 10-12): all ``config.max_tries`` candidates of every patch
  are drawn at once and the first valid one is picked with integral images, gathers and
  (for eq. 12) an FFT cross-correlation, with no loop over retries;
* bilinear resize and placement in one gather (:func:`place_patches`);
* Poisson blending on the patch rectangle, solved exactly with sine transforms
  (:func:`poisson_rect_batch`), one patch slot at a time;
* labels exactly as :func:`nsa_tutorial.labels.make_label` (:func:`label_batch`).

Layout: ``dest`` and ``src`` are uint8 tensors ``B x H x W x 3`` (channels last, as
``torch.from_numpy(np.stack(images))`` gives them; repeat grey images to 3 channels).
The building blocks work on float ``B x C x H x W`` tensors on the 0-255 scale.

Randomness: every random number comes from a *CPU* ``torch.Generator``, in a fixed
order and amount per batch (all ``max_tries`` candidates of all ``n_max`` patch slots,
used or not), and is then moved to the device.  The same generator state therefore
gives the same output and, up to float rounding, the same patches on every device.

The Poisson problem is OpenCV's, as the CPU path's default ``"fast"`` backend
(:func:`nsa_tutorial.poisson.clone_rect`), not the textbook one: on the same patch the
textbook solution changes the image about 1.5 times as much, and so would the labels.
Two small differences remain, invisible in the distributions: float rounding (at most
one grey level after truncation), and a resized object-mask pixel that lands exactly
on 0.5 may round either way.

Only ``method="nsa"`` (variants ``None``, ``"A"``, ``"B"``) is implemented: the other
methods and variants C and D raise ``NotImplementedError``; use the CPU path for them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple, Optional, Tuple

import torch
import torch.nn.functional as F
from skimage.morphology import disk

from . import patches as P
from .config import Config
from .labels import DISK_RADIUS
from .synthesis import MIN_POISSON_PIXELS

Tensor = torch.Tensor


@dataclass
class BatchAnomaly:
    """A batch of synthetic samples with what it took to make them (cf. ``synthesis.Anomaly``)."""

    images: Tensor  # uint8 B x H x W x 3
    labels: Tensor  # float32 B x H x W
    region: Tensor  # bool B x H x W, union of the patch regions (labels live only here)
    source_rects: Tensor  # int64 B x n_max x 4, (x0, y0, x1, y1); -1 where no patch was placed
    dest_rects: Tensor  # int64 B x n_max x 4, likewise
    attempted: Tensor  # bool B x n_max: slot 0 always, the others on a fair coin flip
    placed: Tensor  # bool B x n_max: attempted and all constraints met within max_tries

    @property
    def skipped(self) -> Tensor:
        """Patches per sample that were attempted but failed (int64, B)."""
        return (self.attempted & ~self.placed).sum(1)

    @property
    def is_normal(self) -> Tensor:
        """True for samples where every patch failed: normal image, all-zero label (bool, B)."""
        return ~self.placed.any(1)


class _Draws(NamedTuple):
    """Every random number a batch needs (float64), drawn up front."""

    coins: Tensor  # B x n_max: slot i > 0 is attempted when its coin is >= 0.5
    sizes: Tensor  # B x n_max x 2: 0.06 + Gamma(2, 0.1) per axis (h, w), eq. 5-6, unclipped
    centres: Tensor  # B x n_max x K x 2: source centres (y, x), uniform in [0, 1), eq. 7
    scales: Tensor  # B x n_max: r_s ~ N(1, 1/4), eq. 9, unclipped
    offsets: Tensor  # B x n_max x K x 2: destination corners (y, x), uniform in [0, 1), eq. 10


class _Masks(NamedTuple):
    """Object masks (eq. 8) of source and destination and their integral images."""

    src: Tensor
    dest: Tensor
    src_integral: Tensor
    dest_integral: Tensor


class _Patch(NamedTuple):
    """One patch slot for the whole batch; ``ok`` is False where the patch is skipped."""

    src_rect: Tensor  # B x 4 (x0, y0, x1, y1)
    size: Tensor  # B x 2 (h, w) after resizing
    corner: Tensor  # B x 2 (y, x) of the top-left pixel in the destination
    ok: Tensor  # B


def _draw(generator: torch.Generator, batch: int, config: Config, device: torch.device) -> _Draws:
    """All random draws of a batch, from a CPU generator, in a fixed order."""
    shape, tries = (batch, config.n_max), config.max_tries
    opts = dict(generator=generator, dtype=torch.float64)
    # Gamma(2, θ) is the sum of two exponentials of mean θ (torch has no seeded Gamma sampler)
    exponentials = torch.empty(*shape, 2, int(P.GAMMA_SHAPE), dtype=torch.float64).exponential_(
        generator=generator)
    draws = _Draws(coins=torch.rand(*shape, **opts),
                   sizes=P.GAMMA_OFFSET + P.GAMMA_SCALE * exponentials.sum(-1),
                   centres=torch.rand(*shape, tries, 2, **opts),
                   scales=P.SCALE_MEAN + P.SCALE_STD * torch.randn(*shape, **opts),
                   offsets=torch.rand(*shape, tries, 2, **opts))
    return _Draws(*(t.to(device) for t in draws))


def box_count(mask: Tensor, size: int) -> Tensor:
    """Set pixels in the ``size x size`` window around each pixel of a B x H x W mask.

    Borders are replicated, as in ``cv2.medianBlur``; the counts are exact integers
    (float32), so ``box_count(m, k) > k * k // 2`` is :func:`nsa_tutorial.patches.binary_median`.
    """
    padded = F.pad(mask[:, None].float(), (size // 2,) * 4, mode="replicate")
    return F.avg_pool2d(padded, size, stride=1, divisor_override=1)[:, 0]


def object_mask_batch(images: Tensor, background: float, t_brightness: float) -> Tensor:
    """Object pixels (eq. 8) of a float B x C x H x W batch: bool B x H x W.

    Equal to :func:`nsa_tutorial.patches.object_mask` image by image: the test
    ``|sum_c x - C b| > C t`` on the channel sum, then a 7x7 median as a box count.
    """
    _check_float_batch(images, "images")
    channels = images.shape[1]
    far = (images.sum(1) - channels * background).abs() > channels * t_brightness
    return box_count(far, 7) > 49 // 2


def _integral(mask: Tensor) -> Tensor:
    """B x (H+1) x (W+1) integral image of a bool mask, laid out like ``cv2.integral``."""
    return F.pad(mask.long().cumsum(1).cumsum(2), (1, 0, 1, 0))


def _fraction_in_rects(integral: Tensor, rects: Tensor) -> Tensor:
    """``patches.fraction_in_rects`` for B x K rectangles (x0, y0, x1, y1): float64 B x K."""
    x0, y0, x1, y1 = rects.unbind(-1)
    flat, width = integral.flatten(1), integral.shape[2]

    def at(y: Tensor, x: Tensor) -> Tensor:
        return flat.gather(1, y * width + x)

    inside = at(y1, x1) - at(y0, x1) - at(y1, x0) + at(y0, x0)
    return inside.double() / ((x1 - x0) * (y1 - y0)).clamp(min=1)


def _first(valid: Tensor, values: Tensor) -> Tuple[Tensor, Tensor]:
    """The first candidate that is valid: values B x K x ... -> B x ..., and whether any was."""
    index = valid.int().argmax(1)  # argmax returns the first of equal maxima
    return values[torch.arange(len(values), device=values.device), index], valid.any(1)


def _patch_sizes(fractions: Tensor, config: Config, shape: Tuple[int, int]) -> Tensor:
    """Patch (h, w) in pixels from the unclipped eq. 5-6 draws (``patches.sample_patch_size``)."""
    lo = fractions.new_tensor([config.h_min, config.w_min])
    hi = fractions.new_tensor([config.h_max, config.w_max])
    pixels = torch.minimum(torch.maximum(fractions, lo), hi) * fractions.new_tensor(shape)
    return pixels.round().long().clamp(min=1)  # round half to even, as Python's round


def _source_rects(size: Tensor, centres: Tensor, integral: Optional[Tensor], config: Config,
                  shape: Tuple[int, int]) -> Tuple[Tensor, Tensor]:
    """Eq. 7 (``patches.sample_source_rect``): the first of K candidate centres that passes.

    Returns B x 4 rectangles (the whole image where none passed) and B found flags.
    """
    extent = centres.new_tensor(shape)
    lo = extent * centres.new_tensor([config.h_min, config.w_min]) / 2
    centre = lo + centres * (extent - 2 * lo)  # B x K x 2 (y, x)
    start = (centre - size[:, None] / 2).round().long()
    y0, x0 = start[..., 0].clamp(0, shape[0]), start[..., 1].clamp(0, shape[1])
    y1, x1 = (y0 + size[:, None, 0]).clamp(max=shape[0]), (x0 + size[:, None, 1]).clamp(max=shape[1])
    rects = torch.stack([x0, y0, x1, y1], -1)
    valid = (x1 - x0 >= 2) & (y1 - y0 >= 2)
    if integral is not None:
        valid &= _fraction_in_rects(integral, rects) > config.t_object
    rect, found = _first(valid, rects)
    return torch.where(found[:, None], rect, rect.new_tensor([0, 0, shape[1], shape[0]])), found


def _resized_sizes(rects: Tensor, r: Tensor, config: Config, shape: Tuple[int, int]) -> Tensor:
    """Patch (h, w) after the resize of eq. 9, as ``patches.resize_scale`` and ``_add_patch``."""
    (height, width), h, w = shape, (rects[:, 3] - rects[:, 1]).double(), (rects[:, 2] - rects[:, 0]).double()
    r = r.clamp(config.s_min, config.s_max)
    f = 0.5 if config.size_clip == "reference" else 1.0  # the authors' half-width bounds
    upper = torch.minimum(r, torch.minimum(f * config.w_max * width / w, f * config.h_max * height / h))
    s = torch.maximum(upper, torch.maximum(f * config.w_min * width / w, f * config.h_min * height / h))
    s = torch.minimum(s, torch.minimum((width - 2) / w, (height - 2) / h))  # 1-px margin
    sides = torch.stack([s * h, s * w], 1)
    if config.size_clip == "reference":  # whole-pixel half-widths, as patches.resized_side
        return (2 * (sides / 2).floor()).long().clamp(min=3)
    return sides.round().long().clamp(min=3)


def _overlap_counts(dest_obj: Tensor, patch_obj: Tensor) -> Tensor:
    """``|dest_obj[y:y+h, x:x+w] & patch_obj|`` for every corner (y, x) at once: B x H x W.

    ``patch_obj`` sits at the canvas origin; the cross-correlation theorem gives all
    offsets with two FFTs (float64, rounded: the counts are exact integers).
    """
    size = dest_obj.shape[1:]
    spectrum = torch.fft.rfft2(dest_obj.double()) * torch.fft.rfft2(patch_obj.double()).conj()
    return torch.fft.irfft2(spectrum, s=size).round()


def _dest_corners(offsets: Tensor, size: Tensor, patch_obj: Optional[Tensor], masks: Optional[_Masks],
                  config: Config, shape: Tuple[int, int]) -> Tuple[Tensor, Tensor]:
    """Eq. 10-12 (``patches.sample_dest_offset``): the first of K corners (y, x) that passes.

    Corners are uniform such that the patch lies inside the image with a 1-px margin;
    eq. 11 is tested with the integral image, eq. 12 with :func:`_overlap_counts`.
    """
    room = (size.new_tensor(shape) - size - 1).clamp(min=1)  # corner in [1, room]
    corners = 1 + (offsets * room[:, None]).floor().long()  # B x K x 2
    if masks is None:
        return corners[:, 0], torch.ones(len(corners), dtype=torch.bool, device=corners.device)
    y0, x0 = corners.unbind(-1)
    rects = torch.stack([x0, y0, x0 + size[:, None, 1], y0 + size[:, None, 0]], -1)
    valid = _fraction_in_rects(masks.dest_integral, rects) > config.t_object
    overlap = _overlap_counts(masks.dest, patch_obj).flatten(1).gather(1, y0 * shape[1] + x0)
    count = patch_obj.flatten(1).sum(1, keepdim=True)
    valid &= (count > 0) & (overlap / count.clamp(min=1) > config.t_overlap)
    return _first(valid, corners)


def _axis_taps(start: Tensor, length: Tensor, new_length: Tensor, corner: Tensor,
               size: int) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """Bilinear taps along one axis for every canvas pixel, with ``cv2.resize``'s arithmetic.

    Canvas pixel ``j`` of a patch at ``corner`` reads source coordinate
    ``(j - corner + 0.5) * length / new_length - 0.5`` (pixel centres aligned), computed
    in float64 and rounded to float32 as OpenCV does, clamped to the patch (not the
    image) so that its border pixels repeat.  Returns both tap indices, the weight of
    the second and which canvas pixels the patch covers.
    """
    j = torch.arange(size, device=start.device)[None] - corner[:, None]
    scale = 1.0 / (new_length.double() / length.double())  # OpenCV inverts the inverse scale
    u = ((j + 0.5) * scale[:, None] - 0.5).float()
    u = torch.minimum(u.clamp(min=0), (length - 1)[:, None].float())
    first = u.floor()
    second = torch.minimum(first + 1, (length - 1)[:, None].float())
    inside = (j >= 0) & (j < new_length[:, None])
    return start[:, None] + first.long(), start[:, None] + second.long(), u - first, inside


def place_patches(images: Tensor, src_rects: Tensor, sizes: Tensor, corners: Tensor) -> Tuple[Tensor, Tensor]:
    """Resize each source rectangle to ``sizes`` and put it at ``corners``: eq. 9-10 for a batch.

    ``images`` is float B x C x H x W, ``src_rects`` B x 4 (x0, y0, x1, y1),
    ``sizes`` B x 2 (h, w) and ``corners`` B x 2 (y, x), all int64.  Returns the patch
    content on the destination canvas (B x C x H x W, float, bilinear like
    ``cv2.resize(..., INTER_LINEAR)`` without its uint8 rounding; meaningless outside
    the patch) and the bool B x H x W mask of the pixels the patch covers.
    """
    batch, channels, height, width = images.shape
    ys0, ys1, fy, in_y = _axis_taps(src_rects[:, 1], src_rects[:, 3] - src_rects[:, 1], sizes[:, 0],
                                    corners[:, 0], height)
    xs0, xs1, fx, in_x = _axis_taps(src_rects[:, 0], src_rects[:, 2] - src_rects[:, 0], sizes[:, 1],
                                    corners[:, 1], width)
    flat = images.flatten(2)

    def tap(ys: Tensor, xs: Tensor) -> Tensor:
        index = (ys[:, :, None] * width + xs[:, None, :]).flatten(1)
        return flat.gather(2, index[:, None].expand(-1, channels, -1)).view(images.shape)

    fx, fy = fx[:, None, None, :], fy[:, None, :, None]
    top = tap(ys0, xs0) * (1 - fx) + tap(ys0, xs1) * fx
    bottom = tap(ys1, xs0) * (1 - fx) + tap(ys1, xs1) * fx
    return top * (1 - fy) + bottom * fy, in_y[:, :, None] & in_x[:, None, :]


def _sample_patch(draws: _Draws, slot: int, masks: Optional[_Masks], attempted: Tensor,
                  config: Config, shape: Tuple[int, int]) -> _Patch:
    """Sizes, source rectangle, resize and destination corner of one patch slot (eq. 5-12)."""
    size = _patch_sizes(draws.sizes[:, slot], config, shape)
    src_rect, src_found = _source_rects(size, draws.centres[:, slot],
                                        None if masks is None else masks.src_integral, config, shape)
    new_size = _resized_sizes(src_rect, draws.scales[:, slot], config, shape)
    patch_obj = None
    if masks is not None:  # the resized source object mask, at the canvas origin for eq. 12
        resized, inside = place_patches(masks.src[:, None].float(), src_rect, new_size,
                                        torch.zeros_like(new_size))
        patch_obj = (resized[:, 0] >= 0.5) & inside
    corner, dest_found = _dest_corners(draws.offsets[:, slot], new_size, patch_obj, masks, config, shape)
    # synthesis.py skips patches whose Poisson mask (the rectangle minus its frame) is tiny or thin
    big_enough = ((new_size - 2).prod(1) >= MIN_POISSON_PIXELS) & ((new_size - 2).amin(1) >= 3)
    return _Patch(src_rect, new_size, corner, attempted & src_found & dest_found & big_enough)


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
    if mode not in ("normal", "mixed"):
        raise ValueError(f"mode must be 'normal' or 'mixed', got {mode!r}")
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
    if kind not in ("binary", "continuous", "logistic"):
        raise ValueError(f"label kind must be 'binary', 'continuous' or 'logistic', got {kind!r}")
    channels = images.shape[1]
    diff_sum = (images - dest).abs().sum(1) * region  # exact: sums of integers
    m = box_count(diff_sum > tol * channels, 5) > 25 // 2
    if kind == "binary":
        label = m.float()
    else:
        c = median_disk_batch(diff_sum * m) / channels
        label = c if kind == "continuous" else m / (1 + torch.exp(-k * (c.float() - y0)))  # float32, as labels.py
    # the median filters can fill holes of the region (background in both images, gaps
    # between patches): those pixels were never part of a patch mask
    return label * region


def _blend_patch(image: Tensor, src: Tensor, masks: Optional[_Masks], patch: _Patch,
                 config: Config) -> Tuple[Tensor, Tensor]:
    """Poisson-blend one patch slot into the batch; returns the new image and the patch regions.

    As ``synthesis._add_patch`` with its default ``"fast"`` backend: the Poisson mask
    (object pixels of either image plus background in both) is the whole patch
    rectangle; its 1-px frame is zeroed, so OpenCV's problem lives on the rectangle
    without that frame.  The label region is the rectangle's object pixels in source
    or destination.  ``src`` carries the source object mask as an extra channel when
    constrained.
    """
    content, inside = place_patches(src, patch.src_rect, patch.size, patch.corner)
    region = inside & patch.ok[:, None, None]
    if masks is not None:
        region &= (content[:, 3] >= 0.5) | masks.dest
    (h, w), (y, x) = patch.size.unbind(1), patch.corner.unbind(1)
    rects = torch.stack([x + 1, y + 1, x + w - 1, y + h - 1], 1) * patch.ok[:, None]
    # the CPU path blends the uint8 output of cv2.resize and truncates the result, as OpenCV
    blended = poisson_rect_batch(image, content[:, :3].round(), rects, config.blend)
    return blended.clamp(0, 255).floor(), region


def _rects(patches: list, key: str) -> Tensor:
    """B x n_max x 4 rectangles (x0, y0, x1, y1) of the placed patches, -1 elsewhere."""
    rects = []
    for patch in patches:
        if key == "source":
            rect = patch.src_rect
        else:
            (h, w), (y, x) = patch.size.unbind(1), patch.corner.unbind(1)
            rect = torch.stack([x, y, x + w, y + h], 1)
        rects.append(torch.where(patch.ok[:, None], rect, -1))
    return torch.stack(rects, 1)


def make_anomaly_batch(dest: Tensor, src: Tensor, config: Config,
                       generator: torch.Generator) -> BatchAnomaly:
    """Blend up to ``config.n_max`` patches of ``src[i]`` into ``dest[i]`` for every i and label the change.

    The batched :func:`nsa_tutorial.synthesis.make_anomaly`: ``dest`` and ``src`` are
    uint8 B x H x W x 3 tensors on any device, ``generator`` a CPU ``torch.Generator``
    (same state, same result).  Slot 0 is always attempted, each further slot on a fair
    coin flip; a patch whose constraints fail within ``config.max_tries`` candidates is
    skipped (``BatchAnomaly.skipped``); patches are blended one slot at a time, so a later
    one sees the earlier ones, as on the CPU.
    """
    _check_inputs(dest, src, config, generator)
    shape = (dest.shape[1], dest.shape[2])
    dest3, src3 = dest.permute(0, 3, 1, 2).float(), src.permute(0, 3, 1, 2).float()
    draws = _draw(generator, len(dest), config, dest.device)
    attempted = draws.coins >= 0.5
    attempted[:, 0] = True
    masks = None
    if config.has_background_constraints:
        src_obj = object_mask_batch(src3, config.background, config.t_brightness)
        dest_obj = object_mask_batch(dest3, config.background, config.t_brightness)
        masks = _Masks(src_obj, dest_obj, _integral(src_obj), _integral(dest_obj))
        src3 = torch.cat([src3, src_obj[:, None].float()], 1)
    image, region, patches = dest3, torch.zeros_like(dest3[:, 0], dtype=torch.bool), []
    for slot in range(config.n_max):
        patch = _sample_patch(draws, slot, masks, attempted[:, slot], config, shape)
        image, patch_region = _blend_patch(image, src3, masks, patch, config)
        region |= patch_region  # overlapping patches: OR, never overwrite
        patches.append(patch)
    labels = label_batch(image, dest3, region, config.label, config.y0, config.k)
    return BatchAnomaly(images=image.to(torch.uint8).permute(0, 2, 3, 1).contiguous(), labels=labels,
                        region=region, source_rects=_rects(patches, "source"),
                        dest_rects=_rects(patches, "dest"), attempted=attempted,
                        placed=torch.stack([p.ok for p in patches], 1))


def synthesize_batch(dest: Tensor, src: Tensor, config: Config,
                     generator: torch.Generator) -> Tuple[Tensor, Tensor]:
    """A batch of self-supervised training samples: ``(images, labels)``.

    ``dest`` and ``src`` are uint8 B x H x W x 3 tensors on the training device (CUDA,
    or slower, CPU); ``generator`` is a CPU ``torch.Generator``.  Returns uint8
    B x H x W x 3 images and float32 B x H x W labels on that device, distributed as
    :func:`nsa_tutorial.synthesis.synthesize` makes them one by one.  Only
    ``config.method == "nsa"`` with variant None, A or B; others raise
    ``NotImplementedError``.

    >>> import torch
    >>> from nsa_tutorial.config import get_config
    >>> g = torch.Generator().manual_seed(0)
    >>> dest, src = torch.randint(0, 256, (2, 4, 64, 64, 3), dtype=torch.uint8, generator=g)
    >>> images, labels = synthesize_batch(dest, src, get_config("carpet"), g)
    >>> images.shape, labels.shape, labels.dtype
    (torch.Size([4, 64, 64, 3]), torch.Size([4, 64, 64]), torch.float32)
    """
    anomaly = make_anomaly_batch(dest, src, config, generator)
    return anomaly.images, anomaly.labels


def _check_float_batch(images: Tensor, name: str) -> None:
    if not isinstance(images, Tensor) or images.ndim != 4 or not images.is_floating_point():
        raise ValueError(f"{name} must be a float B x C x H x W tensor on the 0-255 scale, got "
                         f"{getattr(images, 'dtype', type(images).__name__)} with shape "
                         f"{tuple(getattr(images, 'shape', ()))}")


def _check_inputs(dest: Tensor, src: Tensor, config: Config, generator: torch.Generator) -> None:
    if not isinstance(config, Config):
        raise ValueError(f"config must be a nsa_tutorial.config.Config (use get_config), got {type(config).__name__}")
    if config.method != "nsa" or config.variant in ("C", "D"):
        raise NotImplementedError(f"the batched path implements method 'nsa' with variant None, 'A' or 'B', got "
                                  f"method {config.method!r}, variant {config.variant!r}; use "
                                  "nsa_tutorial.synthesis.synthesize for the others")
    if not isinstance(generator, torch.Generator) or generator.device.type != "cpu":
        raise ValueError("generator must be a CPU torch.Generator (torch.Generator().manual_seed(seed)): all draws are "
                         f"made on the CPU so that results do not depend on the device; got {generator!r}")
    for name, images in (("dest", dest), ("src", src)):
        if not isinstance(images, Tensor) or images.dtype != torch.uint8:
            raise ValueError(f"{name} must be a uint8 torch tensor (0-255), got "
                             f"{getattr(images, 'dtype', type(images).__name__)}")
        if images.ndim != 4 or images.shape[3] != 3 or len(images) == 0:
            raise ValueError(f"{name} must be a non-empty B x H x W x 3 batch (channels last; permute a "
                             f"B x 3 x H x W one, repeat grey images to 3 channels), got shape {tuple(images.shape)}")
    if dest.shape != src.shape or dest.device != src.device:
        raise ValueError(f"dest and src must have the same shape and device, got {tuple(dest.shape)} on "
                         f"{dest.device} and {tuple(src.shape)} on {src.device}")
    height, width = dest.shape[1:3]
    min_h, min_w = config.h_min * height, config.w_min * width
    if min(min_h, min_w) < 3 or height * width < 4 * MIN_POISSON_PIXELS:
        raise ValueError(f"images of {height}x{width} px are too small: the smallest patch would be "
                         f"{min_h:.1f}x{min_w:.1f} px; need at least 3 px per side (e.g. >= "
                         f"{math.ceil(3 / min(config.h_min, config.w_min))} px images for this config)")
