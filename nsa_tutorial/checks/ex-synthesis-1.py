"""Exercise ex-synthesis-1: the distribution of the number of patches, against make_anomaly."""
import numpy as np
from otter.test_files import test_case

from nsa_tutorial.config import get_config
from nsa_tutorial.exercises import answered, near
from nsa_tutorial.synthesis import make_anomaly

OK_FORMAT = False
name = "ex-synthesis-1"
def _tried(anomaly):
    """The patches make_anomaly tried: those it blended and those it skipped (constraints or blend failed)."""
    return len(anomaly.dest_rects) + anomaly.skipped


points = 2


def _counts(n=500):
    """Patches that make_anomaly tried on random textures."""
    rng, config = np.random.default_rng(4), get_config("texture_brick", n_max=4)
    dest, src = (rng.integers(0, 256, (64, 64, 3), dtype=np.uint8) for _ in range(2))
    return np.array([_tried(make_anomaly(dest, src, config, np.random.default_rng([4, i])))
                     for i in range(n)])


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
    counts = _counts()
    freq = np.bincount(counts, minlength=5)[1:5] / counts.size
    worst = int(np.argmax(np.abs(freq - p)))
    tol = 5 * np.sqrt(max(p[worst] * (1 - p[worst]), 0.01) / counts.size)
    near(f"P({worst + 1} patches) against its frequency in {counts.size} samples of make_anomaly",
         p[worst], freq[worst], tol)
