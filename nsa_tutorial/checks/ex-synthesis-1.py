"""Exercise ex-synthesis-1: the distribution of the number of patches, against make_anomaly."""
import numpy as np
from otter.test_files import test_case

from nsa_tutorial.exercises import answered, near, tried_patches

OK_FORMAT = False
name = "ex-synthesis-1"
points = 2


@test_case(points=1)
def test_is_a_distribution(count_pmf, mean_count):
    p = np.asarray(answered("count_pmf", count_pmf), float)
    assert p.shape == (4,), f"count_pmf must hold 4 probabilities (1, 2, 3, 4 patches), got shape {p.shape}"
    assert (p >= 0).all(), f"count_pmf has a negative entry: {p.min():.3g}"
    near("the sum of count_pmf", p.sum(), 1, 1e-6)
    near("mean_count against the mean of count_pmf", answered("mean_count", mean_count), (p * [1, 2, 3, 4]).sum(), 1e-6)


@test_case(points=1)
def test_against_make_anomaly(count_pmf):
    p = np.asarray(answered("count_pmf", count_pmf), float)
    counts = tried_patches(n_max=4, samples=500, seed=4)
    freq = np.bincount(counts, minlength=5)[1:5] / counts.size
    worst = int(np.argmax(np.abs(freq - p)))
    tol = 5 * np.sqrt(max(p[worst] * (1 - p[worst]), 0.01) / counts.size)
    near(f"P({worst + 1} patches) against its frequency in {counts.size} samples of make_anomaly",
         p[worst], freq[worst], tol)
