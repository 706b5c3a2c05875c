"""Exercise ex-ablations-1: the expected number of patches for n_max = 3, against make_anomaly."""
import numpy as np
from otter.test_files import test_case

from nsa_tutorial.exercises import answered, near, tried_patches

OK_FORMAT = False
name = "ex-ablations-1"
points = 1


@test_case(points=1)
def test_against_make_anomaly(expected_patches):
    got = answered("expected_patches", expected_patches)
    n = 500
    counts = tried_patches(n_max=3, samples=n, seed=5)
    near(f"expected_patches against the mean count of {n} samples of make_anomaly (n_max = 3, skipped patches counted)",
         got, counts.mean(), 5 * counts.std() / np.sqrt(n) + 0.01)
