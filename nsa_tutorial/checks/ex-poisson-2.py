"""Exercise ex-poisson-2: the mixed guidance field of eq. 4, against the package's."""
import numpy as np
from otter.test_files import test_case

from nsa_tutorial.exercises import answered
from nsa_tutorial.poisson import guidance_divergence

OK_FORMAT = False
name = "ex-poisson-2"
points = 2


def _pairs():
    rng = np.random.default_rng(7)
    return [(rng.integers(0, 256, shape).astype(float), rng.integers(0, 256, shape).astype(float))
            for shape in ((9, 11), (8, 7, 3))]


@test_case(points=1)
def test_shape(mixed_divergence):
    for src, dst in _pairs():
        got = answered("mixed_divergence(src, dst)", answered("mixed_divergence", mixed_divergence)(src, dst))
        assert np.shape(got) == src.shape, f"mixed_divergence returned shape {np.shape(got)} for inputs of shape {src.shape}"


@test_case(points=1)
def test_agrees_with_eq4(mixed_divergence):
    for src, dst in _pairs():
        got = np.asarray(mixed_divergence(src, dst), float)[1:-1, 1:-1]
        want = guidance_divergence(src, dst, "mixed")[1:-1, 1:-1]
        wrong = np.abs(got - want) > 1e-9
        assert not wrong.any(), (
            f"away from the border, {wrong.mean():.0%} of the values differ from eq. 4 "
            f"(largest difference {np.abs(got - want).max():.3g}) for an image of shape {src.shape}")
