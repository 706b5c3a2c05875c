"""Tests for nsa_tutorial.synthesis: NSA, CutPaste, FPI and PII samples (paper Sec. 3, Tables 5-7)."""

import time

import cv2
import numpy as np
import pytest
from scipy import stats

from nsa_tutorial import patches as P
from nsa_tutorial.config import METHODS, get_config
from nsa_tutorial.synthesis import SYNTHESIS_BACKENDS as BACKENDS, _seamless, make_anomaly, synthesize

VARIANTS = (None, "A", "B", "C", "D")


def disk_image(size=96, radius=30, centre=None, seed=0):
    """A bright textured disk (the object) on a dark background, as for b = 0 (rCXR settings)."""
    rng = np.random.default_rng(seed)
    cy, cx = centre or (size // 2, size // 2)
    yy, xx = np.mgrid[:size, :size]
    inside = (yy - cy) ** 2 + (xx - cx) ** 2 <= radius ** 2
    image = rng.integers(0, 8, (size, size, 3)).astype(np.uint8)
    smooth = cv2.GaussianBlur(rng.integers(60, 250, (size, size, 3)).astype(np.uint8), (0, 0), 2)
    image[inside] = smooth[inside]
    return image


def pair(real_image, size=96):
    return real_image("coffee", size), real_image("chelsea", size)


def outside_rects(shape, rects):
    outside = np.ones(shape, bool)
    for x0, y0, x1, y1 in rects:
        outside[y0:y1, x0:x1] = False
    return outside


# ---------------------------------------------------------------- determinism and layout

@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("variant", VARIANTS)
def test_same_seed_same_sample_other_seed_other_sample(real_image, method, variant):
    dest, src = pair(real_image)
    c = get_config("hazelnut", method=method, variant=variant)
    a, b = (make_anomaly(dest, src, c, np.random.default_rng(0)) for _ in range(2))
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.label, b.label)
    assert a.dest_rects == b.dest_rects and a.source_rects == b.source_rects
    other = make_anomaly(dest, src, c, np.random.default_rng(1))
    assert not a.is_normal and not other.is_normal
    assert not np.array_equal(a.image, other.image) and not np.array_equal(a.label, other.label)
    assert np.array_equal(dest, real_image("coffee", 96))  # inputs are not modified


@pytest.mark.parametrize("method", METHODS)
def test_grey_layouts_and_equal_channels(real_image, method):
    """HxW stays HxW, HxWx1 stays HxWx1; internally grey is three equal channels."""
    grey_dest, grey_src = real_image("camera", 80), real_image("gravel", 80)
    c = get_config("carpet", method=method)
    results = {}
    for layout, (d, s) in {"hw": (grey_dest, grey_src),
                           "hw1": (grey_dest[:, :, None], grey_src[:, :, None]),
                           "hw3": (np.dstack([grey_dest] * 3), np.dstack([grey_src] * 3))}.items():
        image, label = synthesize(d, s, c, np.random.default_rng(3))
        assert image.shape == d.shape and image.dtype == np.uint8
        assert label.shape == d.shape[:2] and label.dtype == np.float32
        results[layout] = image, label
    image3, label3 = results["hw3"]
    np.testing.assert_array_equal(image3[:, :, 0], image3[:, :, 1])
    np.testing.assert_array_equal(image3[:, :, 0], image3[:, :, 2])
    for layout in ("hw", "hw1"):
        np.testing.assert_array_equal(results[layout][0].reshape(80, 80), image3[:, :, 0])
        np.testing.assert_array_equal(results[layout][1], label3)
    assert label3.any()


# ---------------------------------------------------------------- invariants of every sample

CASES = [("hazelnut", "nsa", "logistic", "fast"), ("hazelnut", "nsa", "binary", "opencv"),
         ("carpet", "nsa", "continuous", "fast"), ("carpet", "nsa", "logistic", "opencv"),
         ("rcxr_male", "nsa", "logistic", "fast"), ("rcxr_male", "nsa", "logistic", "opencv"),
         ("toothbrush", "nsa", "logistic", "fast"), ("bottle", "cutpaste", "binary", "fast"),
         ("carpet", "fpi", "logistic", "fast"), ("hazelnut", "pii", "logistic", "fast"),
         ("hazelnut", "pii", "logistic", "opencv")]


