"""Tests for nsa_tutorial.poisson: the discrete Poisson equation (eq. 1-4) and OpenCV."""

import cv2
import numpy as np
import pytest
from scipy.sparse.linalg import splu
from skimage import data

from nsa_tutorial.poisson import (destination_rect, poisson_system, seamless_clone,
                                  solve_poisson)

NEIGHBOURS = ((-1, 0), (1, 0), (0, -1), (0, 1))


def random_region(rng, shape, box):
    """An irregular mask inside ``box`` (y0, y1, x0, x1), away from the image border."""
    mask = np.zeros(shape, bool)
    y0, y1, x0, x1 = box
    mask[y0:y1, x0:x1] = rng.random((y1 - y0, x1 - x0)) < 0.7
    return mask


def smooth(image, sigma, size=224):
    small = cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)
    return cv2.GaussianBlur(small, (0, 0), sigma)


@pytest.mark.parametrize("mode", ["normal", "mixed"])
def test_solution_satisfies_discrete_poisson_equation(mode):
    """Brute force, pixel by pixel: 4 f_p - Σ_{N(p)∩Ω} f_q = Σ_{N(p)∩∂Ω} f*_q + Σ_{N(p)} v_pq."""
    rng = np.random.default_rng(0)
    dst, src = rng.uniform(0, 255, (2, 16, 18, 3))
    mask = random_region(rng, (16, 18), (2, 13, 3, 16))
    f = solve_poisson(dst, src, mask, mode)
    for y, x in zip(*np.nonzero(mask)):
        lhs, rhs = 4 * f[y, x], np.zeros(3)
        for dy, dx in NEIGHBOURS:
            q = (y + dy, x + dx)
            v_src, v_dst = src[y, x] - src[q], dst[y, x] - dst[q]
            v = v_src if mode == "normal" else np.where(abs(v_dst) > abs(v_src), v_dst, v_src)
            lhs = lhs - f[q] if mask[q] else lhs
            rhs = rhs + v + (0 if mask[q] else dst[q])
        np.testing.assert_allclose(lhs, rhs, rtol=1e-10, atol=1e-8 * np.abs(rhs).max())
    np.testing.assert_array_equal(f[~mask], dst[~mask])


def test_source_equal_to_destination_plus_constant_reproduces_destination():
    """Eq. 3 pastes gradients only: a constant offset of the source disappears."""
    rng = np.random.default_rng(1)
    dst = rng.integers(0, 200, (40, 50, 3), dtype=np.uint8)
    mask = random_region(rng, (40, 50), (5, 35, 5, 45)).astype(np.uint8)
    out = seamless_clone(dst + np.uint8(37), dst, mask, (25, 20))
    np.testing.assert_array_equal(out, dst)


def test_ramp_source_gradients_replace_destination_content():
    """Inside Ω the destination's own content is discarded and the source's gradients appear.

    A linear ramp is harmonic, so it can only survive if the destination around Ω agrees
    with it (up to a constant): here ``dst = ramp + 40`` outside Ω and noise inside.
    """
    rng = np.random.default_rng(2)
    yy, xx = np.mgrid[:30, :40].astype(float)
    src = 1.5 * xx - 0.75 * yy
    mask = random_region(rng, src.shape, (4, 26, 4, 36))
    dst = np.where(mask, rng.uniform(0, 255, src.shape), src + 40)
    f = solve_poisson(dst, src, mask)
    np.testing.assert_allclose(f[mask], src[mask] + 40, atol=1e-9)
    inside_x = mask[:, 1:] & mask[:, :-1]
    np.testing.assert_allclose(np.diff(f, axis=1)[inside_x], 1.5, atol=1e-9)


