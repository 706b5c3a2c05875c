"""ONNX export: same scores and masks as PyTorch on real images, metadata, and the CLI end to end
(train tiny -> predict -> export -> predict with the ONNX file -> evaluate)."""

import json

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

from nsa_tutorial.cli import main  # noqa: E402
from nsa_tutorial.config import get_config  # noqa: E402
from nsa_tutorial.layout import load_category, load_test_item  # noqa: E402
from nsa_tutorial.sources import resolve_data_root
from nsa_tutorial.training_set import SyntheticAnomalyDataset
from nsa_tutorial.export import PARITY_ATOL, export_onnx  # noqa: E402
from nsa_tutorial.checkpoint import load_calibration  # noqa: E402
from nsa_tutorial.calibration import calibration_split  # noqa: E402
from nsa_tutorial.inference import load_predictor, read_metadata  # noqa: E402
from nsa_tutorial.pipeline import calibrate_checkpoint  # noqa: E402
from nsa_tutorial.train import train  # noqa: E402

TINY = ["--mode", "quick", "--image-size", "64", "--epochs", "1", "--batch-size", "16"]


@pytest.fixture(scope="module")
def cache(module_tmp):
    mp = pytest.MonkeyPatch()
    mp.setenv("NSA_DATA_DIR", str(module_tmp("cache")))
    yield resolve_data_root("textures")
    mp.undo()


@pytest.fixture(scope="module", params=[("texture", "mean"), ("object", "mean"), ("texture", "top1%")])
def exported(request, cache, module_tmp):
    """A few training steps on 64 px bricks, as a texture (whole image) and as an object
    (the centre crop, zero padding), and scored by the top 1 % of the map (torch's topk in the
    ONNX graph), calibrated and exported."""
    kind, score = request.param
    out = module_tmp(f"{kind}-{score.strip('%')}")
    config = get_config("texture_brick", kind=kind, image_size=64, epochs=1, batch_size=8, score=score)
    category, held = calibration_split(load_category(cache, config.name), 0.2)
    train(config, SyntheticAnomalyDataset(category, config), out, max_steps_per_epoch=1, progress=False)
    calibrate_checkpoint(out / "model.pt", held, 0.01)
    return out / "model.pt", export_onnx(out / "model.pt", out / "model.onnx"), category


def test_onnx_gives_the_scores_and_masks_of_pytorch_on_real_images(exported):
    """Tolerance: PARITY_ATOL (1e-4) on every map value and score; masks agree on every pixel
    whose map value is farther than that from the pixel threshold."""
    checkpoint, path, category = exported
    torch_model, onnx_model = load_predictor(checkpoint), load_predictor(path)
    assert onnx_model.backend == "onnxruntime" and onnx_model.size == torch_model.size
    images = np.stack([load_test_item(item, torch_model.size)[0] for item in category.test])
    (s_torch, m_torch), (s_onnx, m_onnx) = torch_model.run(images), onnx_model.run(images)
    assert m_onnx.shape == m_torch.shape == (len(images), torch_model.size, torch_model.size)
    assert np.abs(m_onnx - m_torch).max() <= PARITY_ATOL
    assert np.abs(s_onnx - s_torch).max() <= PARITY_ATOL
    assert m_torch.std() > 1e-3  # real, varied maps, not a constant that trivially agrees
    t = load_calibration(checkpoint)["pixel_threshold"]
    clear = np.abs(m_torch - t) > PARITY_ATOL
    assert np.array_equal((m_torch > t)[clear], (m_onnx > t)[clear])
    if torch_model.config.kind == "object":  # outside the centre crop the map is 0, in both
        assert (m_onnx[:, :torch_model.window.start] == 0).all()


def test_the_onnx_file_carries_config_thresholds_and_input_size(exported):
    checkpoint, path, _ = exported
    meta = read_metadata(path)
    predictor = load_predictor(checkpoint)
    assert meta["config"] == predictor.config and meta["input_size"] == predictor.size
    assert meta["calibration"] == load_calibration(checkpoint)
    assert meta["config"].score == meta["calibration"]["score"]  # the file decides as it was calibrated
    names = [p.key for p in onnx.load(str(path)).metadata_props]
    assert {"nsa_tutorial.config", "nsa_tutorial.calibration", "nsa_tutorial.input_size"} <= set(names)


def test_export_refuses_a_file_that_is_not_a_model(tmp_path):
    torch.save({"weights": 1}, tmp_path / "bogus.pt")
    assert main(["export", "--checkpoint", str(tmp_path / "bogus.pt"), "--format", "onnx",
                 "--output", str(tmp_path / "m.onnx")]) == 2
    assert not (tmp_path / "m.onnx").exists()


def test_cli_train_predict_export_predict_with_onnx_evaluate(cache, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--data-root", "textures", "--category", "texture_brick", *TINY,
                 "--calibration", "0.2", "--target-fpr", "5%", "--output", str(run)]) == 0
    assert "calibrated on 12 held-back normal images" in capsys.readouterr().out
    test = cache / "texture_brick" / "test"
    assert main(["predict", "--checkpoint", str(run / "model.pt"), str(test), "--output", str(tmp_path / "pt")]) == 0
    assert main(["export", "--checkpoint", str(run / "model.pt"), "--format", "onnx",
                 "--output", str(run / "model.onnx")]) == 0
    assert main(["predict", "--checkpoint", str(run / "model.onnx"), str(test), "--output",
                 str(tmp_path / "onnx")]) == 0
    pt, ox = (json.loads((tmp_path / d / "predictions.json").read_text()) for d in ("pt", "onnx"))
    assert (pt["backend"], ox["backend"]) == ("torch", "onnxruntime")
    assert pt["image_threshold"] == ox["image_threshold"] == load_calibration(run / "model.pt")["image_threshold"]
    assert pt["n_images"] == ox["n_images"] == len(list(test.rglob("*.png")))
    for a, b in zip(pt["images"], ox["images"]):
        assert a["name"] == b["name"] and abs(a["score"] - b["score"]) <= PARITY_ATOL
        assert a["anomalous"] == b["anomalous"] or abs(a["score"] - pt["image_threshold"]) <= PARITY_ATOL
    assert main(["evaluate", "--data-root", "textures", "--category", "texture_brick", "--checkpoint",
                 str(run / "model.pt"), "--output", str(tmp_path / "metrics.json")]) == 0
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    normal = [r for r in pt["images"] if r["name"].startswith("good/")]
    assert metrics["image_fpr"] == pytest.approx(np.mean([r["anomalous"] for r in normal]))
    assert metrics["image_fpr_target"] == 0.05 and metrics["image_threshold"] == pt["image_threshold"]
    assert 0 <= metrics["oracle_image_f1"] <= 1 and metrics["image_auroc"] is not None
