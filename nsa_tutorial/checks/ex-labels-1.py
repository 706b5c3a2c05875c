"""Exercise ex-labels-1: the change at which the logistic label (eq. 14) reaches a level."""
import numpy as np
from otter.test_files import test_case

from nsa_tutorial.config import TABLE4, get_config
from nsa_tutorial.exercises import answered, near
from nsa_tutorial.labels import logistic_label

OK_FORMAT = False
name = "ex-labels-1"
points = 1


@test_case(points=1)
def test_label_reaches_level(change_at):
    f = answered("change_at", change_at)
    for cls in TABLE4:
        config = get_config(cls)
        for p in (0.1, 0.5, 0.9):
            c = answered(f"change_at({cls!r}, {p})", f(config, p))
            label = float(logistic_label(np.float32(1), np.float32(c), config.y0, config.k))
            near(f"{cls}: the logistic label at your change_at(config, {p}) = {float(c):.3g} is {label:.4f}, not {p}",
                 label, p, 1e-3)
