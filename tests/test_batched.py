"""Tests for nsa_tutorial.batched: NSA synthesis for a whole batch in PyTorch (CPU here).

The building blocks are checked against the CPU path's functions (object masks, labels,
resize, Poisson solvers); whole batches against the constraints of eq. 7-12, a replay of
their patches with the CPU blender, and the CPU path's distributions on the same images.
"""

import cv2
import numpy as np
import pytest
import torch
from scipy import stats

from nsa_tutorial import patches as P
from nsa_tutorial.batched import (label_batch, make_anomaly_batch, object_mask_batch, place_patches,
                                  poisson_rect_batch, synthesize_batch)
from nsa_tutorial.config import get_config
from nsa_tutorial.labels import make_label
from nsa_tutorial.poisson import clone_into, clone_rect, solve_poisson
from nsa_tutorial.synthesis import MIN_POISSON_PIXELS, make_anomaly

OBJECT_IMAGES = ("astronaut", "coffee", "chelsea")
TEXTURE_IMAGES = ("brick", "grass", "gravel")


def rgb(real_image, name, size):
    image = real_image(name, size)
    return np.repeat(image[:, :, None], 3, axis=2) if image.ndim == 2 else image


def channels_first(images):
    """numpy N x H x W x 3 (or a list of them) -> float N x 3 x H x W tensor."""
    return torch.from_numpy(np.ascontiguousarray(np.stack(images))).permute(0, 3, 1, 2).float()


def batch_pairs(real_image, names, size, n, seed):
    """n (dest, src) pairs of different images: numpy lists and the uint8 B x H x W x 3 tensors."""
    pool = [rgb(real_image, name, size) for name in names]
    rng = np.random.default_rng(seed)
    d = rng.integers(0, len(pool), n)
    s = (d + 1 + rng.integers(0, len(pool) - 1, n)) % len(pool)
    dest, src = [pool[i] for i in d], [pool[i] for i in s]
    return dest, src, torch.from_numpy(np.stack(dest)), torch.from_numpy(np.stack(src))


# ---------------------------------------------------------------- building blocks vs the CPU path

@pytest.mark.parametrize("name", ["bottle", "hazelnut"])  # b, t = 200, 60 and 20, 20
def test_object_masks_equal_cpu(real_image, name):
    config = get_config(name)
    images = [rgb(real_image, n, (72, 88)) for n in OBJECT_IMAGES + TEXTURE_IMAGES]
    masks = object_mask_batch(channels_first(images), config.background, config.t_brightness)
    expected = np.stack([P.object_mask(image, config.background, config.t_brightness) for image in images])
    np.testing.assert_array_equal(masks.numpy(), expected)
    assert sum(0 < e.mean() < 1 for e in expected) >= 3  # a real test: both classes in most images


@pytest.fixture(scope="module")
def label_inputs(request):
    """(images, dests, regions): a region covering the whole image (medians cut by the
    border), two NSA samples of the CPU path and an empty region."""
    real_image = request.getfixturevalue("real_image")
    dest, src = rgb(real_image, "astronaut", (72, 80)), rgb(real_image, "coffee", (72, 80))
    rng = np.random.default_rng(3)
    noisy = np.clip(dest + rng.normal(0, 3, dest.shape), 0, 255).astype(np.uint8)
    samples = [make_anomaly(dest, src, get_config("carpet"), np.random.default_rng(s)) for s in (1, 2)]
    images = [noisy] + [a.image for a in samples] + [dest]
    regions = [np.ones(dest.shape[:2], bool)] + [a.region for a in samples] + [np.zeros(dest.shape[:2], bool)]
    assert all(a.region.any() for a in samples)
    return images, [dest] * len(images), regions


@pytest.mark.parametrize("kind", ["binary", "continuous", "logistic"])
def test_labels_equal_make_label(label_inputs, kind):
    images, dests, regions = label_inputs
    config = get_config("bottle", label=kind)
    labels = label_batch(channels_first(images), channels_first(dests), torch.from_numpy(np.stack(regions)),
                         kind, config.y0, config.k).numpy()
    for label, image, dest, region in zip(labels, images, dests, regions):
        expected = make_label(image, dest, region, kind, config.y0, config.k)
        assert label.dtype == np.float32
        # logistic: exp in torch and numpy may differ in the last bit before the float32 cast
        np.testing.assert_allclose(label, expected, rtol=1e-6 if kind == "logistic" else 0, atol=0)
    assert (labels[0] > 0).mean() > 0.5 and not labels[-1].any()