def test_mixed_keeps_destination_where_its_gradients_dominate():
    """Eq. 4: a checkerboard destination (steps of 80) beats a faint source everywhere."""
    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[:30, :30]
    dst = np.dstack([90.0 + 80 * ((yy + xx) % 2)] * 3)
    src = rng.uniform(0, 30, dst.shape)
    mask = random_region(rng, (30, 30), (3, 27, 3, 27))
    np.testing.assert_allclose(solve_poisson(dst, src, mask, "mixed"), dst, atol=1e-9)
    assert np.abs(solve_poisson(dst, src, mask, "normal") - dst).max() > 10


def test_mixed_equals_normal_where_source_gradients_dominate():
    """Eq. 4 picks the source's differences when they are the larger ones everywhere."""
    rng = np.random.default_rng(4)
    yy, xx = np.mgrid[:25, :25]
    src = 90.0 + 80 * ((yy + xx) % 2)
    dst = rng.uniform(100, 110, src.shape)
    mask = random_region(rng, src.shape, (2, 23, 2, 23))
    np.testing.assert_allclose(solve_poisson(dst, src, mask, "mixed"),
                               solve_poisson(dst, src, mask, "normal"), atol=1e-9)


def opencv_emulation(src, dst, mask, center, mode):
    """OpenCV's discrete problem, written out to pin down its quirks.

    On the destination rectangle: erode the mask 3 px (zero outside it), guidance =
    source forward differences inside the eroded mask, destination ones elsewhere
    (MIXED: source where ``|g_x - g_y| > |f*_x - f*_y|``), Dirichlet on the rectangle's
    1-px border, result truncated.  Forward/backward differences reflect at the end
    as ``filter2D`` does.
    """
    ys, xs = np.nonzero(mask)
    x, y, w, h = destination_rect(mask, center)
    window = np.s_[ys.min():ys.max() + 1, xs.min():xs.max() + 1]
    m = mask[window] > 0
    g = np.where(m[..., None], src[window], 0).astype(float)
    f_star = dst[y:y + h, x:x + w].astype(float)
    eroded = cv2.erode(np.pad(m, 3).astype(np.uint8), np.ones((3, 3), np.uint8),
                       iterations=3)[3:-3, 3:-3, None] > 0

    def forward(a, axis):
        return np.take(a, list(range(1, a.shape[axis])) + [-2], axis) - a

    def backward(a, axis):
        return a - np.take(a, [1] + list(range(a.shape[axis] - 1)), axis)

    gs, gd = [forward(g, 1), forward(g, 0)], [forward(f_star, 1), forward(f_star, 0)]
    use_src = eroded if mode == "normal" else eroded & (abs(gs[0] - gs[1]) > abs(gd[0] - gd[1]))
    vx, vy = (np.where(use_src, a, b) for a, b in zip(gs, gd))
    omega = np.zeros((h, w), bool)
    omega[1:-1, 1:-1] = True
    known = np.where(omega[..., None], 0, f_star)
    boundary = sum(np.roll(known, s, ax) for s in (1, -1) for ax in (0, 1))
    rhs = boundary - backward(vx, 1) - backward(vy, 0)
    f = f_star.copy()
    f[omega] = splu(poisson_system(omega)).solve(np.ascontiguousarray(rhs[omega]))
    out = dst.copy()
    out[y:y + h, x:x + w] = np.clip(f, 0, 255).astype(np.uint8)
    return out


def test_opencv_solves_the_documented_problem():
    """cv2.seamlessClone equals the emulation above to 1 grey level (float32 vs float64)."""
    src, dst = smooth(data.astronaut(), 2), smooth(data.coffee(), 2)
    yy, xx = np.mgrid[:224, :224]
    ellipse = np.where(((yy - 110) / 30) ** 2 + ((xx - 100) / 25) ** 2 < 1, 255, 0).astype(np.uint8)
    rect = np.zeros((224, 224), np.uint8)
    rect[80:140, 70:131] = 255
    for mask in (rect, ellipse):
        for mode in ("normal", "mixed"):
            ours = opencv_emulation(src, dst, mask, (112, 100), mode).astype(int)
            theirs = seamless_clone(src, dst, mask, (112, 100), mode, backend="opencv")
            assert np.abs(ours - theirs).max() <= 1


