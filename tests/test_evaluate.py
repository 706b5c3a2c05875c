"""Evaluation glue: resolution, centre-crop maps, metrics without masks, seed summaries."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from nsa_tutorial.config import get_config
from nsa_tutorial.evaluate import compute_metrics, eval_size, mean_and_se, predict_maps
from nsa_tutorial.sweep import summarise


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


class Extremeness(torch.nn.Module):
    """A stand-in detector: how far each pixel's grey value is from mid-grey (inputs in [0, 1])."""

    def forward(self, x):
        return (x.mean(dim=1, keepdim=True) - 0.5).abs() * 2


def test_own_data_is_trained_and_scored_whole_and_only_the_papers_objects_are_cropped():
    from nsa_tutorial.evaluate import centre_cropped

    assert centre_cropped(get_config("bottle")) and centre_cropped(get_config("rcxr_male"))
    assert not centre_cropped(get_config("carpet"))
    for mode in ("full", "quick"):
        paper = get_config("bottle", mode=mode)
        for own in (get_config("my_widgets", kind="object", mode=mode),
                    get_config("my_widgets", like="bottle", mode=mode), get_config("mono", mode=mode)):
            assert own.crop is None and not centre_cropped(own)  # no centre crop in training either
            assert eval_size(own) == own.image_size  # the model sees the whole image
            # trained on random crops of the image resized to the paper's centre-crop size
            assert own.resize == paper.crop and own.image_size == paper.image_size


def test_evaluation_follows_the_training_geometry(tmp_path):
    """Defect reproduced: own-data objects (the solar cells) were trained on centre crops (the
    image zoomed by resize/crop = 256/230) but scored whole.  Now the training crops and the
    test input show the same scale: stripes keep their period within 5 %."""
    import cv2

    from nsa_tutorial.evaluate import load_test_set
    from nsa_tutorial.layout import load_category
    from nsa_tutorial.training_set import SyntheticAnomalyDataset

    image = np.zeros((300, 300, 3), np.uint8)
    for x in range(0, 300, 30):
        image[:, x:x + 6] = 255  # vertical stripes every 30 px
    for folder in ("mono/train/good", "mono/test/good"):
        (tmp_path / folder).mkdir(parents=True)
        for k in range(2):
            cv2.imwrite(str(tmp_path / folder / f"{k}.png"), image)
    with pytest.warns(UserWarning, match="no ground_truth folder"):  # image labels only, as the cells
        category = load_category(tmp_path, "mono")

    def period(a: np.ndarray) -> float:
        row = a[a.shape[0] // 2, :, 0] > 127
        return float(np.diff(np.flatnonzero(row[1:] & ~row[:-1])).mean())  # rising edges

    for config in (get_config("mono", mode="quick"), get_config("mono")):
        dataset = SyntheticAnomalyDataset(category, config)
        train_crop = dataset.augment(dataset.images[0], np.random.default_rng(0))
        test_image = load_test_set(category, config)[0][0]
        assert train_crop.shape[:2] == (config.image_size,) * 2
        assert abs(period(train_crop) / period(test_image) - 1) < 0.05


def test_border_defects_are_found_whole_and_lost_with_the_centre_crop(tmp_path):
    """The embedded textures' border defects: scored whole (a user's own data), the detector
    finds them; with the paper's object protocol (centre crop, map zero-padded) a large part
    of each defect lies where the map is 0, and the pixel AUROC on them falls."""
    from nsa_tutorial.layout import load_category
    from nsa_tutorial.sources import resolve_data_root
    from nsa_tutorial.evaluate import centre_cropped, load_test_set

    category = load_category(resolve_data_root("textures", cache_dir=tmp_path), "texture_gravel")
    category.test = [t for t in category.test if t.defect in ("good", "border_chunk")]
    own = get_config("texture_gravel", kind="object", mode="quick", normalize="none")
    paper = get_config("bottle", mode="quick")  # the same settings under the paper's object protocol
    cropped = own.replace(name="bottle", resize=paper.resize, crop=paper.crop)
    assert not centre_cropped(own) and centre_cropped(cropped)
    results = {}
    for name, config in (("whole", own), ("crop", cropped)):
        images, masks, labels = load_test_set(category, config)
        maps = predict_maps(Extremeness(), images, config)
        results[name] = compute_metrics(labels, maps, masks)
        defect = masks[labels == 1]
        unseen = (maps[labels == 1] == 0) & defect  # pixels the map can never score
        results[name]["unseen"] = unseen.sum() / defect.sum()
        threshold = np.quantile(maps[labels == 0], 0.99)
        results[name]["found"] = np.mean([(m[d] > threshold).mean() > 0.5 for m, d in
                                          zip(maps[labels == 1], defect)])
    assert results["whole"]["unseen"] == 0 and results["crop"]["unseen"] > 0.4
    assert results["whole"]["found"] >= 0.75 and results["crop"]["found"] <= 0.25
    assert results["whole"]["pixel_auroc"] > results["crop"]["pixel_auroc"] + 0.1


@pytest.mark.parametrize("status, expected", [("", "abc1234"), (" M nsa_tutorial/config.py", "abc1234+dirty")])
def test_provenance_marks_a_commit_with_changed_tracked_files(monkeypatch, status, expected):
    """A result recorded from a working tree with uncommitted changes must not claim the commit."""
    import subprocess

    from nsa_tutorial.evaluate import provenance

    def fake_run(args, **kwargs):
        out = "abc1234\n" if args[1] == "rev-parse" else status
        return subprocess.CompletedProcess(args, 0, stdout=out, stderr="")

    monkeypatch.setattr(subprocess, "run", fake_run)
    assert provenance()["commit"] == expected


def _score_choice():
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "score_choice.py"
    spec = importlib.util.spec_from_file_location("score_choice", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_own_data_score_rule_keeps_the_mean_unless_another_wins_by_more_than_its_error():
    choose = _score_choice().choose
    flat = {"mean": [0.80, 0.82, 0.78], "max": [0.70, 0.72, 0.68], "top1%": [0.81, 0.81, 0.79]}
    assert choose({"a": flat, "b": flat})["default"] == "mean"  # top1% is ahead by 0.3 points, within noise
    steady = {"mean": [0.70, 0.72, 0.68], "max": [0.60, 0.60, 0.60], "top1%": [0.80, 0.83, 0.77]}
    result = choose({"a": steady, "b": flat})
    assert result["best"] == "top1%" and result["default"] == "top1%"
    per_seed = (np.array([0.10, 0.11, 0.09]) + np.array([0.01, -0.01, 0.01])) / 2  # paired over seeds, mean of datasets
    assert result["gain_over_mean"] == pytest.approx(per_seed.mean(), abs=1e-9)
    assert result["gain_se"] == pytest.approx(per_seed.std(ddof=1) / np.sqrt(3), abs=1e-9)
    noisy = {"mean": [0.70, 0.90, 0.70], "max": [0.5] * 3, "top1%": [0.95, 0.60, 0.80]}
    assert choose({"a": noisy})["best"] == "top1%" and choose({"a": noisy})["default"] == "mean"
