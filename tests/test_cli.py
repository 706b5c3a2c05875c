"""The nsa-tutorial command line, end to end on the embedded textures (tiny settings)."""

import json

import pytest
import torch

from nsa_tutorial.cli import main

TINY = ["--mode", "quick", "--image-size", "64", "--epochs", "1", "--batch-size", "8"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    mp = pytest.MonkeyPatch()
    mp.setenv("NSA_DATA_DIR", str(cache))
    out = tmp_path_factory.mktemp("run")
    code = main(["train", "--data-root", "textures", "--category", "texture_brick", *TINY,
                 "--output", str(out)])
    yield code, out
    mp.undo()


def test_train_writes_a_model(trained):
    code, out = trained
    assert code == 0
    saved = torch.load(out / "model.pt", weights_only=False)
    assert saved["config"]["name"] == "texture_brick" and saved["config"]["image_size"] == 64
    assert len(json.loads((out / "history.json").read_text())["loss"]) == 1


def test_evaluate_writes_all_metrics(trained, tmp_path):
    _, out = trained
    metrics = tmp_path / "metrics.json"
    assert main(["evaluate", "--data-root", "textures", "--category", "texture_brick",
                 "--checkpoint", str(out / "model.pt"), "--output", str(metrics)]) == 0
    result = json.loads(metrics.read_text())
    for key in ("image_auroc", "pixel_auroc", "au_pro"):
        assert 0.0 <= result[key] <= 1.0
    assert result["n_normal"] > 0 and result["n_anomalous"] > 0
    assert result["resolution"] == 64 and result["category"] == "texture_brick"


def test_train_again_resumes_instead_of_starting_over(trained, capsys):
    _, out = trained
    before = torch.load(out / "model.pt", weights_only=False)["state_dict"]
    assert main(["train", "--data-root", "textures", "--category", "texture_brick", *TINY,
                 "--output", str(out)]) == 0
    assert "Resumed from epoch 1" in capsys.readouterr().out
    after = torch.load(out / "model.pt", weights_only=False)["state_dict"]
    assert all(torch.equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize("argv, message", [
    (["train", "--data-root", "no_such_dataset", "--category", "x", "--output", "o"], "no_such_dataset"),
    (["train", "--data-root", "textures", "--category", "texture_marble", *TINY, "--output", "o"],
     "texture_marble"),
    (["train", "--data-root", "textures", "--category", "texture_brick", "--image-size", "100",
      "--output", "o"], "multiple of 32"),
])
def test_bad_input_gives_a_clear_error_and_exit_code_2(trained, tmp_path, monkeypatch, capsys, argv, message):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_evaluate_rejects_a_file_that_is_not_a_model(trained, tmp_path, capsys):
    bogus = tmp_path / "model.pt"
    torch.save({"weights": 1}, bogus)
    assert main(["evaluate", "--data-root", "textures", "--category", "texture_brick",
                 "--checkpoint", str(bogus), "--output", str(tmp_path / "m.json")]) == 2
    assert str(bogus) in capsys.readouterr().err


def test_unknown_method_is_refused_by_the_parser():
    assert main(["train", "--data-root", "elpv", "--category", "mono", "--method", "magic", "--output", "o"]) == 2


def test_reproduce_is_resumable_and_writes_tables(trained, tmp_path, capsys):
    argv = ["reproduce", "--data-root", "textures", "--categories", "texture_grass", "--seeds", "0",
            *TINY, "--output", str(tmp_path)]
    assert main(argv) == 0
    metrics = tmp_path / "nsa_logistic" / "texture_grass" / "seed0" / "metrics.json"
    summary = json.loads((tmp_path / "results.json").read_text())
    assert summary["nsa_logistic"]["texture_grass"]["image_auroc"]["mean"] == \
        json.loads(metrics.read_text())["image_auroc"]
    assert "texture_grass" in (tmp_path / "tables.md").read_text()
    capsys.readouterr()
    assert main(argv) == 0  # a second call finds the finished run and only re-summarises
    assert "done earlier" in capsys.readouterr().out
