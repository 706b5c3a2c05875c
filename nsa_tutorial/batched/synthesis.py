"""NSA synthesis for a whole batch in PyTorch: the torch twin of :mod:`nsa_tutorial.synthesis`.

Book chapter: *Synthetic anomalies* (section "Synthesis on the GPU").
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple, Optional, Tuple

import torch

from .. import patches as P
from ..config import Config
from ..synthesis import MIN_POISSON_PIXELS
from .labels import label_batch
from .patches import (_dest_corners, _integral, _Masks, _patch_sizes, _resized_sizes, _source_rects,
                      object_mask_batch, place_patches)
from .poisson import poisson_rect_batch

Tensor = torch.Tensor


def supports(config: Config) -> bool:
    """Whether the batched path implements ``config``: method ``"nsa"`` with variant None, ``"A"`` or
    ``"B"``; the other methods and variants C and D are made by :func:`nsa_tutorial.synthesis.synthesize`."""
    return config.method == "nsa" and config.variant in (None, "A", "B")


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
    :func:`nsa_tutorial.synthesis.synthesize` makes them one by one.  Only configs
    that :func:`supports` accepts; others raise ``NotImplementedError``.

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


def _check_inputs(dest: Tensor, src: Tensor, config: Config, generator: torch.Generator) -> None:
    if not isinstance(config, Config):
        raise ValueError(f"config must be a nsa_tutorial.config.Config (use get_config), got {type(config).__name__}")
    if not supports(config):
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
