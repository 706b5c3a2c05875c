"""Calibration from normal images, thresholds, the scoring graph, predict and its bad input."""

import json
import warnings

import cv2
import numpy as np
import pytest
import torch

from nsa_tutorial.cli import main
from nsa_tutorial.config import get_config
from nsa_tutorial.layout import load_category
from nsa_tutorial.sources import resolve_data_root
from nsa_tutorial.training_set import SyntheticAnomalyDataset
from nsa_tutorial.evaluate import decision_metrics, predict_maps
from nsa_tutorial.evaluate import ScoringModel
from nsa_tutorial.checkpoint import load_calibration
from nsa_tutorial.calibration import (calibrate, calibration_split, parse_threshold, resolve_thresholds,
                                      threshold_at_fpr)
from nsa_tutorial.inference import load_predictor, predict, torch_predictor
from nsa_tutorial.metrics import image_scores
from nsa_tutorial.model import NSAModel
from nsa_tutorial.train import train


# --------------------------------------------------------------------------- calibration

@pytest.mark.parametrize("n, fpr, draw", [
    (99, 0.01, lambda rng, shape: rng.normal(size=shape)),
    (199, 0.05, lambda rng, shape: rng.gamma(2.0, size=shape)),  # skewed: the rule is distribution-free
    (57, 0.10, lambda rng, shape: rng.beta(5, 2, size=shape)),
])
def test_threshold_gives_the_requested_fpr_on_held_back_normal_scores(n, fpr, draw):
    """Averaged over many calibration sets, the share of *new* normal scores above the threshold
    is k / (n + 1) <= fpr with k = floor(fpr (n + 1)).  Off by one rank (the k+1-th or the
    k-1-th score, or np.quantile's interpolation) moves it by 1 / (n + 1), far outside the bound."""
    rng = np.random.default_rng(0)
    trials = 3000
    calibration, held_back = draw(rng, (trials, n)), draw(rng, (trials, 1000))
    rates = []
    for scores, new in zip(calibration, held_back):
        threshold, expected = threshold_at_fpr(scores, fpr)
        rates.append((new > threshold).mean())
    k = int(np.floor(fpr * (n + 1)))
    assert expected == pytest.approx(k / (n + 1)) and expected <= fpr
    se = np.std(rates) / np.sqrt(trials)
    assert abs(np.mean(rates) - k / (n + 1)) < max(4 * se, 0.1 / (n + 1))
    naive = np.mean([(new > np.quantile(s, 1 - fpr)).mean() for s, new in zip(calibration, held_back)])
    assert abs(naive - np.mean(rates)) > 0.2 / (n + 1)  # the test tells conventions apart


def test_too_few_calibration_images_take_the_largest_score_and_say_so():
    scores = np.arange(12.0)
    threshold, expected = threshold_at_fpr(scores, 0.01)
    assert threshold == 11.0 and expected == pytest.approx(1 / 13) and expected > 0.01


def test_calibration_split_is_seeded_disjoint_and_optional(tmp_path, monkeypatch):
    monkeypatch.setenv("NSA_DATA_DIR", str(tmp_path))
    category = load_category(resolve_data_root("textures"), "texture_brick")
    kept, held = calibration_split(category, 0.2, seed=3)
    assert len(held) == 12 and len(kept.train) == 48
    assert set(held).isdisjoint(kept.train) and set(held) | set(kept.train) == set(category.train)
    assert calibration_split(category, 0.2, seed=3)[1] == held
    assert calibration_split(category, 0.2, seed=4)[1] != held
    assert calibration_split(category, 0.0)[1] == [] and calibration_split(category, 0.0)[0].train == category.train
    for bad in (-0.1, 1.0, 0.99):
        with pytest.raises(ValueError, match="calibration fraction|fewer than 2"):
            calibration_split(category, bad)


@pytest.mark.parametrize("text, expected", [("0.3", 0.3), ("fpr=0.5%", ("fpr", 0.005)),
                                            ("fpr=0.02", ("fpr", 0.02)), (None, None)])
def test_parse_threshold(text, expected):
    assert parse_threshold(text) == expected


@pytest.mark.parametrize("text", ["fpr=0%", "fpr=100%", "fpr=150%", "fpr=-1", "high", "1.5", "-0.1", "nan"])
def test_thresholds_outside_their_range_are_refused(text):
    with pytest.raises(ValueError, match="threshold|false-positive rate"):
        resolve_thresholds({"image_threshold": 0.5, "pixel_threshold": 0.5, "target_fpr": 0.01,
                            "n_images": 5, "image_scores": [0.1] * 5}, text)