def case_images(real_image, name):
    if name == "rcxr_male":
        return disk_image(seed=1), disk_image(radius=36, seed=2)
    if name in ("bottle", "toothbrush"):  # b = 200 and b = 20: real images with some background
        return real_image("astronaut", 96), real_image("coffee", 96)
    return pair(real_image)


def case_samples(real_image, name, method, label, backend, n=12):
    dest, src = case_images(real_image, name)
    c = get_config(name, method=method, label=label)
    rng = np.random.default_rng(4)
    samples = [make_anomaly(dest, src, c, rng, backend=backend) for _ in range(n)]
    assert sum(len(a.dest_rects) for a in samples) >= n
    return dest, samples


@pytest.mark.parametrize("name, method, label, backend", CASES)
def test_image_unchanged_outside_dest_rects(real_image, name, method, label, backend):
    dest, samples = case_samples(real_image, name, method, label, backend)
    for a in samples:
        outside = outside_rects(dest.shape[:2], a.dest_rects)
        np.testing.assert_array_equal(a.image[outside], dest[outside])
        assert not a.region[outside].any()
        for x0, y0, x1, y1 in a.dest_rects:
            assert 0 <= x0 < x1 <= 96 and 0 <= y0 < y1 <= 96
        assert a.attempted == len(a.dest_rects) + a.skipped


@pytest.mark.parametrize("name, method, label, backend", CASES)
def test_labels_zero_outside_region_and_bounded(real_image, name, method, label, backend):
    """``Anomaly.region`` is the union of the patch masks: labels live only there (eq. 13-14)."""
    _, samples = case_samples(real_image, name, method, label, backend)
    for a in samples:
        assert a.label.min() >= 0 and (label == "continuous" or a.label.max() <= 1)
        assert not a.label[~a.region].any()
    assert sum(a.label[a.region].any() for a in samples) >= len(samples) // 2


@pytest.mark.parametrize("size_clip", ["paper", "reference"])
@pytest.mark.parametrize("name", ["bottle", "capsule", "screw", "zipper", "carpet", "cable"])
def test_nsa_dest_rects_respect_size_bounds(real_image, name, size_clip):
    """Eq. 9: the resized patch lies within [w_min W, w_max W] x [h_min H, h_max H] (±1 px),
    with the 1 px margin inside the image (eq. 10).  The authors' rule ("reference") halves
    the bounds (full sides capped at w_max W / 2, h_max H / 2) and keeps half-widths whole."""
    c, f = get_config(name, size_clip=size_clip), 0.5 if size_clip == "reference" else 1.0
    dest, src = real_image("astronaut", 128), real_image("chelsea", 128)
    rng, sides = np.random.default_rng(5), []
    for _ in range(25):
        a = make_anomaly(dest, src, c, rng)
        for x0, y0, x1, y1 in a.dest_rects:
            w, h = x1 - x0, y1 - y0
            sides.append((w, h))
            assert f * c.w_min * 128 - 2 <= w <= f * c.w_max * 128 + (1 if f == 1 else 0), (x0, x1)
            assert f * c.h_min * 128 - 2 <= h <= f * c.h_max * 128 + (1 if f == 1 else 0), (y0, y1)
            assert x0 >= 1 and y0 >= 1 and x1 <= 127 and y1 <= 127
            if size_clip == "reference":  # whole-pixel half-widths: even sides (3 is the floor of both paths)
                assert w % 2 == 0 or w == 3 and h % 2 == 0 or h == 3
    assert len(sides) >= 10
    sides = np.array(sides)
    if size_clip == "paper" and c.w_max == 0.80:  # the paper's rule does go past the authors' cap
        assert (sides[:, 0] > c.w_max * 64).any() or (sides[:, 1] > c.h_max * 64).any()


