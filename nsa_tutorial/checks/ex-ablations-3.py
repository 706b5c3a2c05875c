"""Exercise ex-ablations-3: where variant D helps and hurts most, from Table 7."""
from otter.test_files import test_case

from nsa_tutorial.config import MVTEC_CLASSES
from nsa_tutorial.exercises import answered
from nsa_tutorial.paper_results import ABLATIONS

OK_FORMAT = False
name = "ex-ablations-3"
points = 2


def _differences():
    final, d = ABLATIONS["image_auroc"]["final"], ABLATIONS["image_auroc"]["D"]
    return {c: d[c].mean - final[c].mean for c in MVTEC_CLASSES}


@test_case(points=1)
def test_most_helped(most_helped):
    diff, got = _differences(), answered("most_helped", most_helped)
    assert got in diff, f"most_helped = {got!r} is not an MVTec AD class name"
    better = [c for c in diff if diff[c] > diff[got]]
    assert not better, f"D helps {len(better)} classes more than {got} ({diff[got]:+.1f} points there)"


@test_case(points=1)
def test_most_hurt(most_hurt):
    diff, got = _differences(), answered("most_hurt", most_hurt)
    assert got in diff, f"most_hurt = {got!r} is not an MVTec AD class name"
    worse = [c for c in diff if diff[c] < diff[got]]
    assert not worse, f"D hurts {len(worse)} classes more than {got} ({diff[got]:+.1f} points there)"
