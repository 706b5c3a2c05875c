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