def test_nsa_dest_rects_satisfy_eq_11_and_12(real_image):
    """Recompute the masks of eq. 8 and the resized source mask; check eq. 11 and eq. 12."""
    c = get_config("rcxr_male")
    dest, src = disk_image(radius=26, centre=(40, 55), seed=3), disk_image(radius=34, seed=4)
    dest_obj = P.object_mask(dest, c.background, c.t_brightness)
    src_obj = P.object_mask(src, c.background, c.t_brightness)
    rng, checked = np.random.default_rng(6), 0
    for _ in range(25):
        a = make_anomaly(dest, src, c, rng)
        for (sx0, sy0, sx1, sy1), (x0, y0, x1, y1) in zip(a.source_rects, a.dest_rects):
            checked += 1
            window = dest_obj[y0:y1, x0:x1]
            assert window.mean() > c.t_object  # eq. 11
            assert src_obj[sy0:sy1, sx0:sx1].mean() > c.t_object  # eq. 7's acceptance test
            resized = cv2.resize(src_obj[sy0:sy1, sx0:sx1].astype(np.float32), (x1 - x0, y1 - y0),
                                 interpolation=cv2.INTER_LINEAR) >= 0.5
            assert (window & resized).sum() / resized.sum() > c.t_overlap  # eq. 12
            np.testing.assert_array_equal(a.region[y0:y1, x0:x1] | ~(window | resized), True)
    assert checked >= 15


@pytest.mark.parametrize("name", ["cable", "carpet"])
def test_expected_patch_count(real_image, name):
    """First patch always, each further one on a fair coin: E[attempted] = (n_max + 1) / 2."""
    c = get_config(name, method="fpi")
    dest, src = real_image("brick", 64), real_image("grass", 64)
    rng, n = np.random.default_rng(7), 500
    counts = np.array([make_anomaly(dest, src, c, rng).attempted for _ in range(n)])
    assert counts.min() == 1 and counts.max() == c.n_max
    mean, std = (c.n_max + 1) / 2, np.sqrt((c.n_max - 1) * 0.25 / n)
    assert abs(counts.mean() - mean) < 4 * std
    observed = np.bincount(counts - 1, minlength=c.n_max)
    expected = stats.binom(c.n_max - 1, 0.5).pmf(np.arange(c.n_max)) * n
    assert stats.chisquare(observed, expected).pvalue > 1e-4


@pytest.mark.parametrize("method", METHODS)
def test_all_background_image_gives_a_normal_sample_quickly(method):
    c = get_config("bottle", method=method)
    dest = np.full((96, 96, 3), int(c.background), np.uint8)
    rng, start = np.random.default_rng(8), time.perf_counter()
    for _ in range(10):
        a = make_anomaly(dest, dest.copy(), c, rng)
        assert a.is_normal and a.skipped == a.attempted >= 1
        assert not a.label.any() and not a.region.any()
        np.testing.assert_array_equal(a.image, dest)
    assert time.perf_counter() - start < 2.0
    # ablation A switches the constraints off: the same image now gets patches
    assert not make_anomaly(dest, dest, c.replace(variant="A"), rng).is_normal


# ---------------------------------------------------------------- the methods

@pytest.mark.parametrize("name", ["carpet", "hazelnut"])
def test_cutpaste_copies_from_the_same_image(real_image, name):
    dest, src = pair(real_image)
    c = get_config(name, method="cutpaste").replace(n_max=1)
    for seed in range(10):
        a = make_anomaly(dest, src, c, np.random.default_rng(seed))
        b = make_anomaly(dest, real_image("gravel", 96), c, np.random.default_rng(seed))
        np.testing.assert_array_equal(a.image, b.image)  # the source image plays no part
        (sx0, sy0, sx1, sy1), (x0, y0, x1, y1) = a.source_rects[0], a.dest_rects[0]
        assert (sx1 - sx0, sy1 - sy0) == (x1 - x0, y1 - y0)  # no resize
        local = a.region[y0:y1, x0:x1]
        np.testing.assert_array_equal(a.image[y0:y1, x0:x1][local], dest[sy0:sy1, sx0:sx1][local])
        np.testing.assert_array_equal(a.image[y0:y1, x0:x1][~local], dest[y0:y1, x0:x1][~local])
        assert np.isin(a.label, (0, 1)).all()


