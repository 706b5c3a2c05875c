"""Tests for nsa_tutorial.patches: patch sizes, object masks, constraints, placement (eq. 5-12)."""

import time

import cv2
import numpy as np
import pytest
from scipy import stats

from nsa_tutorial import patches as P
from nsa_tutorial.config import get_config

GAMMA = stats.gamma(a=P.GAMMA_SHAPE, scale=P.GAMMA_SCALE)  # eq. 5-6: r ~ Gamma(2, 0.1)


def disk_image(size=128, radius=40, centre=None, seed=0, object_range=(120, 220), background_max=10):
    """A bright textured disk (the object) on a dark, slightly noisy background (b = 0)."""
    rng = np.random.default_rng(seed)
    cy, cx = centre or (size // 2, size // 2)
    yy, xx = np.mgrid[:size, :size]
    inside = (yy - cy) ** 2 + (xx - cx) ** 2 <= radius ** 2
    image = rng.integers(0, background_max + 1, (size, size, 3)).astype(np.uint8)
    image[inside] = rng.integers(*object_range, (int(inside.sum()), 3))
    return image, inside


def binomial_ok(count: int, n: int, p: float, sigmas: float = 4.0) -> bool:
    return abs(count - n * p) <= sigmas * np.sqrt(n * p * (1 - p)) + 1


# ---------------------------------------------------------------- sizes (eq. 5-6)

@pytest.mark.parametrize("lo, hi", [(0.10, 0.80), (0.06, 0.24), (0.06, 0.30), (0.12, 0.40)])
def test_truncated_gamma_distribution(lo, hi):
    """Interior values follow 0.06 + Gamma(2, 0.1) conditioned on (lo, hi); the bounds carry its tails."""
    n = 4000
    values = P.truncated_gamma_fraction(np.random.default_rng(1), lo, hi, size=n)
    assert values.min() >= lo and values.max() <= hi
    p_lo, p_hi = GAMMA.cdf(lo - P.GAMMA_OFFSET), GAMMA.sf(hi - P.GAMMA_OFFSET)
    assert binomial_ok(int(np.sum(values == lo)), n, p_lo)
    assert binomial_ok(int(np.sum(values == hi)), n, p_hi)
    interior = values[(values > lo) & (values < hi)]
    g_lo, g_hi = GAMMA.cdf(lo - P.GAMMA_OFFSET), GAMMA.cdf(hi - P.GAMMA_OFFSET)
    conditional = lambda x: (GAMMA.cdf(x - P.GAMMA_OFFSET) - g_lo) / (g_hi - g_lo)  # noqa: E731
    assert stats.kstest(interior, conditional).pvalue > 1e-3


def test_truncated_gamma_is_not_uniform():
    """Power check for the KS test above: a uniform sampler on the same interval is rejected."""
    values = np.random.default_rng(2).uniform(0.10, 0.80, 4000)
    g_lo, g_hi = GAMMA.cdf(0.04), GAMMA.cdf(0.74)
    assert stats.kstest(values, lambda x: (GAMMA.cdf(x - 0.06) - g_lo) / (g_hi - g_lo)).pvalue < 1e-6


@pytest.mark.parametrize("name, shape", [("capsule", (128, 160)), ("toothbrush", (96, 96)), ("cable", (200, 120))])
def test_sample_patch_size_uses_each_axis_bounds(name, shape):
    """h uses (h_min, h_max) and H, w uses (w_min, w_max) and W; pixel sizes round the fractions."""
    c, (height, width) = get_config(name), shape
    rng, n = np.random.default_rng(3), 3000
    sizes = np.array([P.sample_patch_size(rng, height, width, c) for _ in range(n)])
    h, w = sizes.T
    assert h.min() >= max(round(c.h_min * height), 1) and h.max() <= round(c.h_max * height)
    assert w.min() >= max(round(c.w_min * width), 1) and w.max() <= round(c.w_max * width)
    # P(round(f * side) == k) for the extreme pixel sizes k, from the Gamma CDF of that axis's bounds
    for side, full, lo, hi in ((h, height, c.h_min, c.h_max), (w, width, c.w_min, c.w_max)):
        top, bottom = round(hi * full), max(round(lo * full), 1)
        p_top = GAMMA.sf((top - 0.5) / full - P.GAMMA_OFFSET)
        p_bottom = GAMMA.cdf((bottom + 0.5) / full - P.GAMMA_OFFSET)
        assert binomial_ok(int(np.sum(side == top)), n, p_top), (name, full, top)
        assert binomial_ok(int(np.sum(side == bottom)), n, p_bottom), (name, full, bottom)


def test_sample_cutpaste_size_in_ablation_c_ranges():
    """App. B.1 C: area ratio U(0.02, 0.15), aspect in (0.3, 1) or (1, 3.3), up to pixel rounding."""
    rng, height, width, n = np.random.default_rng(4), 400, 300, 3000
    sizes = np.array([P.sample_cutpaste_size(rng, height, width) for _ in range(n)], float)
    h, w = sizes.T
    area = height * width
    assert np.all((h + 0.5) * (w + 0.5) / area >= 0.02) and np.all((h - 0.5) * (w - 0.5) / area <= 0.15)
    assert np.all((h + 0.5) / (w - 0.5) >= 0.3) and np.all((h - 0.5) / (w + 0.5) <= 3.3)
    ratio = h * w / area
    assert stats.kstest(ratio, stats.uniform(0.02, 0.13).cdf).statistic < 0.04  # rounding blurs a little
    assert binomial_ok(int(np.sum(h < w)), n, 0.5)


def test_sample_cutpaste_size_fits_small_images():
    rng = np.random.default_rng(5)
    for _ in range(500):
        h, w = P.sample_cutpaste_size(rng, 20, 12)
        assert 1 <= h <= 18 and 1 <= w <= 10


# ---------------------------------------------------------------- object masks (eq. 8)

@pytest.mark.parametrize("ksize", [5, 7])
@pytest.mark.parametrize("density", [0.2, 0.5, 0.8])
def test_binary_median_equals_opencv(ksize, density):
    rng = np.random.default_rng(ksize * 10 + int(density * 10))
    for shape in ((37, 53), (64, 64), (9, 200)):
        mask = rng.random(shape) < density
        expected = cv2.medianBlur(mask.astype(np.uint8), ksize).astype(bool)
        np.testing.assert_array_equal(P.binary_median(mask, ksize), expected)


def brute_object_mask(image, b, t):
    grey = image.astype(np.float64).mean(axis=2) if image.ndim == 3 else image.astype(np.float64)
    far = np.abs(grey - b) > t
    return cv2.medianBlur(far.astype(np.uint8), 7).astype(bool)


@pytest.mark.parametrize("name", ["bottle", "hazelnut", "rcxr_male"])
@pytest.mark.parametrize("picture", ["coffee", "chelsea", "camera", "gravel"])
def test_object_mask_equals_eq8_brute_force(real_image, name, picture):
    c = get_config(name)
    image = real_image(picture, (96, 128))
    expected = brute_object_mask(image, c.background, c.t_brightness)
    np.testing.assert_array_equal(P.object_mask(image, c.background, c.t_brightness), expected)
    if image.ndim == 2:
        np.testing.assert_array_equal(P.object_mask(image[:, :, None], c.background, c.t_brightness), expected)


def test_object_mask_of_disk_is_the_disk():
    image, inside = disk_image()
    mask = P.object_mask(image, 0, 20)
    assert np.mean(mask == inside) > 0.995


# ---------------------------------------------------------------- rectangles and constraints

def test_fraction_in_rects_equals_slicing():
    rng = np.random.default_rng(6)
    mask = rng.random((50, 70)) < 0.3
    integral = cv2.integral(mask.astype(np.uint8))
    x0, y0 = rng.integers(0, 69, 300), rng.integers(0, 49, 300)
    x1, y1 = rng.integers(x0 + 1, 71), rng.integers(y0 + 1, 51)
    rects = np.stack([x0, y0, x1, y1], axis=1)
    expected = [mask[b:d, a:c].mean() for a, b, c, d in rects]
    np.testing.assert_allclose(P.fraction_in_rects(integral, rects), expected, rtol=1e-12)


@pytest.mark.parametrize("name", ["bottle", "metal_nut", "rcxr_male"])
def test_source_rects_satisfy_object_constraint(name):
    """Eq. 7: every accepted patch lies in the image, has the sampled size unless the border
    clips it, and contains more than t_object object pixels."""
    c = get_config(name)
    image, _ = disk_image(radius=35, centre=(50, 75))
    obj = brute_object_mask(image, 0, 20)
    integral = cv2.integral(obj.astype(np.uint8))
    rng, accepted = np.random.default_rng(7), 0
    for _ in range(300):
        h, w = P.sample_patch_size(rng, 128, 128, c)
        rect = P.sample_source_rect(rng, (h, w), (128, 128), c, integral)
        if rect is None:
            continue
        accepted += 1
        x0, y0, x1, y1 = rect
        assert 0 <= x0 < x1 <= 128 and 0 <= y0 < y1 <= 128
        assert (x1 - x0 == w or x0 == 0 or x1 == 128) and (y1 - y0 == h or y0 == 0 or y1 == 128)
        assert obj[y0:y1, x0:x1].mean() > c.t_object
    assert accepted > 200


def test_source_centre_is_uniform_and_border_clips():
    """Eq. 7 without constraints: c_x ~ U(W w_min/2, W - W w_min/2); wide patches get clipped."""
    c, width = get_config("carpet"), 128
    rng = np.random.default_rng(8)
    centres = [sum(P.sample_source_rect(rng, (4, 4), (128, width), c, None)[0::2]) / 2 for _ in range(2000)]
    lo, hi = width * c.w_min / 2, width - width * c.w_min / 2
    assert stats.kstest(centres, stats.uniform(lo, hi - lo).cdf).statistic < 0.04
    wide = [P.sample_source_rect(rng, (20, 80), (128, width), c, None) for _ in range(400)]
    assert any(x1 - x0 < 80 for x0, _, x1, _ in wide)
    # the border cuts on both sides alike: a patch is never shifted inside at full size
    cut_left = sum(x0 == 0 and x1 - x0 < 80 for x0, _, x1, _ in wide)
    cut_right = sum(x1 == width and x1 - x0 < 80 for x0, _, x1, _ in wide)
    assert cut_left > 0.6 * cut_right and cut_right > 0.6 * cut_left


def test_unsatisfiable_constraints_return_none_quickly():
    c = get_config("bottle").replace(max_tries=200)
    image = np.full((128, 128, 3), int(c.background), np.uint8)  # all background
    obj = P.object_mask(image, c.background, c.t_brightness)
    assert not obj.any()
    integral = cv2.integral(obj.astype(np.uint8))
    rng, start = np.random.default_rng(9), time.perf_counter()
    for _ in range(50):
        assert P.sample_source_rect(rng, (20, 20), (128, 128), c, integral) is None
        patch_obj = np.ones((20, 20), bool)
        assert P.sample_dest_offset(rng, patch_obj, (128, 128), c, obj, integral) is None
    assert time.perf_counter() - start < 2.0


@pytest.mark.parametrize("shape, patch", [((64, 64), (10, 60)), ((128, 96), (30, 20)), ((50, 80), (47, 5))])
def test_dest_offset_uniform_with_one_pixel_margin(shape, patch):
    """Without constraints the corner is uniform over all positions with a 1 px margin (eq. 10)."""
    c, (height, width), (ph, pw) = get_config("carpet"), shape, patch
    rng, n = np.random.default_rng(10), 4000
    corners = np.array([P.sample_dest_offset(rng, np.ones(patch, bool), shape, c, None, None) for _ in range(n)])
    x0, y0 = corners.T
    assert x0.min() >= 1 and (x0 + pw).max() <= width - 1
    assert y0.min() >= 1 and (y0 + ph).max() <= height - 1
    for values, count in ((x0, width - pw - 1), (y0, height - ph - 1)):
        observed = np.bincount(values - 1, minlength=count)
        assert len(observed) == count
        if count > 1:
            assert stats.chisquare(observed).pvalue > 1e-4


def test_dest_offset_satisfies_eq_11_and_12_and_is_uniform_over_valid_corners():
    c = get_config("rcxr_male")  # b = 0, t_object = t_overlap = 0.7
    image, _ = disk_image(size=96, radius=32)
    dest_obj = brute_object_mask(image, 0, 20)
    integral = cv2.integral(dest_obj.astype(np.uint8))
    src_obj = np.zeros((30, 24), bool)
    src_obj[4:, :18] = True  # object in part of the patch only
    ph, pw = src_obj.shape

    def valid(x0, y0):
        window = dest_obj[y0:y0 + ph, x0:x0 + pw]
        return window.mean() > c.t_object and (window & src_obj).sum() / src_obj.sum() > c.t_overlap

    all_corners = [(x, y) for y in range(1, 96 - ph) for x in range(1, 96 - pw)]
    good = [xy for xy in all_corners if valid(*xy)]
    assert 0 < len(good) < 0.5 * len(all_corners)  # the constraints bind
    rng, n = np.random.default_rng(11), 3000
    corners = [P.sample_dest_offset(rng, src_obj, (96, 96), c, dest_obj, integral) for _ in range(n)]
    assert all(xy is not None and valid(*xy) for xy in corners)
    index = {xy: i for i, xy in enumerate(good)}
    observed = np.bincount([index[tuple(xy)] for xy in corners], minlength=len(good))
    assert stats.chisquare(observed).pvalue > 1e-4


# ---------------------------------------------------------------- resize (eq. 9)

def brute_resize_scale(r, h, w, height, width, c):
    f = 0.5 if c.size_clip == "reference" else 1.0  # the authors' code: half-width bounds
    r = min(max(r, c.s_min), c.s_max)
    s = max(f * c.w_min * width / w, f * c.h_min * height / h,
            min(r, f * c.w_max * width / w, f * c.h_max * height / h))
    return min(s, (width - 2) / w, (height - 2) / h)


@pytest.mark.parametrize("size_clip", ["paper", "reference"])
@pytest.mark.parametrize("name", ["bottle", "capsule", "screw", "carpet", "rcxr_female"])
def test_resize_scale_equals_eq9(name, size_clip):
    c, (height, width) = get_config(name, size_clip=size_clip), (112, 144)
    rng = np.random.default_rng(12)
    for seed in range(400):
        h, w = int(rng.integers(2, height + 1)), int(rng.integers(2, width + 1))
        s = P.resize_scale(np.random.default_rng(seed), (h, w), (height, width), c)
        r = np.random.default_rng(seed).normal(1.0, 0.5)  # N(1, 1/4): variance 1/4
        assert s == pytest.approx(brute_resize_scale(r, h, w, height, width, c), rel=1e-12)
        assert s * w <= width - 2 + 1e-9 and s * h <= height - 2 + 1e-9


@pytest.mark.parametrize("name", ["bottle", "screw", "pill", "carpet"])
def test_reference_rule_bounds_brute_force(name):
    """Every patch size of a 64 x 80 image, with scale draws at and between the clip points:
    the authors' rule gives even sides (whole half-widths, 2 floor(s w / 2), never rounded
    up) within the half-width bounds [w_min W / 2, w_max W / 2], keeps the aspect ratio up
    to the flooring, and leaves s = r where r already meets the bounds."""
    c, (height, width) = get_config(name, size_clip="reference"), (64, 80)
    paper = c.replace(size_clip="paper")
    draws = (c.s_min, 0.85, 1.0, 1.2, c.s_max)
    for h in range(2, height + 1):
        for w in range(2, width + 1):
            for r in draws:
                s = brute_resize_scale(r, h, w, height, width, c)
                nw, nh = P.resized_side(s, w, c), P.resized_side(s, h, c)
                exact_w, exact_h = s * w, s * h
                assert nw == max(2 * int(np.floor(exact_w / 2)), 3) and nh == max(2 * int(np.floor(exact_h / 2)), 3)
                assert nw <= max(exact_w, 3) and nh <= max(exact_h, 3)  # floored, never rounded up
                lo = max(c.w_min * width / w, c.h_min * height / h) / 2
                hi = min(c.w_max * width / w, c.h_max * height / h) / 2
                margin = min((width - 2) / w, (height - 2) / h)
                if lo <= hi and hi <= margin:  # the bounds can be met together
                    assert c.w_min * width / 2 - 1e-9 <= exact_w <= c.w_max * width / 2 + 1e-9
                    assert c.h_min * height / 2 - 1e-9 <= exact_h <= c.h_max * height / 2 + 1e-9
                    assert nw <= c.w_max * width / 2 and nh <= c.h_max * height / 2
                    assert nw >= min(c.w_min * width / 2 - 2, 3) and nh >= min(c.h_min * height / 2 - 2, 3)
                    if lo <= r <= hi:
                        assert s == r
                # the paper's rule only ever allows more (or the same)
                assert brute_resize_scale(r, h, w, height, width, paper) >= s - 1e-12


def test_reference_flooring_costs_a_few_percent_of_the_area():
    """Whole half-widths: about 3 % less area than rounding, for the sizes eq. 5-6 draw at 256 px."""
    c, rng = get_config("bottle", size_clip="reference"), np.random.default_rng(3)
    ratios = []
    for _ in range(4000):
        h, w = P.sample_patch_size(rng, 256, 256, c)
        s = P.resize_scale(rng, (h, w), (256, 256), c)
        floored = P.resized_side(s, h, c) * P.resized_side(s, w, c)
        ratios.append((floored, round(s * h) * round(s * w)))
    floored, rounded = np.array(ratios).sum(0)
    assert 0.93 < floored / rounded < 0.995


@pytest.mark.parametrize("name", ["bottle", "carpet"])
def test_resize_scale_distribution(name):
    """For a mid-sized patch the bounds are inactive: s = clip(N(1, 0.5^2), s_min, s_max)."""
    c, n = get_config(name), 3000
    rng = np.random.default_rng(13)
    s = np.array([P.resize_scale(rng, (40, 40), (200, 200), c) for _ in range(n)])
    normal = stats.norm(1.0, 0.5)
    assert binomial_ok(int(np.sum(s == c.s_min)), n, normal.cdf(c.s_min))
    assert binomial_ok(int(np.sum(s == c.s_max)), n, normal.sf(c.s_max))
    inner = s[(s > c.s_min) & (s < c.s_max)]
    lo, hi = normal.cdf(c.s_min), normal.cdf(c.s_max)
    assert stats.kstest(inner, lambda x: (normal.cdf(x) - lo) / (hi - lo)).pvalue > 1e-3


@pytest.mark.parametrize("size_clip", ["paper", "reference"])
def test_resized_patch_stays_within_size_bounds(size_clip):
    """Eq. 9 keeps w' = s w in [w_min W, w_max W] (same for h) when the patch came from eq. 5-6;
    the authors' rule keeps it in half those bounds."""
    rng, f = np.random.default_rng(14), 0.5 if size_clip == "reference" else 1.0
    for name in ("bottle", "capsule", "zipper", "carpet"):
        c = get_config(name, size_clip=size_clip)
        for _ in range(300):
            h, w = P.sample_patch_size(rng, 128, 128, c)
            s = P.resize_scale(rng, (h, w), (128, 128), c)
            assert f * c.w_min * 128 - 1 <= s * w <= f * c.w_max * 128 + 1 or s * w >= 126 - 1e-9
            assert f * c.h_min * 128 - 1 <= s * h <= f * c.h_max * 128 + 1 or s * h >= 126 - 1e-9


def test_ellipse_mask_is_a_non_empty_union_inside_the_patch():
    rng = np.random.default_rng(15)
    for _ in range(100):
        h, w = int(rng.integers(6, 60)), int(rng.integers(6, 60))
        mask = P.ellipse_mask(rng, h, w)
        assert mask.shape == (h, w) and mask.dtype == bool and mask.any()