def test_an_uncalibrated_model_needs_an_explicit_threshold():
    with pytest.raises(ValueError, match="without a calibration split"):
        resolve_thresholds(None)
    with pytest.raises(ValueError, match="without a calibration split"):
        resolve_thresholds(None, "fpr=1%")
    assert resolve_thresholds(None, "0.4") == resolve_thresholds(None, 0.4)
    assert resolve_thresholds(None, 0.4).pixel == 0.4


# --------------------------------------------------------------------------- decisions

def test_decisions_at_a_threshold_and_the_oracle_f1():
    labels = np.array([0, 0, 0, 0, 1, 1, 1])
    scores = np.array([0.1, 0.2, 0.3, 0.6, 0.5, 0.7, 0.9])
    d = decision_metrics(labels, scores, threshold=0.55)  # flags 0.6 (normal), 0.7 and 0.9
    assert d["image_precision"] == pytest.approx(2 / 3) and d["image_recall"] == pytest.approx(2 / 3)
    assert d["image_f1"] == pytest.approx(2 / 3) and d["image_fpr"] == pytest.approx(1 / 4)
    brute = max(2 * ((scores >= t) & (labels == 1)).sum() / ((scores >= t).sum() + labels.sum()) for t in scores)
    assert d["oracle_image_f1"] == pytest.approx(brute) and d["oracle_image_f1"] >= d["image_f1"]
    none = decision_metrics(labels, scores, threshold=None)
    assert none["image_f1"] is None and none["oracle_image_f1"] == d["oracle_image_f1"]
    assert decision_metrics(labels, scores, threshold=1.0)["image_precision"] is None  # nothing flagged


# --------------------------------------------------------------------------- the scoring graph

@pytest.mark.parametrize("name, score", [("bottle", "mean"), ("carpet", "mean"),  # an object and a texture
                                         ("bottle", "max"), ("carpet", "top1%"), ("bottle", "top12.5%")])
def test_scoring_model_is_the_protocol_written_out_by_hand(name, score, real_image):
    """The one eval forward against the protocol step by step: each image's centre crop (objects),
    normalised as in training (to_tensor), through the model, zero-padded back; the score is the
    config's (the mean, the maximum, the mean of the top P % of pixels), as metrics.image_scores."""
    from nsa_tutorial.evaluate import eval_size
    from nsa_tutorial.training_set import to_tensor

    config = get_config(name, image_size=64, score=score)
    torch.manual_seed(0)
    model = NSAModel().eval()
    size, crop = eval_size(config), config.image_size
    assert (size > crop) == (name == "bottle")
    images = np.stack([real_image(n, size) for n in ("coffee", "astronaut", "chelsea")])
    scores, maps = ScoringModel(model, config).eval()(torch.from_numpy(images))
    top = (size - crop) // 2
    reference = np.zeros((len(images), size, size), np.float32)
    with torch.no_grad():
        for i, image in enumerate(images):
            x = to_tensor(image[top:top + crop, top:top + crop], config.normalize)[None]
            reference[i, top:top + crop, top:top + crop] = model(x)[0, 0].numpy()
    np.testing.assert_allclose(maps.detach().numpy(), reference, atol=1e-6)
    by_hand = {"mean": reference.mean(axis=(1, 2)), "max": reference.max(axis=(1, 2))}.get(score)
    if by_hand is None:  # the top P %: sort each padded map, average its ceil(P % of size^2) largest values
        k = int(np.ceil(float(score[3:-1]) / 100 * size * size))
        by_hand = np.sort(reference.reshape(len(images), -1), axis=1)[:, -k:].mean(axis=1)
    np.testing.assert_allclose(scores.detach().numpy(), by_hand, atol=1e-6)
    np.testing.assert_allclose(scores.detach().numpy(), image_scores(reference, score), atol=1e-6)
    np.testing.assert_allclose(predict_maps(model, images, config), reference, atol=1e-6)


# --------------------------------------------------------------------------- a small trained model

@pytest.fixture(scope="module")
def model_path(module_tmp):
    """A model trained for one step on 64 px bricks, calibrated on 12 held-back normal images."""
    cache = module_tmp("cache")
    mp = pytest.MonkeyPatch()
    mp.setenv("NSA_DATA_DIR", str(cache))
    out = module_tmp("run")
    config = get_config("texture_brick", image_size=64, epochs=1, batch_size=8)
    category, held = calibration_split(load_category(resolve_data_root("textures"), config.name), 0.2)
    train(config, SyntheticAnomalyDataset(category, config), out, max_steps_per_epoch=1, progress=False,
          calibration_images=held, target_fpr=0.01)
    yield out / "model.pt"
    mp.undo()