@pytest.mark.parametrize("name", ["carpet", "hazelnut"])
def test_fpi_is_linear_interpolation_with_one_factor(real_image, name):
    dest, src = pair(real_image)
    c = get_config(name, method="fpi").replace(n_max=1)
    factors = []
    for seed in range(150):
        a = make_anomaly(dest, src, c, np.random.default_rng(seed))
        assert a.source_rects == a.dest_rects  # same location in both images
        positive = np.unique(a.label[a.label > 0])
        assert len(positive) == 1 and 0.05 <= positive[0] <= 0.95
        factor = float(positive[0])
        factors.append(factor)
        if seed < 10:
            expected = (1 - factor) * dest.astype(np.float64) + factor * src.astype(np.float64)
            error = np.abs(a.image.astype(np.float64) - expected)[a.region]
            assert error.max() <= 0.5 + 1e-5  # round((1 - a) x_d + a x_s), ties aside
            np.testing.assert_array_equal(a.image[~a.region], dest[~a.region])
    assert stats.kstest(factors, stats.uniform(0.05, 0.9).cdf).pvalue > 1e-3


def test_pii_labels_are_one_factor(real_image):
    dest, src = pair(real_image)
    c = get_config("hazelnut", method="pii")
    factors = set()
    for seed in range(20):
        a = make_anomaly(dest, src, c, np.random.default_rng(seed))
        assert a.source_rects == a.dest_rects
        positive = np.unique(a.label[a.label > 0])
        assert len(positive) <= 1 and (len(positive) == 0 or 0.05 <= positive[0] <= 0.95)
        factors.update(positive.tolist())
    assert len(factors) >= 15


def test_pii_change_grows_with_the_factor(real_image):
    """PII weights source gradients by a: a larger factor changes the patch more."""
    dest, src = pair(real_image)
    c = get_config("carpet", method="pii").replace(n_max=1)
    pairs = []
    for seed in range(30):
        a = make_anomaly(dest, src, c, np.random.default_rng(seed))
        if a.is_normal:
            continue
        x0, y0, x1, y1 = a.dest_rects[0]
        change = np.abs(a.image[y0:y1, x0:x1].astype(float) - dest[y0:y1, x0:x1]).mean()
        reference = np.abs(src[y0:y1, x0:x1].astype(float) - dest[y0:y1, x0:x1]).mean()
        pairs.append((a.label.max(), change / max(reference, 1e-6)))
    factor, relative = np.array(pairs).T
    assert stats.spearmanr(factor, relative).statistic > 0.5


@pytest.mark.parametrize("backend", BACKENDS)
def test_nsa_normal_and_mixed_clone_differ(real_image, backend):
    dest, src = pair(real_image)
    c = get_config("hazelnut")
    assert c.blend == "normal"
    normal = make_anomaly(dest, src, c, np.random.default_rng(10), backend=backend)
    mixed = make_anomaly(dest, src, c.replace(blend="mixed"), np.random.default_rng(10), backend=backend)
    assert normal.dest_rects == mixed.dest_rects and normal.dest_rects
    assert not np.array_equal(normal.image, mixed.image)


def test_variant_c_single_unconstrained_cutpaste_shaped_patch(real_image):
    """App. B.1 C: CutPaste patch shapes, single patch, no foreground constraints, no resize."""
    c = get_config("bottle", variant="C")
    dest = np.full((96, 96, 3), int(c.background), np.uint8)
    dest[30:60, 30:60] = 0
    rng = np.random.default_rng(11)
    for _ in range(30):
        a = make_anomaly(dest, real_image("coffee", 96), c, rng)
        assert a.attempted == 1 and len(a.dest_rects) == 1
        (sx0, sy0, sx1, sy1), (x0, y0, x1, y1) = a.source_rects[0], a.dest_rects[0]
        assert (sx1 - sx0, sy1 - sy0) == (x1 - x0, y1 - y0)
        area = (x1 - x0) * (y1 - y0) / 96 ** 2
        assert 0.015 <= area <= 0.16


def test_variant_d_regions_are_ellipse_unions(real_image):
    dest, src = pair(real_image)
    c = get_config("carpet", variant="D")
    rng = np.random.default_rng(12)
    for _ in range(10):
        a = make_anomaly(dest, src, c, rng)
        rect_area = sum((x1 - x0) * (y1 - y0) for x0, y0, x1, y1 in a.dest_rects)
        assert 0 < a.region.sum() < rect_area
        for x0, y0, x1, y1 in a.dest_rects:
            inner = a.region[y0:y1, x0:x1]
            assert not inner.all()  # corners of the rectangle are outside every ellipse