def test_place_patches_is_cv2_resize_at_the_corner(real_image):
    image = rgb(real_image, "chelsea", (64, 80))
    height, width = image.shape[:2]
    rng = np.random.default_rng(0)
    n = 24
    x0, y0 = rng.integers(0, width - 2, n), rng.integers(0, height - 2, n)
    x1, y1 = rng.integers(x0 + 1, width, n) + 1, rng.integers(y0 + 1, height, n) + 1
    src_rects = np.stack([x0, y0, x1, y1], 1)
    sizes = np.stack([rng.integers(3, height - 2, n), rng.integers(3, width - 2, n)], 1)
    corners = np.stack([rng.integers(1, height - sizes[:, 0]), rng.integers(1, width - sizes[:, 1])], 1)
    mask = (rng.random((height, width)) < 0.5).astype(np.float32)
    stacked = torch.cat([channels_first([image] * n), torch.from_numpy(mask).expand(n, 1, -1, -1)], 1)
    content, inside = place_patches(stacked, *(torch.from_numpy(a).long() for a in (src_rects, sizes, corners)))
    for i, ((sx0, sy0, sx1, sy1), (h, w), (y, x)) in enumerate(zip(src_rects, sizes, corners)):
        expected_inside = np.zeros((height, width), bool)
        expected_inside[y:y + h, x:x + w] = True
        np.testing.assert_array_equal(inside[i].numpy(), expected_inside)
        patch = content[i, :, y:y + h, x:x + w].permute(1, 2, 0).numpy()
        colour = cv2.resize(image[sy0:sy1, sx0:sx1], (int(w), int(h)), interpolation=cv2.INTER_LINEAR)
        assert np.abs(np.round(patch[:, :, :3]) - colour).max() <= 1  # OpenCV's uint8 path is fixed-point
        grey = cv2.resize(mask[sy0:sy1, sx0:sx1], (int(w), int(h)), interpolation=cv2.INTER_LINEAR)
        np.testing.assert_allclose(patch[:, :, 3], grey, atol=1e-5)
        decided = np.abs(grey - 0.5) > 1e-5  # exact ties may round either way
        np.testing.assert_array_equal((patch[:, :, 3] >= 0.5)[decided], (grey >= 0.5)[decided])


def random_rects(rng, n, height, width):
    """Rectangles (x0, y0, x1, y1) with sides >= 5 inside the image, some touching its border."""
    h, w = rng.integers(5, height, n), rng.integers(5, width, n)
    y, x = rng.integers(0, height - h + 1), rng.integers(0, width - w + 1)
    return np.stack([x, y, x + w, y + h], 1)


@pytest.mark.parametrize("mode", ["normal", "mixed"])
def test_poisson_solve_is_clone_rect(real_image, mode):
    """OpenCV's problem (as synthesis solves it): equal to clone_rect up to its truncation."""
    dest, src = rgb(real_image, "astronaut", (60, 70)), rgb(real_image, "coffee", (60, 70))
    rects = random_rects(np.random.default_rng(1), 8, 60, 70)
    canvases = []
    for x0, y0, x1, y1 in rects:
        canvas = dest.copy()
        canvas[y0:y1, x0:x1] = src[y0:y1, x0:x1]
        canvases.append(canvas)
    out = poisson_rect_batch(channels_first([dest] * len(rects)), channels_first(canvases),
                             torch.from_numpy(rects).long(), mode)
    out = out.permute(0, 2, 3, 1).numpy()
    for f, (x0, y0, x1, y1) in zip(out, rects):
        expected = dest.copy()
        expected[y0:y1, x0:x1] = clone_rect(src[y0:y1, x0:x1], dest[y0:y1, x0:x1],
                                            np.full((y1 - y0, x1 - x0), 255, np.uint8), mode)
        truncated = np.clip(f, 0, 255).astype(np.uint8)
        difference = np.abs(truncated.astype(int) - expected)
        assert difference.max() <= 1 and (difference > 0).mean() < 1e-3
        if min(x1 - x0, y1 - y0) > 10:  # smaller ones keep no source gradient after the erosion
            assert np.abs(truncated.astype(int) - dest).max() > 10


