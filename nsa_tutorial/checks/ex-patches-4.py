"""Exercise ex-patches-4: the authors' resize rule, against the package's size_clip="reference"."""
import numpy as np
from otter.test_files import test_case

from nsa_tutorial.config import get_config
from nsa_tutorial.exercises import answered
from nsa_tutorial.patches import resize_scale, resized_side, sample_patch_size

OK_FORMAT = False
name = "ex-patches-4"
points = 1


@test_case(points=1)
def test_against_package(resized_hw_reference):
    f = answered("resized_hw_reference", resized_hw_reference)
    config, shape, draws = get_config("carpet", size_clip="reference"), (256, 256), 400
    rng, wrong = np.random.default_rng(3), []
    for seed in range(draws):
        hw = sample_patch_size(rng, *shape, config)
        s = resize_scale(np.random.default_rng(seed), hw, shape, config)
        want = (resized_side(s, hw[0], config), resized_side(s, hw[1], config))
        r = np.random.default_rng(seed).normal(1, 0.5)  # the r_s that resize_scale drew
        got = answered("resized_hw_reference(...)", f(r, hw, shape, config))
        if tuple(int(v) for v in got) != want:
            wrong.append((r, hw, tuple(got), want))
    if wrong:
        r, hw, got, want = wrong[0]
        raise AssertionError(f"{len(wrong)} of {draws} draws differ from size_clip='reference' for carpet; "
                             f"e.g. r_s={r:.3f}, patch (h, w)={hw}: yours {got}, the package's {want}")
