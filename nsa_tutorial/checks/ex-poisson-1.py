"""Exercise ex-poisson-1: a source equal to the destination plus a constant leaves it unchanged."""
import numpy as np
from otter.test_files import test_case

from nsa_tutorial.exercises import answered

OK_FORMAT = False
name = "ex-poisson-1"
points = 3


@test_case(points=1)
def test_inputs(dst, src, mask):
    dst, src, mask = (np.asarray(answered(n, v)) for n, v in (("dst", dst), ("src", src), ("mask", mask)))
    assert src.shape == dst.shape, f"src has shape {src.shape}, dst {dst.shape}: they must be equal"
    assert mask.dtype == bool and mask.shape == dst.shape[:2] and mask.any(), \
        f"mask must be a non-empty boolean array of shape {dst.shape[:2]}"


@test_case(points=1)
def test_constant_offset(dst, src, mask):
    diff = np.asarray(answered("src", src)).astype(int) - np.asarray(answered("dst", dst)).astype(int)
    inside = diff[np.asarray(mask)]
    assert inside.max() == inside.min(), (
        f"src - dst is not one constant inside the mask: it ranges from {inside.min()} to {inside.max()} "
        "(did a uint8 addition overflow?)")
    assert inside[0] != 0, "src - dst is 0: add a non-zero constant"


@test_case(points=1)
def test_destination_unchanged(dst, mask, out):
    out, dst = np.asarray(answered("out", out)).astype(int), np.asarray(dst).astype(int)
    assert out.shape == dst.shape, f"out has shape {out.shape}, expected the destination's {dst.shape}"
    worst = int(np.abs(out - dst)[np.asarray(mask)].max())
    assert worst <= 1, f"out differs from dst inside the mask by up to {worst} grey levels (expected at most 1)"