def test_poisson_solve_without_erosion_is_the_textbook_problem(real_image):
    dest = rgb(real_image, "chelsea", (48, 56)).astype(np.float64)
    src = rgb(real_image, "gravel", (48, 56)).astype(np.float64)
    rects = random_rects(np.random.default_rng(2), 6, 48, 56)
    out = poisson_rect_batch(channels_first([dest] * 6), channels_first([src] * 6),
                             torch.from_numpy(rects).long(), "normal", erosion=0)
    for f, (x0, y0, x1, y1) in zip(out.permute(0, 2, 3, 1).numpy(), rects):
        omega = np.zeros(dest.shape[:2], bool)
        omega[y0 + 1:y1 - 1, x0 + 1:x1 - 1] = True
        assert np.abs(f - solve_poisson(dest, src, omega)).max() < 0.01  # well under a grey level


def test_poisson_empty_rects_and_bad_rects(real_image):
    dest = channels_first([rgb(real_image, "coffee", 32)] * 2)
    src = torch.flip(dest, (2,))
    out = poisson_rect_batch(dest, src, torch.tensor([[0, 0, 0, 0], [5, 5, 7, 30]]))  # 2 px wide: no unknowns
    assert torch.equal(out, dest)
    with pytest.raises(ValueError, match="inside the image"):
        poisson_rect_batch(dest, src, torch.tensor([[0, 0, 0, 0], [5, 5, 33, 20]]))
    with pytest.raises(ValueError, match="int64 rects"):
        poisson_rect_batch(dest, src, torch.zeros(3, 4, dtype=torch.int64))
    with pytest.raises(ValueError, match="mode"):
        poisson_rect_batch(dest, src, torch.zeros(2, 4, dtype=torch.int64), "average")


# ---------------------------------------------------------------- whole batches

@pytest.fixture(scope="module")
def bottle_batch(request):
    real_image = request.getfixturevalue("real_image")
    dest, src, dest_t, src_t = batch_pairs(real_image, OBJECT_IMAGES, (72, 88), 48, seed=0)
    config = get_config("bottle")
    return config, dest, src, make_anomaly_batch(dest_t, src_t, config, torch.Generator().manual_seed(0))


def test_accepted_placements_satisfy_the_constraints(bottle_batch):
    config, dests, srcs, anomaly = bottle_batch
    height, width = dests[0].shape[:2]
    assert anomaly.placed.sum() > len(dests)  # enough patches to test, and some skipped ones
    assert anomaly.skipped.sum() > 0
    for dest, src, s_rects, d_rects, placed in zip(dests, srcs, anomaly.source_rects.numpy(),
                                                   anomaly.dest_rects.numpy(), anomaly.placed.numpy()):
        src_obj = P.object_mask(src, config.background, config.t_brightness)
        dest_obj = P.object_mask(dest, config.background, config.t_brightness)
        for (sx0, sy0, sx1, sy1), (x0, y0, x1, y1) in zip(s_rects[placed], d_rects[placed]):
            sh, sw, h, w = sy1 - sy0, sx1 - sx0, y1 - y0, x1 - x0
            assert 0 <= sx0 and sx1 <= width and 0 <= sy0 and sy1 <= height and min(sh, sw) >= 2
            assert P.fraction_in_rects(cv2.integral(src_obj.astype(np.uint8)),
                                       np.array([[sx0, sy0, sx1, sy1]]))[0] > config.t_object  # eq. 7
            assert 1 <= x0 and x1 <= width - 1 and 1 <= y0 and y1 <= height - 1  # eq. 10, 1-px margin
            assert (h - 2) * (w - 2) >= MIN_POISSON_PIXELS
            f = 0.5 if config.size_clip == "reference" else 1.0  # the authors' half-width bounds
            assert h >= round(f * config.h_min * height) - 1 and w >= round(f * config.w_min * width) - 1  # eq. 9
            # one factor s resizes both sides (aspect ratio kept, eq. 9), up to rounding (the
            # authors' rule: s * side lies in [side, side + 2), the half-width floored)
            below, above = (0, 2) if config.size_clip == "reference" else (0.5, 0.5)
            assert max((h - below) / sh, (w - below) / sw) <= min((h + above) / sh, (w + above) / sw) \
                or min(h, w) == 3
            window = dest_obj[y0:y1, x0:x1]
            assert window.mean() > config.t_object  # eq. 11
            patch_obj = cv2.resize(src_obj[sy0:sy1, sx0:sx1].astype(np.float32), (int(w), int(h))) >= 0.5
            assert (window & patch_obj).sum() / patch_obj.sum() > config.t_overlap  # eq. 12


