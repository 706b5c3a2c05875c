"""Exercise ex-patches-1: the mean relative side of the clipped Gamma size, against sampling."""
import numpy as np
from otter.test_files import test_case

from nsa_tutorial.exercises import answered, near
from nsa_tutorial.patches import truncated_gamma_fraction

OK_FORMAT = False
name = "ex-patches-1"
points = 1


@test_case(points=1)
def test_against_sample_mean(mean_relative_side):
    f = answered("mean_relative_side", mean_relative_side)
    for lo, hi in ((0.06, 0.80), (0.06, 0.24), (0.10, 0.40)):
        draws = truncated_gamma_fraction(np.random.default_rng(1), lo, hi, 400_000)
        tol = 5 * draws.std() / np.sqrt(draws.size)  # five standard errors of the sample mean
        near(f"mean_relative_side({lo}, {hi}) against the mean of 400,000 draws",
             answered(f"mean_relative_side({lo}, {hi})", f(lo, hi)), draws.mean(), tol)