def test_calibration_is_stored_in_the_model_file(model_path):
    c = load_calibration(model_path)
    assert c["n_images"] == 12 and len(c["image_scores"]) == 12 and c["target_fpr"] == 0.01
    assert c["image_threshold"] == max(c["image_scores"])  # 12 images: the largest (see above)
    assert 0 <= c["pixel_threshold"] <= 1
    thresholds = np.array(c["pixel_thresholds"])
    assert np.all(np.diff(thresholds) <= 0)  # a higher FPR never needs a higher threshold
    assert c["score"] == load_predictor(model_path).config.score == "top1%"  # own data: OWN_DATA_SCORE
    assert resolve_thresholds(c, "fpr=1%", score="top1%").pixel == pytest.approx(c["pixel_threshold"], abs=1e-3)


def test_an_unreadable_calibration_image_is_an_error(model_path, tmp_path):
    (tmp_path / "broken.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="calibration image broken could not be read"):
        calibrate(load_predictor(model_path), [tmp_path / "broken.png"])


def test_predict_any_size_grey_or_rgb(model_path, real_image):
    grey = real_image("camera", (90, 150))
    rgb = real_image("coffee", (200, 120))
    results = predict(model_path, [grey, rgb, np.repeat(grey[:, :, None], 3, axis=2)], threshold=0.5)
    assert [r.map.shape for r in results] == [(90, 150), (200, 120), (90, 150)]
    assert all(r.mask.shape == r.map.shape and r.mask.dtype == bool for r in results)
    assert results[0].score == results[2].score  # grey is the model's RGB with equal channels
    assert all(r.anomalous == (r.score > 0.5) for r in results)
    with pytest.raises(ValueError, match="2 channels cannot be brought"):
        predict(model_path, [np.zeros((64, 64, 2), np.uint8)], threshold=0.5)


# --------------------------------------------------------------------------- the command line

def _images(folder, real_image, n=3):
    folder.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(("brick", "grass", "coffee")[:n]):
        cv2.imwrite(str(folder / f"{i}_{name}.png"), real_image(name, (80 + 16 * i, 96)))
    return folder


def test_predict_cli_writes_results_and_skips_corrupt_files(model_path, real_image, tmp_path, capsys):
    images = _images(tmp_path / "in", real_image)
    (images / "broken.png").write_bytes(b"not a png")
    out = tmp_path / "out"
    assert main(["predict", "--checkpoint", str(model_path), str(images), "--output", str(out),
                 "--threshold", "fpr=10%", "--batch-size", "2"]) == 0
    printed = capsys.readouterr().out
    assert "skipped broken" in printed and "of 3 images flagged" in printed
    run = json.loads((out / "predictions.json").read_text())
    assert run["n_images"] == 3 and [s["name"] for s in run["skipped"]] == ["broken"]
    for row in run["images"]:
        mask = cv2.imread(str(out / row["mask"]), cv2.IMREAD_UNCHANGED)
        source = cv2.imread(str(images / f"{row['name']}.png"))
        assert "mask" in row["mask"] and mask.shape == source.shape[:2] and set(np.unique(mask)) <= {0, 255}
        assert cv2.imread(str(out / row["overlay"])).shape == source.shape
        assert row["anomalous"] == (row["score"] > run["image_threshold"])
    assert len((out / "predictions.csv").read_text().splitlines()) == 4


@pytest.mark.parametrize("case, message", [
    ("not_a_model", "not an NSA model file"),
    ("empty_folder", "holds no images"),
    ("output_is_a_file", "is an existing file"),
    ("threshold", "outside [0, 1]"),
    ("fpr", "false-positive rate"),
])
def test_predict_bad_input_is_one_line_exit_2_and_keeps_earlier_results(
        model_path, real_image, tmp_path, capsys, case, message):
    """(PNG and JPEG files always decode to 1, 3 or 4 channels; arrays with others are refused
    in test_predict_any_size_grey_or_rgb.)"""
    images, out = _images(tmp_path / "in", real_image, n=1), tmp_path / "out"
    assert main(["predict", "--checkpoint", str(model_path), str(images), "--output", str(out)]) == 0
    before = (out / "predictions.json").read_text()
    checkpoint, target, extra = str(model_path), str(images), []
    if case == "not_a_model":
        torch.save({"weights": 1}, tmp_path / "bogus.pt")
        checkpoint = str(tmp_path / "bogus.pt")
    elif case == "empty_folder":
        (tmp_path / "empty").mkdir()
        target = str(tmp_path / "empty")
    elif case == "threshold":
        extra = ["--threshold", "1.5"]
    elif case == "fpr":
        extra = ["--threshold", "fpr=0%"]
    capsys.readouterr()
    output = str(tmp_path / "in" / "0_brick.png") if case == "output_is_a_file" else str(out)
    assert main(["predict", "--checkpoint", checkpoint, target, "--output", output, *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert (out / "predictions.json").read_text() == before
    assert not [p for p in tmp_path.iterdir() if ".partial" in p.name]


def test_train_without_calibration_split_says_so_and_predict_needs_a_threshold(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("NSA_DATA_DIR", str(tmp_path / "cache"))
    out = tmp_path / "run"
    assert main(["train", "--data-root", "textures", "--category", "texture_grass", "--mode", "quick",
                 "--image-size", "64", "--epochs", "1", "--batch-size", "32", "--calibration", "0",
                 "--output", str(out)]) == 0
    assert "no calibration split" in capsys.readouterr().out
    assert load_calibration(out / "model.pt") is None
    folder = resolve_data_root("textures") / "texture_grass" / "test" / "good"
    assert main(["predict", "--checkpoint", str(out / "model.pt"), str(folder), "--output",
                 str(tmp_path / "p")]) == 2
    assert "explicit score threshold" in capsys.readouterr().err
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(["predict", "--checkpoint", str(out / "model.pt"), str(folder), "--output",
                     str(tmp_path / "p"), "--threshold", "0.5"]) == 0


def test_an_onnx_file_without_onnxruntime_says_how_to_install_it(tmp_path, monkeypatch):
    import importlib.util

    from nsa_tutorial.inference import load_predictor

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "onnxruntime" else real_find_spec(name, *a))
    (tmp_path / "model.onnx").write_bytes(b"not used")
    with pytest.raises(RuntimeError, match=r'onnxruntime is not installed: pip install "nsa-tutorial\[export\]"'):
        load_predictor(tmp_path / "model.onnx")


def test_a_threshold_calibrated_under_one_score_is_never_applied_to_another(real_image):
    """A calibration knows its score; deciding on images scored another way is refused (the
    mean and the maximum of a map are different scales), and an explicit threshold still works."""
    config = get_config("carpet", image_size=64)
    torch.manual_seed(0)
    model = NSAModel().eval()
    images = [real_image(n, 64) for n in ("coffee", "astronaut", "chelsea")]
    calibration = calibrate(torch_predictor(model, config), images, 0.3)
    assert calibration["score"] == "mean"
    as_max = torch_predictor(model, config.replace(score="max"), calibration)
    with pytest.raises(ValueError, match="calibrated with the 'mean' score, these images are scored with 'max'"):
        predict(as_max, images)
    with pytest.raises(ValueError, match="calibrated with the 'mean' score"):
        predict(as_max, images, threshold="fpr=5%")
    flagged = predict(as_max, images, threshold=0.5)  # an explicit score threshold: the user's choice
    assert [r.anomalous for r in flagged] == [r.score > 0.5 for r in flagged]
    maximum = calibrate(as_max, images, 0.3)
    assert maximum["score"] == "max" and maximum["image_threshold"] > calibration["image_threshold"]
    predict(torch_predictor(model, config.replace(score="max"), maximum), images)  # the same score: fine
    legacy = {**calibration, "score": "mean of the anomaly map"}  # model.pt files of earlier versions
    assert len(predict(torch_predictor(model, config, legacy), images)) == 3


def test_scoring_images_of_another_size_is_refused(real_image):
    """A model of 64 px handed 96 px images ran and returned other scores without a word."""
    config = get_config("carpet", image_size=64)
    torch.manual_seed(0)
    predictor = torch_predictor(NSAModel().eval(), config)
    good = np.stack([real_image("coffee", predictor.size)])
    assert predictor.score(good)[1].shape == (1, predictor.size, predictor.size)
    with pytest.raises(ValueError, match=f"images must be N x {predictor.size} x {predictor.size} x 3"):
        predictor.score(np.stack([real_image("coffee", 96)]))
