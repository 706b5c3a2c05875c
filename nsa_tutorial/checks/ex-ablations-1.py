"""Exercise ex-ablations-1: the expected number of patches for n_max = 3, against make_anomaly."""
import numpy as np
from otter.test_files import test_case

from nsa_tutorial.config import get_config
from nsa_tutorial.exercises import answered, near
from nsa_tutorial.synthesis import make_anomaly

OK_FORMAT = False
name = "ex-ablations-1"
def _tried(anomaly):
    """The patches make_anomaly tried: those it blended and those it skipped (constraints or blend failed)."""
    return len(anomaly.dest_rects) + anomaly.skipped


points = 1


@test_case(points=1)
def test_against_make_anomaly(expected_patches):
    got = answered("expected_patches", expected_patches)
    rng, config, n = np.random.default_rng(5), get_config("texture_brick", n_max=3), 500
    dest, src = (rng.integers(0, 256, (64, 64, 3), dtype=np.uint8) for _ in range(2))
    counts = np.array([_tried(make_anomaly(dest, src, config, np.random.default_rng([5, i])))
                       for i in range(n)])
    near(f"expected_patches against the mean count of {n} samples of make_anomaly (n_max = 3, skipped patches counted)",
         got, counts.mean(), 5 * counts.std() / np.sqrt(n) + 0.01)
