"""Patch sampling for a whole batch in PyTorch (paper eq. 5-12).

The torch twin of :mod:`nsa_tutorial.patches`: object masks (eq. 8) as box counts, patch sizes
(eq. 5-6), source rectangles (eq. 7), resize factors (eq. 9) and destination corners (eq. 10-12),
with all ``config.max_tries`` candidates tested at once; bilinear resize and placement in one gather.
Book chapter: *Synthetic anomalies* (section "Synthesis on the GPU").
"""

from __future__ import annotations

from typing import NamedTuple, Optional, Tuple

import torch
import torch.nn.functional as F

from .. import patches as P
from ..config import Config
from .poisson import _check_float_batch

Tensor = torch.Tensor


class _Masks(NamedTuple):
    """Object masks (eq. 8) of source and destination and their integral images."""

    src: Tensor
    dest: Tensor
    src_integral: Tensor
    dest_integral: Tensor


def box_count(mask: Tensor, size: int) -> Tensor:
    """Set pixels in the ``size x size`` window around each pixel of a B x H x W mask.

    Borders are replicated, as in ``cv2.medianBlur``; the counts are exact integers
    (float32), so ``box_count(m, k) > k * k // 2`` is :func:`nsa_tutorial.patches.binary_median`.
    """
    padded = F.pad(mask[:, None].float(), (size // 2,) * 4, mode="replicate")
    return F.avg_pool2d(padded, size, stride=1, divisor_override=1)[:, 0]


def binary_median_batch(mask: Tensor, size: int) -> Tensor:
    """:func:`nsa_tutorial.patches.binary_median` of a bool B x H x W batch: more than half of the
    ``size x size`` window set."""
    return box_count(mask, size) > size * size // 2


def object_mask_batch(images: Tensor, background: float, t_brightness: float) -> Tensor:
    """Object pixels (eq. 8) of a float B x C x H x W batch: bool B x H x W.

    Equal to :func:`nsa_tutorial.patches.object_mask` image by image: the test
    ``|sum_c x - C b| > C t`` on the channel sum, then a 7x7 median as a box count.
    """
    _check_float_batch(images, "images")
    channels = images.shape[1]
    far = (images.sum(1) - channels * background).abs() > channels * t_brightness
    return binary_median_batch(far, P.OBJECT_MEDIAN)


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
