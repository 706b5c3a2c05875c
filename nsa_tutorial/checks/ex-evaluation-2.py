"""Exercise ex-evaluation-2: a map that finds the big regions and misses the small one; its metrics."""
import numpy as np
from otter.test_files import test_case
from scipy import ndimage

from nsa_tutorial.exercises import answered, near
from nsa_tutorial.metrics import au_pro, pixel_auroc

OK_FORMAT = False
name = "ex-evaluation-2"
points = 3


def _regions(masks):
    """Every 8-connected region of the masks, as boolean arrays over the whole stack."""
    out = []
    for j, mask in enumerate(np.asarray(masks, bool)):
        labelled, n = ndimage.label(mask, structure=np.ones((3, 3)))
        for i in range(1, n + 1):
            region = np.zeros(np.shape(masks), bool)
            region[j] = labelled == i
            out.append(region)
    return sorted(out, key=np.sum)


@test_case(points=1)
def test_map(masks, m):
    m, masks = np.asarray(answered("m", m), float), np.asarray(masks, bool)
    assert m.shape == masks.shape, f"m has shape {m.shape}, expected the masks' {masks.shape}"
    small, *big = _regions(masks)
    normal = m[~masks].max()
    for region in big:
        assert m[region].min() > normal, (
            f"a big region ({region.sum()} pixels) is not found perfectly: its lowest score {m[region].min():.3g} "
            f"is not above every normal pixel (highest {normal:.3g})")
    assert m[small].max() <= normal, (
        f"the small region ({small.sum()} pixels) is found: its highest score {m[small].max():.3g} is above "
        f"the highest normal pixel's {normal:.3g}")


@test_case(points=2)
def test_metrics(masks, m, pixel, pro):
    near("pixel (your pixel AUROC) against pixel_auroc(masks, m)", answered("pixel", pixel),
         pixel_auroc(masks, np.asarray(m, float)), 1e-3)
    near("pro (your AU-PRO) against au_pro(masks, m)", answered("pro", pro), au_pro(masks, np.asarray(m, float)), 1e-3)