@pytest.mark.parametrize("mode, tolerance", [("normal", 5.0), ("mixed", 7.0)])
def test_agrees_with_opencv_inside_on_smooth_images(mode, tolerance):
    """Our eq. 2 on OpenCV's eroded mask vs cv2.seamlessClone, 8 px inside the mask.

    Measured mean absolute differences in grey levels: here (sigma 4, ellipse) normal
    3.8 and 3.5, mixed 4.0 and 5.5; over blur sigma 3-8, rectangle and ellipse masks and
    astronaut/coffee/chelsea pairs, normal 1.8-4.8 and mixed 1.8-8.9.  On the
    un-eroded mask they differ by 5-28 levels: OpenCV's source content starts
    3 px inside the mask behind a soft seam.  Mixed differs more because OpenCV
    compares ``|g_x - g_y|`` instead of each difference (see the module docstring).
    """
    kernel = np.ones((3, 3), np.uint8)
    yy, xx = np.mgrid[:224, :224]
    mask = np.where(((yy - 110) / 30) ** 2 + ((xx - 100) / 25) ** 2 < 1, 255, 0).astype(np.uint8)
    interior = cv2.erode(mask, kernel, iterations=8) > 0
    x, y, w, h = destination_rect(mask, (112, 100))
    ys, xs = np.nonzero(mask)
    crop = np.s_[ys.min():ys.max() + 1, xs.min():xs.max() + 1]
    for source, destination in (("astronaut", "coffee"), ("chelsea", "astronaut")):
        src, dst = smooth(getattr(data, source)(), 4), smooth(getattr(data, destination)(), 4)
        ours = seamless_clone(src, dst, cv2.erode(mask, kernel, iterations=3), (112, 100), mode)
        theirs = seamless_clone(src, dst, mask, (112, 100), mode, backend="opencv")
        diff = np.abs(ours.astype(int) - theirs)[y:y + h, x:x + w][interior[crop]]
        assert diff.mean() < tolerance, (source, destination, diff.mean())


