"""Tests for nsa_tutorial.labels: the difference-based labels of eq. 13-14 and their median filters."""

import cv2
import numpy as np
import pytest
from skimage.filters.rank import median as rank_median
from skimage.morphology import disk

from nsa_tutorial import labels as L
from nsa_tutorial.config import get_config

KINDS = ("binary", "continuous", "logistic")


def brute_label(image, dest, region, kind, y0=0.0, k=1.0, tol=1.0):
    """Eq. 13-14 on the whole image, written out: d, m = median5(d > tol), c = disk-median(m d)."""
    x, x_d = image.astype(np.float64), dest.astype(np.float64)
    if x.ndim == 2:
        x, x_d = x[:, :, None], x_d[:, :, None]
    channels = x.shape[2]
    d_sum = np.abs(x - x_d).sum(axis=2) * region  # C d, exact integers
    m = cv2.medianBlur((d_sum / channels > tol).astype(np.uint8), 5).astype(np.float64)
    if kind == "binary":
        return m.astype(np.float32)
    # the median commutes with the positive scaling by 1/C; rank filters need integers
    c = (rank_median((m * d_sum).astype(np.uint16), disk(5)) / np.float32(channels)).astype(np.float32)
    if kind == "continuous":
        return c
    return (m / (1 + np.exp(-k * (c.astype(np.float64) - y0)))).astype(np.float32)


def assert_same_label(label, expected, kind):
    """Binary and continuous labels are exact (integer medians); the logistic is evaluated in
    float32 by the package and in float64 here: equal up to float32 rounding, same support."""
    if kind == "logistic":
        np.testing.assert_allclose(label, expected, rtol=1e-6, atol=1e-7)
        np.testing.assert_array_equal(label > 0, expected > 0)
    else:
        np.testing.assert_array_equal(label, expected)


