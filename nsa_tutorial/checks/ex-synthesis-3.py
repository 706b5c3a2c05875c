"""Exercise ex-synthesis-3: two FPI samples that agree at a pixel although their factors differ."""
from otter.test_files import test_case

from nsa_tutorial.exercises import answered

OK_FORMAT = False
name = "ex-synthesis-3"
points = 2


@test_case(points=1)
def test_two_samples(x_d, x_s1, a1, x_s2, a2):
    values = {n: answered(n, v) for n, v in dict(x_d=x_d, x_s1=x_s1, a1=a1, x_s2=x_s2, a2=a2).items()}
    for n in ("x_d", "x_s1", "x_s2"):
        assert 0 <= float(values[n]) <= 255, f"{n} = {values[n]} is not a grey level in [0, 255]"
    for n in ("a1", "a2"):
        assert 0 < float(values[n]) < 1, f"{n} = {values[n]} is not an interpolation factor in (0, 1)"
    assert abs(float(a1) - float(a2)) >= 0.05, f"a1 and a2 differ by {abs(a1 - a2):.3g}: make them differ by at least 0.05"
    assert float(x_s1) != float(x_s2), "the two sources are equal: use two different sources"


@test_case(points=1)
def test_same_pixel_value(x_d, x_s1, a1, x_s2, a2):
    v1 = (1 - float(a1)) * float(x_d) + float(a1) * float(x_s1)
    v2 = (1 - float(a2)) * float(x_d) + float(a2) * float(x_s2)
    assert abs(v1 - v2) <= 0.5, f"the two blended pixels are {v1:.2f} and {v2:.2f}: they differ by {abs(v1 - v2):.2f}"