@pytest.mark.parametrize("size", [(21, 30), (30, 21), (20, 20), (23, 23)])
@pytest.mark.parametrize("center", [(40, 31), (41, 30)])
def test_placement_matches_opencv(size, center):
    """Odd and even rectangles: a one-pixel spot lands on the same pixel in both backends."""
    h, w = size
    src = np.full((50, 60, 3), 60, np.uint8)
    mask = np.zeros((50, 60), np.uint8)
    mask[7:7 + h, 12:12 + w] = 255
    src[7 + h // 2 - 1, 12 + w // 2 + 1] = 200  # off-centre, so a mirrored shift shows
    dst = np.full((64, 80, 3), 100, np.uint8)
    x, y, rw, rh = destination_rect(mask, center)
    assert (rw, rh) == (w, h) and (x, y) == (center[0] - w // 2, center[1] - h // 2)
    spots = [np.unravel_index(np.argmax(seamless_clone(src, dst, mask, center, backend=b)[..., 0]),
                              (64, 80)) for b in ("numpy", "opencv")]
    assert spots[0] == spots[1] == (y + h // 2 - 1, x + w // 2 + 1)


def test_grayscale_is_one_channel_of_colour():
    src, dst = smooth(data.camera(), 3, 96), smooth(data.moon(), 3, 96)
    mask = np.zeros((96, 96), bool)
    mask[20:60, 30:70] = True
    for backend in ("numpy", "opencv"):
        grey = seamless_clone(src, dst, mask, (48, 48), backend=backend)
        colour = seamless_clone(np.dstack([src] * 3), np.dstack([dst] * 3), mask, (48, 48),
                                backend=backend)
        assert grey.shape == dst.shape and grey.dtype == np.uint8
        np.testing.assert_array_equal(grey, colour[..., 0])


def test_opencv_backend_leaves_the_mask_alone():
    mask = np.full((30, 30), 255, np.uint8)
    before = mask.copy()
    seamless_clone(np.zeros((30, 30, 3), np.uint8), np.zeros((40, 40, 3), np.uint8), mask,
                   (20, 20), backend="opencv")
    np.testing.assert_array_equal(mask, before)


def _bad(**changes):
    args = dict(src=np.zeros((20, 20, 3), np.uint8), dst=np.zeros((40, 40, 3), np.uint8),
                mask=np.pad(np.ones((10, 10), bool), 5), center=(20, 20))
    args.update(changes)
    return args


@pytest.mark.parametrize("args, message", [
    (_bad(src=np.zeros((20, 20, 3))), "src must be a uint8"),
    (_bad(dst=np.zeros((40, 40, 3), np.float32)), "dst must be a uint8"),
    (_bad(src=np.zeros((20, 20, 4), np.uint8)), "HxW or HxWx3"),
    (_bad(dst=np.zeros((40, 40), np.uint8)), "both be grayscale or both colour"),
    (_bad(mask=np.ones((20, 21), bool)), "mask must have src's height and width"),
    (_bad(mask=np.ones((20, 20), np.float32)), "mask must be a bool or uint8"),
    (_bad(mask=np.zeros((20, 20), bool)), "mask is empty"),
    (_bad(mask=~np.pad(np.ones((18, 18), bool), 1)), "mask is empty"),  # only its frame
    (_bad(center=(4, 20)), "leaves the 40x40 destination"),
    (_bad(center=(20, 36)), "leaves the 40x40 destination"),
    (_bad(center=(20.5, 20)), "center must be two integers"),
    (_bad(mode="poisson"), "mode must be one of"),
    (_bad(backend="torch"), "backend must be one of"),
])
def test_bad_input_raises(args, message):
    with pytest.raises(ValueError, match=message):
        seamless_clone(**args)


def _random_clone_case(rng, size=160):
    """A real patch, a real destination, a rectangle or partial mask, maybe fractional (PII)."""
    src = cv2.resize(data.astronaut(), (size, size))
    dst = cv2.resize(data.coffee(), (size, size))
    h, w = rng.integers(8, size // 2, 2)
    sy, sx = rng.integers(0, size - h), rng.integers(0, size - w)
    value = 255 if rng.random() < 0.7 else int(np.ceil(rng.uniform(0.05, 0.95) * 255))
    mask = np.full((h, w), value, np.uint8)
    mask[[0, -1], :] = mask[:, [0, -1]] = 0
    if rng.random() < 0.5:
        mask[: h // 2, : w // 3] = 0
    corner = (int(rng.integers(1, size - w - 1)), int(rng.integers(1, size - h - 1)))
    return src[sy:sy + h, sx:sx + w].copy(), dst, mask, corner


def _opencv_at(patch, dst, mask, corner, mode):
    x, y, w, h = cv2.boundingRect(mask)
    centre = (corner[0] + x + w // 2, corner[1] + y + h // 2)
    return cv2.seamlessClone(patch, dst, mask.copy(), centre, _FLAGS[mode])


_FLAGS = {"normal": cv2.NORMAL_CLONE, "mixed": cv2.MIXED_CLONE}


@pytest.mark.parametrize("mode", ["normal", "mixed"])
def test_clone_rect_is_opencvs_problem_to_one_grey_level(mode):
    """The sine-transform solver reproduces cv2.seamlessClone, fractional (PII) masks included."""
    from nsa_tutorial.poisson import clone_rect

    rng = np.random.default_rng(5)
    for _ in range(25):
        patch, dst, mask, corner = _random_clone_case(rng)
        x, y, w, h = cv2.boundingRect(mask)
        box = np.s_[corner[1] + y:corner[1] + y + h, corner[0] + x:corner[0] + x + w]
        ours = dst.copy()
        ours[box] = clone_rect(patch[y:y + h, x:x + w], dst[box], mask[y:y + h, x:x + w], mode)
        theirs = _opencv_at(patch, dst, mask, corner, mode)
        assert np.abs(ours.astype(int) - theirs).max() <= 1


# the sine transform runs along the cheaper axis, the tridiagonal solves along the other:
# (13, 22) and (22, 13) both ways round; (149, 160): an FFT along 149 (2 * 150 = 2^2 3 5^2)
@pytest.mark.parametrize("shape", [(13, 22), (22, 13), (40, 46), (149, 160), (3, 3), (1, 9)])
def test_dirichlet_solver_satisfies_the_five_point_equation(shape):
    from nsa_tutorial.poisson import _solve_dirichlet

    rhs = (np.random.default_rng(0).normal(size=(2, *shape)) * 50).astype(np.float32)
    u = np.pad(_solve_dirichlet(rhs).astype(np.float64), ((0, 0), (1, 1), (1, 1)))
    lap = u[:, :-2, 1:-1] + u[:, 2:, 1:-1] + u[:, 1:-1, :-2] + u[:, 1:-1, 2:] - 4 * u[:, 1:-1, 1:-1]
    # a float32 solve: a residual of float32 rounding, not of a wrong system (which would be O(1))
    np.testing.assert_allclose(lap, rhs, atol=1e-5 * np.abs(rhs).max())


@pytest.mark.parametrize("mode", ["normal", "mixed"])
def test_clone_into_is_opencv_to_one_grey_level(mode):
    """Synthesis's fast path: any rectangle size (FFT or DST-matrix axes), same result as OpenCV."""
    from nsa_tutorial.poisson import clone_into

    rng = np.random.default_rng(6)
    for _ in range(25):
        patch, dst, mask, corner = _random_clone_case(rng)
        ours = clone_into(dst, patch, mask, corner, mode).astype(int)
        assert np.abs(ours - _opencv_at(patch, dst, mask, corner, mode)).max() <= 1


def test_dst_along_awkward_lengths_equals_scipy():
    from scipy.fft import dst

    from nsa_tutorial.poisson import _dst_rows

    x = np.random.default_rng(1).normal(size=(3, 197, 5)).astype(np.float32)  # 2 * 198: prime 11 * 9
    for n in (197, 198, 100):  # 2 * 199 has the prime 199: the matrix path
        np.testing.assert_allclose(_dst_rows(x[:, :n]), dst(x[:, :n], type=1, axis=1, norm="ortho"), atol=2e-4)


def test_fast_backend_of_seamless_clone_matches_opencv_placement():
    src, dst = smooth(data.astronaut(), 3, 96), smooth(data.coffee(), 3, 96)
    mask = np.zeros((96, 96), np.uint8)
    mask[30:61, 20:57] = 255
    fast = seamless_clone(src, dst, mask, (48, 47), "normal", backend="fast").astype(int)
    cv = seamless_clone(src, dst, mask, (48, 47), "normal", backend="opencv")
    assert np.abs(fast - cv).max() <= 1


@pytest.mark.parametrize("shapes, message", [
    (((10, 10, 3), (10, 11, 3), (10, 10)), "must align"),
    (((10, 10), (10, 10), (10, 10)), "HxWxC"),
    (((2, 10, 3), (2, 10, 3), (2, 10)), ">= 3x3"),
])
def test_clone_rect_rejects_misaligned_or_tiny_input(shapes, message):
    from nsa_tutorial.poisson import clone_rect

    src, dst, mask = (np.zeros(shape, np.uint8) for shape in shapes)
    with pytest.raises(ValueError, match=message):
        clone_rect(src, dst, mask)
    with pytest.raises(ValueError, match="mode must be one of"):
        clone_rect(np.zeros((5, 5, 3), np.uint8), np.zeros((5, 5, 3), np.uint8), np.zeros((5, 5), np.uint8), "blend")
