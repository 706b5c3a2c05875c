"""Exercise ex-model-1: the parameters that a one-channel input saves, against the two models."""
from otter.test_files import test_case

from nsa_tutorial.exercises import answered
from nsa_tutorial.model import NSAModel, count_parameters

OK_FORMAT = False
name = "ex-model-1"
points = 1


@test_case(points=1)
def test_against_models(saved):
    got = answered("saved", saved)
    want = count_parameters(NSAModel(in_channels=3)) - count_parameters(NSAModel(in_channels=1))
    assert isinstance(got, (int,)) or float(got).is_integer(), f"saved = {got!r} is not a whole number of parameters"
    assert int(got) == want, (f"saved = {int(got):,} does not match the parameter counts of NSAModel(in_channels=3) "
                              f"and NSAModel(in_channels=1): it is {int(got) / want:.2f} times their difference")
