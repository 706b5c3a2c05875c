"""Evaluation glue: resolution, centre-crop maps, metrics without masks, seed summaries."""

import json

import numpy as np
import pytest
import torch

from nsa_tutorial.config import get_config
from nsa_tutorial.evaluate import compute_metrics, eval_size, mean_and_se, predict_maps, summarise


class Brightness(torch.nn.Module):
    """A stand-in model whose map is the (normalised) input brightness: known output."""

    def forward(self, x):
        return x.mean(dim=1, keepdim=True)


def test_eval_size_is_the_papers_256_in_full_mode():
    assert eval_size(get_config("bottle")) == 256  # objects: 256 images, centre 224 crop
    assert eval_size(get_config("carpet")) == 256  # textures: the full 256 image
    assert eval_size(get_config("bottle", mode="quick")) == get_config("bottle", mode="quick").resize


def test_object_maps_are_centre_crops_zero_padded_back():
    config = get_config("bottle", image_size=64, normalize="none")  # resize 73, crop 66
    size = eval_size(config)
    images = np.random.default_rng(0).integers(1, 256, (3, size, size, 3), dtype=np.uint8)
    maps = predict_maps(Brightness(), images, config)
    start = (size - 64) // 2
    inside = np.s_[:, start:start + 64, start:start + 64]
    expected = images.astype(np.float32).mean(axis=3) / 255
    np.testing.assert_allclose(maps[inside], expected[inside], atol=1e-6)
    outside = np.ones(maps.shape, bool)
    outside[inside] = False
    assert (maps[outside] == 0).all()


def test_texture_maps_cover_the_whole_image():
    config = get_config("carpet", image_size=64, normalize="none")
    images = np.full((2, 64, 64, 3), 51, np.uint8)
    np.testing.assert_allclose(predict_maps(Brightness(), images, config), 0.2, atol=1e-6)


def test_metrics_without_masks_are_image_level_only():
    labels = np.array([0, 0, 1, 1])
    maps = np.zeros((4, 8, 8), np.float32)
    maps[2:, :2, :2] = 1.0  # anomalous images score higher
    result = compute_metrics(labels, maps, None)
    assert result["image_auroc"] == 1.0
    assert result["pixel_auroc"] is None and result["au_pro"] is None
    assert (result["n_normal"], result["n_anomalous"], result["resolution"]) == (2, 2, 8)
    masks = maps > 0.5
    full = compute_metrics(labels, maps, masks)
    assert full["pixel_auroc"] == 1.0 and full["au_pro"] == 1.0


def test_mean_and_standard_error():
    mean, se = mean_and_se([0.9, 0.92, 0.94])
    assert mean == pytest.approx(0.92)
    assert se == pytest.approx(np.std([0.9, 0.92, 0.94], ddof=1) / np.sqrt(3))
    assert mean_and_se([0.5]) == (0.5, None)


def test_summarise_collects_seeds_into_paper_tables(tmp_path):
    for seed, (image, pixel) in enumerate([(0.90, 0.95), (0.96, 0.97)]):
        run = tmp_path / "nsa_logistic" / "bottle" / f"seed{seed}"
        run.mkdir(parents=True)
        (run / "metrics.json").write_text(json.dumps(
            {"image_auroc": image, "pixel_auroc": pixel, "au_pro": None}))
    markdown = summarise(tmp_path)
    results = json.loads((tmp_path / "results.json").read_text())
    bottle = results["nsa_logistic"]["bottle"]
    assert bottle["image_auroc"]["mean"] == pytest.approx(0.93)
    assert bottle["image_auroc"]["seeds"] == 2
    assert "au_pro" not in bottle  # no value, no row: never a made-up number
    assert results["provenance"]["package_version"] and results["provenance"]["date"]
    assert "| object | bottle | 93.0 | 97.7 ± 0.3 |" in markdown  # ours next to the paper's Table 1
    assert (tmp_path / "tables.md").read_text().strip() == markdown.strip()
