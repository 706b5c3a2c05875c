"""Exercise ex-patches-2: the probability that a source patch is cut by the border, against eq. 7's sampler."""
import numpy as np
from otter.test_files import test_case

from nsa_tutorial.config import get_config
from nsa_tutorial.exercises import answered, near
from nsa_tutorial.patches import sample_source_rect

OK_FORMAT = False
name = "ex-patches-2"
points = 1


@test_case(points=1)
def test_against_sampler(p_cut):
    f = answered("p_cut", p_cut)
    size, n = 200, 8_000
    for u, w_min in ((0.5, 0.06), (0.3, 0.1)):
        config = get_config("bottle", max_tries=1, w_min=w_min, h_min=w_min)
        rng, width = np.random.default_rng(2), int(u * size)
        rects = [sample_source_rect(rng, (10, width), (size, size), config, None) for _ in range(n)]
        cut = np.mean([x1 - x0 < width for x0, _, x1, _ in rects])
        tol = 5 * np.sqrt(cut * (1 - cut) / n) + 0.01  # five standard errors, and pixel rounding
        near(f"p_cut({u}, {w_min}) against {n} patches from sample_source_rect",
             answered(f"p_cut({u}, {w_min})", f(u, w_min)), cut, tol)
