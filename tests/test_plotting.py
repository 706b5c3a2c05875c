"""Figures the chapters share: overlays, grids and their colour bars."""

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest
from matplotlib import colormaps

from nsa_tutorial.plotting import add_colorbar, overlay_heatmap, show_grid, show_heatmaps


def test_colorbar_spans_the_overlay_scale():
    image = np.zeros((8, 8), np.uint8)
    heat = np.linspace(0, 2, 64).reshape(8, 8)
    fig = show_grid([image, overlay_heatmap(image, heat, alpha=1.0, vmax=2.0)])
    bar = add_colorbar(fig, 2.0, "jet", "score")
    assert bar.mappable.norm.vmin == 0 and bar.mappable.norm.vmax == 2.0
    assert bar.ax.get_ylabel() == "score"
    # the bar's top colour is the overlay's colour at the map's maximum
    top = np.round(np.array(colormaps["jet"](1.0)[:3]) * 255)
    np.testing.assert_array_equal(overlay_heatmap(image, heat, alpha=1.0, vmax=2.0)[-1, -1], top)


def test_grid_colorbar_for_labels_and_its_requirement():
    label = np.random.default_rng(0).random((6, 6))
    fig = show_grid([label, label], vmax=1, colorbar="label")
    assert len(fig.axes) == 3  # two panels and the bar
    with pytest.raises(ValueError, match="vmax"):
        show_grid([label], colorbar="label")


def test_show_heatmaps_pairs_each_image_with_its_map():
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (3, 8, 8, 3), dtype=np.uint8)
    maps = rng.random((3, 8, 8))
    fig = show_heatmaps(images, maps, ["a", "b", "c"], vmax=1.0, ncols=4)
    panels = [ax for ax in fig.axes if ax.images and ax.get_title()]
    assert [ax.get_title() for ax in panels] == ["a", "anomaly map", "b", "anomaly map", "c", "anomaly map"]
    np.testing.assert_array_equal(panels[3].images[0].get_array(), overlay_heatmap(images[1], maps[1], vmax=1.0))


def test_square_keeps_the_centred_square_and_on_canvas_puts_the_picture_on_black():
    from nsa_tutorial.plotting import on_canvas, square

    image = np.zeros((40, 60, 3), np.uint8)
    image[:, 10:50] = 200  # the centred 40 x 40 square is bright, the side bands black
    assert square(image, 20).shape == (20, 20, 3) and (square(image, 20) == 200).all()
    canvas = on_canvas(np.full((30, 30, 3), 90, np.uint8), 12, np.random.default_rng(0), 32)
    assert canvas.shape == (32, 32, 3)
    ys, xs = np.nonzero(canvas[:, :, 0])
    assert (canvas[ys, xs] == 90).all() and len(ys) == 12 * 12
    assert ys.max() - ys.min() == xs.max() - xs.min() == 11  # one 12 x 12 block


def test_ms_per_sample_times_pairs_of_different_images(monkeypatch):
    import nsa_tutorial.synthesis as synthesis
    from nsa_tutorial.book import ms_per_sample
    from nsa_tutorial.config import get_config

    seen = []
    monkeypatch.setattr(synthesis, "make_anomaly", lambda d, s, *args: seen.append((d[0, 0, 0], s[0, 0, 0])))
    pool = [np.full((64, 64, 3), v, np.uint8) for v in (1, 2, 3)]
    assert ms_per_sample(pool, get_config("carpet"), n=10) >= 0
    assert len(seen) == 11 and all(d != s for d, s in seen)  # one warm-up, then 10 timed pairs