# ---------------------------------------------------------------- Poisson placement

def ellipse_patch(real_image, size, full=False):
    h, w = size
    patch = np.ascontiguousarray(real_image("astronaut", 128)[10:10 + h, 20:20 + w])
    mask = np.zeros((h, w), np.uint8)
    if full:
        mask[:] = 255
    else:
        cv2.ellipse(mask, (w // 2, h // 2), (w // 2 - 1, h // 2 - 3), 20.0, 0, 360, 255, -1)
    mask[0, :] = mask[-1, :] = mask[:, 0] = mask[:, -1] = 0
    return patch, mask


def opencv_full_image(patch, image, mask, corner, mode):
    """``cv2.seamlessClone`` on the whole image, centred so that patch pixel (0, 0) lands on corner."""
    x, y, bw, bh = cv2.boundingRect(mask)
    centre = (corner[0] + x + bw // 2, corner[1] + y + bh // 2)
    flags = cv2.MIXED_CLONE if mode == "mixed" else cv2.NORMAL_CLONE
    return cv2.seamlessClone(patch, image, mask.copy(), centre, flags)


@pytest.mark.parametrize("mode", ["normal", "mixed"])
@pytest.mark.parametrize("size, corner", [((31, 40), (1, 1)), ((25, 17), (50, 60)), ((40, 33), (94, 86)),
                                          ((20, 20), (30, 5))])
def test_seamless_opencv_backend_equals_full_image_opencv(real_image, mode, size, corner):
    """Working on a window gives exactly OpenCV's full-image result, with pixel (0, 0) at corner."""
    image = real_image("coffee", 128)
    patch, mask = ellipse_patch(real_image, size)
    before = mask.copy()
    ours = _seamless(patch, image, mask, corner, mode, "opencv")
    np.testing.assert_array_equal(ours, opencv_full_image(patch, image, mask, corner, mode))
    np.testing.assert_array_equal(mask, before)  # OpenCV writes into its mask: we pass a copy
    h, w = size
    outside = outside_rects(image.shape[:2], [(corner[0], corner[1], corner[0] + w, corner[1] + h)])
    np.testing.assert_array_equal(ours[outside], image[outside])
    assert not np.array_equal(ours, image)


@pytest.mark.parametrize("mode", ["normal", "mixed"])
@pytest.mark.parametrize("size, corner, full", [((25, 17), (50, 60), False), ((25, 17), (50, 60), True),
                                                ((24, 40), (10, 70), False), ((30, 30), (40, 40), True)])
def test_seamless_fast_backend_matches_opencv(real_image, mode, size, corner, full):
    """Rectangles whose sine transform needs no widening: the fast solver is OpenCV's to 1 grey level."""
    image = real_image("coffee", 128)
    patch, mask = ellipse_patch(real_image, size, full)
    fast = _seamless(patch, image, mask, corner, mode, "fast")
    reference = opencv_full_image(patch, image, mask, corner, mode)
    assert np.abs(fast.astype(int) - reference).max() <= 1
    assert not np.array_equal(fast, image)


@pytest.mark.parametrize("backend", BACKENDS)
def test_seamless_skips_tiny_masks(real_image, backend):
    image = real_image("coffee", 64)
    mask = np.zeros((20, 20), np.uint8)
    mask[5:10, 5:14] = 255  # 45 pixels
    assert _seamless(image[:20, :20].copy(), image, mask, (10, 10), "normal", backend) is None


@pytest.mark.parametrize("backend", BACKENDS)
def test_seamless_skips_masks_thinner_than_3_px(real_image, backend):
    """A 4-px-high patch minus its frame: 54 pixels but 2 rows (crashed the fast solver at 64 px)."""
    image = real_image("coffee", 64)
    mask = np.zeros((4, 29), np.uint8)
    mask[1:3, 1:28] = 255
    assert _seamless(image[:4, :29].copy(), image, mask, (10, 10), "normal", backend) is None


@pytest.mark.parametrize("name", ["hazelnut", "carpet"])
def test_backends_place_the_same_patches(real_image, name):
    dest, src = pair(real_image)
    c = get_config(name)
    for seed in range(5):
        fast = make_anomaly(dest, src, c, np.random.default_rng(seed), backend="fast")
        slow = make_anomaly(dest, src, c, np.random.default_rng(seed), backend="opencv")
        assert fast.dest_rects == slow.dest_rects and fast.source_rects == slow.source_rects
        np.testing.assert_array_equal(fast.region, slow.region)
        # the same blend to float rounding (OpenCV's problem), and so the same labels
        difference = np.abs(fast.image.astype(int) - slow.image)
        assert difference.max() <= 2 and (difference > 0).mean() < 0.03, (difference.max(), (difference > 0).mean())
        assert np.abs(fast.label - slow.label).mean() < 1e-2 * max(fast.label.mean(), 1e-3)


# ---------------------------------------------------------------- input validation

@pytest.mark.parametrize("dest, src, config, rng, pattern", [
    (np.zeros((96, 96, 3), np.uint8), np.zeros((96, 80, 3), np.uint8), "carpet", 0, "same height and width"),
    (np.zeros((96, 96, 3), np.float32), np.zeros((96, 96, 3), np.uint8), "carpet", 0, "must be uint8.*float32"),
    (np.zeros((96, 96), np.uint16), np.zeros((96, 96), np.uint16), "carpet", 0, "must be uint8.*uint16"),
    (np.zeros((96, 96, 2), np.uint8), np.zeros((96, 96, 2), np.uint8), "carpet", 0, "2 channels cannot be brought"),
    (np.zeros((96, 96, 3, 1), np.uint8), np.zeros((96, 96, 3, 1), np.uint8), "carpet", 0, "HxW or HxWxC"),
    ([[0]], np.zeros((96, 96), np.uint8), "carpet", 0, "must be a numpy array, got list"),
    (np.zeros((24, 24, 3), np.uint8), np.zeros((24, 24, 3), np.uint8), "carpet", 0, "too small"),
    (np.zeros((96, 96, 3), np.uint8), np.zeros((96, 96, 3), np.uint8), {"n_max": 3}, 0, "config must be"),
    (np.zeros((96, 96, 3), np.uint8), np.zeros((96, 96, 3), np.uint8), "carpet", "seed", "rng must be"),
])
def test_bad_inputs_raise_value_errors(dest, src, config, rng, pattern):
    config = get_config(config) if isinstance(config, str) else config
    rng = np.random.default_rng(0) if rng == 0 else np.random.RandomState(0) if rng == "seed" else rng
    with pytest.raises(ValueError, match=pattern):
        make_anomaly(dest, src, config, rng)
    with pytest.raises(ValueError, match=pattern):
        synthesize(dest, src, config, rng)


def test_unknown_backend_raises(real_image):
    dest, src = pair(real_image)
    with pytest.raises(ValueError, match="backend must be one of .*got 'gpu'"):
        make_anomaly(dest, src, get_config("carpet"), np.random.default_rng(0), backend="gpu")



def test_each_method_does_what_its_row_of_the_method_table_says(real_image):
    """METHOD_STEPS is the table the code reads: each row's placement, resize, factor and label
    show in the samples (moved or not, resized or not, labels 0/1 or 0/a)."""
    from nsa_tutorial.synthesis import METHOD_STEPS

    assert tuple(METHOD_STEPS) == METHODS
    dest, src = real_image("coffee", 96), real_image("astronaut", 96)
    for method, steps in METHOD_STEPS.items():
        config = get_config("carpet", method=method, label="binary", image_size=96)
        moved = resized = 0
        values = set()
        for seed in range(30):
            a = make_anomaly(dest, src, config, np.random.default_rng(seed))
            for (sx0, sy0, sx1, sy1), (dx0, dy0, dx1, dy1) in zip(a.source_rects, a.dest_rects):
                moved += (sx0, sy0) != (dx0, dy0)
                resized += (sx1 - sx0, sy1 - sy0) != (dx1 - dx0, dy1 - dy0)
            values |= set(np.unique(a.label[a.label > 0]).tolist())
        assert (moved > 0) == (steps.placement == "moved"), method
        assert (resized > 0) == steps.resize, method
        assert (len(values) > 1) == steps.factor and values, method  # one a per image, or only 1
        if not steps.factor:
            assert values == {1.0}, method