def blended_pair(real_image, size=(112, 128), box=(20, 70, 30, 100), grey=False, seed=0):
    """A real destination and a seamlessly cloned patch of another real image inside ``box``."""
    names = ("camera", "gravel") if grey else ("coffee", "astronaut")
    dest, src = real_image(names[0], size), real_image(names[1], size)
    y0, y1, x0, x1 = box
    mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
    rng = np.random.default_rng(seed)
    cv2.ellipse(mask, ((x1 - x0) // 2, (y1 - y0) // 2), ((x1 - x0) // 2 - 2, (y1 - y0) // 2 - 2),
                float(rng.uniform(0, 180)), 0, 360, 255, -1)
    src3 = np.dstack([src] * 3) if grey else src
    dest3 = np.dstack([dest] * 3) if grey else dest
    centre = ((x0 + x1) // 2, (y0 + y1) // 2)
    out = cv2.seamlessClone(np.ascontiguousarray(src3[y0:y1, x0:x1]), dest3, mask.copy(), centre, cv2.NORMAL_CLONE)
    image = out[:, :, 0].copy() if grey else out
    region = np.zeros(dest.shape[:2], bool)
    region[y0:y1, x0:x1] = True
    return image, dest, region


# ---------------------------------------------------------------- median over a disk

def sparse_image(rng, shape, n_blobs, high=766):
    values = np.zeros(shape, np.uint16)
    for _ in range(n_blobs):
        y, x = rng.integers(0, shape[0]), rng.integers(0, shape[1])
        h, w = rng.integers(1, 25, 2)
        values[y:y + h, x:x + w] = rng.integers(0, high, (min(h, shape[0] - y), min(w, shape[1] - x)))
    return values


@pytest.mark.parametrize("seed", range(6))
def test_median_disk_equals_skimage_on_whole_image(seed):
    rng = np.random.default_rng(seed)
    shape = (int(rng.integers(30, 120)), int(rng.integers(30, 120)))
    values = sparse_image(rng, shape, n_blobs=int(rng.integers(1, 5)))
    values[0, :3] = 7  # non-zero pixels touching the border
    values[-2:, -1] = 300
    np.testing.assert_array_equal(L.median_disk(values), rank_median(values, disk(L.DISK_RADIUS)))


@pytest.mark.filterwarnings("ignore:Bad rank filter performance")
def test_median_disk_dense_large_values_and_empty():
    rng = np.random.default_rng(10)
    dense = rng.integers(0, 4096, (40, 50)).astype(np.uint16)
    np.testing.assert_array_equal(L.median_disk(dense), rank_median(dense, disk(5)))
    single = np.zeros((30, 30), np.uint16)
    single[15, 15] = 9
    np.testing.assert_array_equal(L.median_disk(single), 0)
    assert not L.median_disk(np.zeros((20, 20), np.uint16)).any()


@pytest.mark.parametrize("within", [(0, 200, 0, 200), (5, 30, 12, 40), (0, 8, 0, 9), (40, 50, 60, 70), (30, 31, 3, 4)])
def test_median_disk_within_a_box_is_the_whole_result_cut_to_the_box(within):
    rng = np.random.default_rng(12)
    values = sparse_image(rng, (52, 61), n_blobs=3)
    values[0, 0], values[-1, 20:30] = 5, 200  # non-zero pixels on the border
    whole = L.median_disk(values)
    expected = np.zeros_like(whole)
    y0, y1, x0, x1 = within
    expected[y0:y1, x0:x1] = whole[y0:y1, x0:x1]
    np.testing.assert_array_equal(L.median_disk(values, within=within), expected)


def test_bounding_box_matches_nonzero():
    rng = np.random.default_rng(13)
    for _ in range(20):
        mask = np.zeros((int(rng.integers(1, 40)), int(rng.integers(1, 40))), bool)
        if rng.random() < 0.8:
            mask[rng.integers(0, mask.shape[0], 3), rng.integers(0, mask.shape[1], 3)] = True
        ys, xs = np.nonzero(mask)
        expected = (ys.min(), ys.max() + 1, xs.min(), xs.max() + 1) if len(ys) else None
        assert L.bounding_box(mask) == expected
        assert L.bounding_box(mask.astype(np.uint16) * 300) == expected


def test_median_disk_rejects_other_types():
    with pytest.raises(ValueError, match="uint16"):
        L.median_disk(np.zeros((5, 5), np.int64))


def test_median_disk_equals_numpy_median_at_interior_pixels():
    """Brute force: np.median over the 81 pixels of the radius-5 disk (an odd count, no ties)."""
    rng = np.random.default_rng(11)
    values = sparse_image(rng, (34, 30), n_blobs=4, high=50)
    values[8:20, 6:22] = rng.integers(1, 50, (12, 16))
    result = L.median_disk(values)
    offsets = np.argwhere(disk(5)) - 5
    assert len(offsets) == 81
    for y in range(5, 34 - 5):
        for x in range(5, 30 - 5):
            neighbourhood = values[y + offsets[:, 0], x + offsets[:, 1]]
            assert result[y, x] == np.median(neighbourhood), (y, x)


# ---------------------------------------------------------------- the labels

@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("box", [(20, 70, 30, 100), (0, 40, 0, 50), (80, 112, 90, 128), (2, 110, 1, 127)])
def test_make_label_equals_whole_image_brute_force(real_image, kind, box):
    """make_label works on a crop around the region; the result equals eq. 13-14 on the whole image."""
    c = get_config("hazelnut")
    image, dest, region = blended_pair(real_image, box=box)
    expected = brute_label(image, dest, region, kind, c.y0, c.k)
    label = L.make_label(image, dest, region, kind, c.y0, c.k)
    assert label.dtype == np.float32 and label.shape == region.shape
    assert_same_label(label, expected, kind)
    assert expected.any()


@pytest.mark.parametrize("kind", KINDS)
def test_make_label_grey_and_irregular_region(real_image, kind):
    c = get_config("carpet")
    image, dest, region = blended_pair(real_image, grey=True, box=(10, 90, 20, 110), seed=3)
    rng = np.random.default_rng(4)
    region &= cv2.dilate((rng.random(region.shape) < 0.05).astype(np.uint8), np.ones((9, 9))).astype(bool)
    expected = brute_label(image, dest, region, kind, c.y0, c.k)
    label = L.make_label(image, dest, region, kind, c.y0, c.k)
    # inside the region (outside it, see test_labels_zero_in_holes_of_the_region)
    assert_same_label(label[region], expected[region], kind)
    assert label[region].any()
    # a grey image gives the same label as three equal channels
    image3, dest3 = np.dstack([image] * 3), np.dstack([dest] * 3)
    np.testing.assert_array_equal(L.make_label(image3, dest3, region, kind, c.y0, c.k), label)


def shifted(dest, box, deltas):
    """``dest`` with per-channel constant changes inside ``box`` (no clipping by construction)."""
    image = dest.astype(np.int16)
    y0, y1, x0, x1 = box
    image[y0:y1, x0:x1] += np.asarray(deltas, np.int16)
    assert image.min() >= 0 and image.max() <= 255
    return image.astype(np.uint8)


def test_binary_label_is_one_where_the_change_exceeds_tol(real_image):
    dest = np.clip(real_image("chelsea", 96), 60, 190)
    region = np.zeros((96, 96), bool)
    region[10:80, 15:85] = True
    box = (20, 60, 25, 75)
    rng = np.random.default_rng(5)
    for _ in range(5):
        deltas = rng.integers(2, 50, 3) * rng.choice([-1, 1], 3)
        label = L.make_label(shifted(dest, box, deltas), dest, region, "binary")
        np.testing.assert_array_equal(label[22:58, 27:73], 1)
        outside = np.ones((96, 96), bool)
        outside[box[0] - 2:box[1] + 2, box[2] - 2:box[3] + 2] = False
        assert not label[outside].any()
    # the threshold is strict: a mean change of exactly tol is not a change
    assert not L.make_label(shifted(dest, box, (1, -1, 1)), dest, region, "binary").any()
    assert L.make_label(shifted(dest, box, (1, 2, 2)), dest, region, "binary")[30, 40] == 1


def test_continuous_label_equals_mean_absolute_difference(real_image):
    dest = np.clip(real_image("coffee", 96), 40, 215)
    region = np.ones((96, 96), bool)
    box = (20, 70, 15, 80)
    for deltas in ((10, -20, 30), (-3, -3, 6), (40, 0, 0)):
        label = L.make_label(shifted(dest, box, deltas), dest, region, "continuous")
        interior = label[box[0] + 5:box[1] - 5, box[2] + 5:box[3] - 5]
        np.testing.assert_allclose(interior, np.mean(np.abs(deltas)), rtol=1e-6)


@pytest.mark.parametrize("name", ["bottle", "capsule", "screw", "wood"])
def test_logistic_label_is_one_half_at_y0(real_image, name):
    """Eq. 14 at c = y0 (Table 4, 0-255 scale): 1 / (1 + exp(0)) = 1/2."""
    c = get_config(name)
    dest = np.clip(real_image("astronaut", 96), 30, 225)
    region = np.ones((96, 96), bool)
    box = (20, 70, 15, 80)
    label = L.make_label(shifted(dest, box, (c.y0,) * 3), dest, region, "logistic", c.y0, c.k)
    np.testing.assert_allclose(label[box[0] + 5:box[1] - 5, box[2] + 5:box[3] - 5], 0.5, rtol=1e-6)


def test_logistic_label_bounded_and_monotone_in_contrast(real_image):
    c = get_config("bottle")
    dest, src = real_image("chelsea", 96), real_image("brick", 96)
    src = np.dstack([src] * 3)
    region = np.zeros((96, 96), bool)
    region[20:76, 10:70] = True
    masses = []
    for alpha in np.linspace(0, 1, 11):
        image = np.round((1 - alpha) * dest + alpha * src).astype(np.uint8) * region[:, :, None] \
            + dest * ~region[:, :, None]
        label = L.make_label(image, dest, region, "logistic", c.y0, c.k)
        assert label.min() >= 0 and label.max() <= 1
        masses.append(float(label.sum()))
    assert masses[0] == 0
    assert np.all(np.diff(masses) > 0) and masses[-1] > 4 * masses[1]


@pytest.mark.parametrize("kind", KINDS)
def test_labels_zero_outside_region_and_where_unchanged(real_image, kind):
    c = get_config("hazelnut")
    dest, other = real_image("coffee", 96), real_image("astronaut", 96)
    image = other.copy()  # every pixel changed, but only the region may be labelled
    region = np.zeros((96, 96), bool)
    region[30:60, 20:50] = True
    label = L.make_label(image, dest, region, kind, c.y0, c.k)
    assert label[region].any() and not label[~region].any()
    # unchanged pixels far from any change carry no label
    partial = dest.copy()
    partial[30:45, 20:50] = other[30:45, 20:50]
    label = L.make_label(partial, dest, region, kind, c.y0, c.k)
    assert not label[45 + L.DISK_RADIUS:, :].any()


@pytest.mark.parametrize("kind", KINDS)
def test_labels_zero_in_holes_of_the_region(real_image, kind):
    """Pixels outside the patch masks (e.g. background in both images, which Poisson editing
    still changes) are never labelled, even where the median filters would fill them in."""
    c = get_config("hazelnut")
    dest, other = real_image("coffee", 96), real_image("astronaut", 96)
    region = np.zeros((96, 96), bool)
    region[20:70, 20:70] = True
    region[40:44, 40:44] = False  # a hole inside the patch mask
    label = L.make_label(other, dest, region, kind, c.y0, c.k)
    assert not label[~region].any()


def test_make_label_validates_inputs():
    a = np.zeros((20, 20, 3), np.uint8)
    region = np.ones((20, 20), bool)
    with pytest.raises(ValueError, match="must align"):
        L.make_label(a, np.zeros((20, 21, 3), np.uint8), region, "binary")
    with pytest.raises(ValueError, match="must align"):
        L.make_label(a, a, np.ones((21, 20), bool), "binary")
    with pytest.raises(ValueError, match="label kind must be .*got 'soft'"):
        L.make_label(a, a, region, "soft")
    assert not L.make_label(a + 50, a, np.zeros((20, 20), bool), "logistic").any()