def test_batch_replays_with_the_cpu_blender(bottle_batch):
    """Each sample is its patches, resized with cv2 and blended in order with clone_into,
    and its label is make_label's; normal samples are the destination itself."""
    config, dests, srcs, anomaly = bottle_batch
    images, labels, regions = anomaly.images.numpy(), anomaly.labels.numpy(), anomaly.region.numpy()
    assert anomaly.is_normal.any() and not anomaly.is_normal.all()
    for i, (dest, src) in enumerate(zip(dests, srcs)):
        image = dest
        for (sx0, sy0, sx1, sy1), (x0, y0, x1, y1) in zip(anomaly.source_rects[i][anomaly.placed[i]].tolist(),
                                                          anomaly.dest_rects[i][anomaly.placed[i]].tolist()):
            # float resize, rounded, as the batched path (cv2's uint8 resize is within 1 level of it)
            patch = cv2.resize(src[sy0:sy1, sx0:sx1].astype(np.float32), (x1 - x0, y1 - y0),
                               interpolation=cv2.INTER_LINEAR).round().astype(np.uint8)
            mask = np.zeros(patch.shape[:2], np.uint8)
            mask[1:-1, 1:-1] = 255
            image = clone_into(image, patch, mask, (x0, y0), config.blend)
        difference = np.abs(images[i].astype(int) - image)
        # float rounding flips a few truncations; they carry into the next patch's f*
        assert difference.max() <= 1 and (difference > 0).mean() < 5e-3
        # the same label up to float32 rounding of the logistic (torch's exp and numpy's differ)
        np.testing.assert_allclose(labels[i], make_label(images[i], dest, regions[i], config.label,
                                                         config.y0, config.k), rtol=1e-6, atol=1e-7)
        if anomaly.is_normal[i]:
            assert np.array_equal(images[i], dest) and not regions[i].any()


def test_determinism_shapes_and_dtypes(real_image):
    _, _, dest, src = batch_pairs(real_image, TEXTURE_IMAGES, 56, 4, seed=1)
    config = get_config("carpet")
    first = synthesize_batch(dest, src, config, torch.Generator().manual_seed(7))
    again = synthesize_batch(dest, src, config, torch.Generator().manual_seed(7))
    other = synthesize_batch(dest, src, config, torch.Generator().manual_seed(8))
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert not torch.equal(first[0], other[0])
    images, labels = first
    assert images.shape == dest.shape and images.dtype == torch.uint8
    assert labels.shape == dest.shape[:3] and labels.dtype == torch.float32
    assert 0 <= labels.min() and labels.max() <= 1 and labels.max() > 0.5


def test_variants_a_and_b():
    """On background-only images (|grey - b| <= t everywhere) the object constraints reject
    every patch; variant A drops them; variant B attempts one patch only."""
    config = get_config("bottle")
    rng = torch.Generator().manual_seed(0)
    dest, src = torch.randint(int(config.background) - 20, int(config.background) + 20, (2, 8, 64, 64, 3),
                              dtype=torch.uint8, generator=rng)
    assert make_anomaly_batch(dest, src, config, rng).is_normal.all()
    free = make_anomaly_batch(dest, src, get_config("bottle", variant="A"), rng)
    assert free.placed[:, 0].float().mean() > 0.5  # the rest are below MIN_POISSON_PIXELS
    single = make_anomaly_batch(dest, src, get_config("bottle", variant="B"), rng)
    assert single.attempted.shape == (8, 1) and single.attempted.all()


# ---------------------------------------------------------------- same distributions as the CPU path

