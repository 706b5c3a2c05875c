"""Exercise ex-model-2: the input sizes the model accepts, and its bottleneck grid, against the model."""
import torch
from otter.test_files import test_case

from nsa_tutorial.exercises import answered
from nsa_tutorial.model import NSAModel, shapes_through

OK_FORMAT = False
name = "ex-model-2"
points = 2


def _accepts(model, side):
    try:
        model(torch.zeros(1, 3, side, side))  # the input check rejects a wrong size before any work
    except ValueError:
        return False
    return True


@test_case(points=1)
def test_accepted_sizes(accepted_sizes):
    sizes = sorted({int(s) for s in answered("accepted_sizes", accepted_sizes)})
    model = NSAModel().eval()
    with torch.no_grad():
        wrong = [s for s in range(200, 301) if _accepts(model, s) != (s in sizes)]
    outside = [s for s in sizes if not 200 <= s <= 300]
    assert not outside, f"accepted_sizes holds sizes outside 200-300: {outside}"
    assert not wrong, (f"for {len(wrong)} sizes between 200 and 300 your list disagrees with the model "
                       f"(e.g. {wrong[0]}: the model {'accepts' if wrong[0] not in sizes else 'rejects'} it)")


@test_case(points=1)
def test_grid(grid_256):
    got = answered("grid_256", grid_256)
    got = tuple(got) if isinstance(got, (tuple, list)) else (int(got), int(got))
    with torch.no_grad():
        want = dict(shapes_through(NSAModel().eval(), torch.zeros(1, 3, 256, 256)))["bottleneck"][-2:]
    assert tuple(int(v) for v in got) == tuple(want), (
        f"grid_256 = {got} is not the bottleneck's grid at 256 x 256 (rows, columns)")