def assert_same_mean(a, b):
    """Means agree within 4 standard errors of their difference (the samples are independent)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    standard_error = np.sqrt(a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b))
    assert abs(a.mean() - b.mean()) < 4 * standard_error, (a.mean(), b.mean(), standard_error)


@pytest.mark.parametrize("size_clip", ["paper", "reference"])
@pytest.mark.parametrize("name, names", [("bottle", OBJECT_IMAGES), ("carpet", TEXTURE_IMAGES)])
def test_same_distributions_as_cpu_path(real_image, name, names, size_clip):
    """The same image pairs through both paths: patch shapes, counts and label statistics agree,
    with either clip after resizing (eq. 9)."""
    n, config = 160, get_config(name, size_clip=size_clip)
    dest, src, dest_t, src_t = batch_pairs(real_image, names, 80, n, seed=4)
    rng = np.random.default_rng(4)
    cpu = [make_anomaly(d, s, config, rng) for d, s in zip(dest, src)]
    batch = make_anomaly_batch(dest_t, src_t, config, torch.Generator().manual_seed(4))
    for cpu_rects, batch_rects in (([r for a in cpu for r in a.dest_rects], batch.dest_rects),
                                   ([r for a in cpu for r in a.source_rects], batch.source_rects)):
        cpu_rects, batch_rects = np.array(cpu_rects), batch_rects[batch.placed].numpy()
        for axis in (0, 1):  # widths, heights
            sides = [rects[:, axis + 2] - rects[:, axis] for rects in (cpu_rects, batch_rects)]
            assert stats.ks_2samp(*sides).pvalue > 0.01
            assert_same_mean(*sides)
    # the resized side fractions: the authors' rule caps them at w_max / 2 (h_max / 2) on both paths
    f = 0.5 if size_clip == "reference" else 1.0
    for rects in (np.array([r for a in cpu for r in a.dest_rects]), batch.dest_rects[batch.placed].numpy()):
        w, h = (rects[:, 2] - rects[:, 0]) / 80, (rects[:, 3] - rects[:, 1]) / 80
        assert w.max() <= f * config.w_max + 1 / 80 and h.max() <= f * config.h_max + 1 / 80
    assert_same_mean([a.attempted for a in cpu], batch.attempted.sum(1).numpy())
    assert_same_mean([len(a.dest_rects) for a in cpu], batch.placed.sum(1).numpy())
    normal = np.array([a.is_normal for a in cpu]), batch.is_normal.numpy()
    assert abs(normal[0].mean() - normal[1].mean()) < 4 * np.sqrt(max(normal[0].mean(), 1 / n) * 2 / n)
    mass = np.array([a.label.sum() for a in cpu]), batch.labels.sum((1, 2)).numpy()
    assert_same_mean(*mass)
    assert stats.ks_2samp(*mass).pvalue > 0.01
    change = ([np.abs(a.image.astype(float) - d).mean(2)[a.label > 0].mean() for a, d in zip(cpu, dest)
               if (a.label > 0).any()],
              [np.abs(i.float() - d.float()).mean(2)[l > 0].mean().item() for i, d, l in
               zip(batch.images, dest_t, batch.labels) if (l > 0).any()])
    assert_same_mean(*change)  # mean intensity change inside the labels, per sample


# ---------------------------------------------------------------- input validation

@pytest.mark.parametrize("change, pattern", [
    (lambda d, s, c, g: (d.float(), s, c, g), "uint8"),
    (lambda d, s, c, g: (d.permute(0, 3, 1, 2), s, c, g), "B x H x W x 3"),
    (lambda d, s, c, g: (d[0], s, c, g), "B x H x W x 3"),
    (lambda d, s, c, g: (d.numpy(), s, c, g), "torch tensor"),
    (lambda d, s, c, g: (d, s[:, :48], c, g), "same shape"),
    (lambda d, s, c, g: (d[:, :12, :12], s[:, :12, :12], c, g), "too small"),
    (lambda d, s, c, g: (d, s, "bottle", g), "get_config"),
    (lambda d, s, c, g: (d, s, c, np.random.default_rng(0)), "CPU torch.Generator"),
])
def test_bad_inputs_raise_value_errors(change, pattern):
    dest = torch.zeros(2, 64, 64, 3, dtype=torch.uint8)
    with pytest.raises(ValueError, match=pattern):
        synthesize_batch(*change(dest, dest.clone(), get_config("bottle"), torch.Generator()))


@pytest.mark.parametrize("config", [get_config("bottle", method="cutpaste", label="binary"),
                                    get_config("bottle", variant="D")])
def test_other_methods_are_not_implemented(config):
    dest = torch.zeros(2, 64, 64, 3, dtype=torch.uint8)
    with pytest.raises(NotImplementedError, match="synthesis.synthesize"):
        synthesize_batch(dest, dest, config, torch.Generator())
