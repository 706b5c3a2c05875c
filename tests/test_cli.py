"""The nsa-tutorial command line, end to end on the embedded textures (tiny settings)."""

import json

import pytest
import torch

from nsa_tutorial.cli import main
from nsa_tutorial.config import OWN_DATA_SCORE

TINY = ["--mode", "quick", "--image-size", "64", "--epochs", "1", "--batch-size", "8"]


@pytest.fixture(scope="module")
def trained(module_tmp):
    cache = module_tmp("cache")
    mp = pytest.MonkeyPatch()
    mp.setenv("NSA_DATA_DIR", str(cache))
    out = module_tmp("run")
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
    clip = json.loads(metrics.read_text())["config"]["size_clip"]  # which eq. 9 rule made the table
    assert summary["size_clip"] == {"nsa_logistic": [clip]}
    assert f"(size_clip: {clip})" in (tmp_path / "tables.md").read_text()
    capsys.readouterr()
    assert main(argv) == 0  # a second call finds the finished run and only re-summarises
    assert "done earlier" in capsys.readouterr().out

    # A metrics.json half written by a crash is not "done": the run is redone and the file named.
    complete = metrics.read_text()
    metrics.write_text(complete[: len(complete) // 2])
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert f"{metrics} is unreadable or half written" in out and "redoing this run" in out
    assert json.loads(metrics.read_text())["image_auroc"] == json.loads(complete)["image_auroc"]

    # Another setting in the same folder is not "done": its run is redone (here: refused, as
    # its checkpoint is of other settings), never mixed with the earlier one.
    assert main([*argv[:-2], "--epochs", "2", "--output", str(tmp_path)]) == 1
    captured = capsys.readouterr()
    assert "belongs to another setting ({'epochs': 1})" in captured.out
    assert "epochs (checkpoint 1, now 2)" in captured.err and "--restart" in captured.err
    (metrics.parent / "error.json").unlink()

    # A sweep survives one bad run: recorded, the others go on, non-zero exit at the end.
    sweep = argv[:3] + ["--categories", "texture_nosuch", "texture_grass"] + argv[5:]
    assert main(sweep) == 1
    captured = capsys.readouterr()
    error = json.loads((tmp_path / "nsa_logistic" / "texture_nosuch" / "seed0" / "error.json").read_text())
    assert "texture_nosuch" in error["error"] and error["type"] == "FileNotFoundError"
    assert "texture_grass seed 0: done earlier" in captured.out
    assert "1 of 2 runs failed (texture_nosuch seed 0)" in captured.err
    failed = json.loads((tmp_path / "results.json").read_text())["failed"]
    assert [(f["category"], f["seed"]) for f in failed] == [("texture_nosuch", "seed0")]
    assert "texture_nosuch" in (tmp_path / "tables.md").read_text()
    assert main(sweep) == 1  # a rerun retries the failed run only
    assert "texture_nosuch seed 0: FAILED" in capsys.readouterr().err


def test_checkpoint_every_reaches_train_and_is_checked(trained, tmp_path, monkeypatch, capsys):
    import nsa_tutorial.train

    calls = []
    monkeypatch.setattr(nsa_tutorial.train, "train", lambda *args, **kwargs: calls.append(kwargs))
    monkeypatch.setattr("nsa_tutorial.cli._print_calibration", lambda path: None)  # train wrote no model
    argv = ["train", "--data-root", "textures", "--category", "texture_brick", *TINY, "--calibration", "0", "--output", str(tmp_path)]
    assert main(argv + ["--checkpoint-every", "0"]) == 0
    assert main(argv) == 0
    assert [c["checkpoint_every"] for c in calls] == [0.0, 60.0]
    monkeypatch.undo()
    assert main(argv + ["--checkpoint-every", "-1"]) == 2
    assert "argument --checkpoint-every: expected a number >= 0, got '-1'" in capsys.readouterr().err


def _copy_category(tmp_path, name="texture_grass"):
    """A private copy of an embedded texture category, as data root/name, to damage."""
    import shutil

    from nsa_tutorial.sources import resolve_data_root

    root = tmp_path / "data"
    shutil.copytree(resolve_data_root("textures") / name, root / name)
    return root


def test_evaluate_never_overwrites_its_checkpoint(trained, capsys):
    _, out = trained
    before = (out / "model.pt").read_bytes()
    for extra in ([], ["--overwrite"]):
        assert main(["evaluate", "--data-root", "textures", "--category", "texture_brick",
                     "--checkpoint", str(out / "model.pt"), "--output", str(out / "model.pt"), *extra]) == 2
        assert "is an input of this command" in capsys.readouterr().err
    assert (out / "model.pt").read_bytes() == before


def test_evaluate_replaces_an_existing_result_only_with_overwrite(trained, tmp_path, capsys):
    _, out = trained
    metrics = tmp_path / "metrics.json"
    metrics.write_text("earlier result")
    argv = ["evaluate", "--data-root", "textures", "--category", "texture_brick",
            "--checkpoint", str(out / "model.pt"), "--output", str(metrics)]
    assert main(argv) == 2
    assert "--overwrite" in capsys.readouterr().err and metrics.read_text() == "earlier result"
    assert main([*argv, "--overwrite"]) == 0
    assert json.loads(metrics.read_text())["category"] == "texture_brick"


def _one_line_error(capsys, code, *needles):
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, err
    return err


@pytest.mark.parametrize("option, value, expected", [
    ("--epochs", "0", "expected an integer >= 1, got '0'"),
    ("--batch-size", "0", "expected an integer >= 1, got '0'"),
    ("--epochs", "ten", "expected an integer >= 1, got 'ten'"),
    ("--workers", "-1", "expected an integer >= 0"),
    ("--seed", "-1", "expected an integer in [0, 4294967295]"),
    ("--image-size", "100", "expected a positive multiple of 32"),
])
def test_numeric_options_are_range_checked_by_name(capsys, option, value, expected):
    code = main(["train", "--data-root", "no_such_dataset", "--category", "x", "--output", "o",
                 option, value])
    _one_line_error(capsys, code, f"argument {option}: {expected}")


def test_reproduce_seeds_are_range_checked(capsys):
    code = main(["reproduce", "--data-root", "no_such_dataset", "--output", "o", "--seeds", "0", "-3"])
    _one_line_error(capsys, code, "--seeds")


def test_file_errors_are_one_line_with_exit_code_2(trained, tmp_path, capsys):
    import pickle

    _, out = trained
    evaluate = ["evaluate", "--data-root", "textures", "--category", "texture_brick"]
    code = main([*evaluate, "--checkpoint", str(out / "model.pt"), "--output", str(tmp_path)])
    _one_line_error(capsys, code, str(tmp_path), "is a folder")
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    code = main(["train", "--data-root", "textures", "--category", "texture_brick", *TINY, "--output", str(a_file)])
    _one_line_error(capsys, code, str(a_file), "is a file")
    code = main([*evaluate, "--checkpoint", str(out / "model.pt"), "--output", str(a_file / "m.json")])
    _one_line_error(capsys, code, "a_file")  # NotADirectoryError from the file system
    text = tmp_path / "text.pt"
    text.write_text("not a model")
    evil = tmp_path / "evil.pt"
    evil.write_bytes(pickle.dumps(print))  # a pickle that names a function: refused, never loaded
    for checkpoint in (text, evil):
        code = main([*evaluate, "--checkpoint", str(checkpoint), "--output", str(tmp_path / "m.json")])
        err = _one_line_error(capsys, code, str(checkpoint), "never loaded")
        assert "weights_only" not in err


def _copy_run(trained, tmp_path):
    import shutil

    _, out = trained
    run = tmp_path / "run"
    shutil.copytree(out, run)
    return run


def test_resume_with_another_seed_is_refused_and_restart_starts_afresh(trained, tmp_path, capsys):
    run = _copy_run(trained, tmp_path)
    argv = ["train", "--data-root", "textures", "--category", "texture_brick", *TINY, "--output", str(run)]
    before = torch.load(run / "model.pt", weights_only=True)["state_dict"]
    err = _one_line_error(capsys, main([*argv, "--seed", "1"]), "seed (checkpoint 0, now 1)", "--restart")
    assert "resume=False" not in err
    assert main([*argv, "--seed", "1", "--restart"]) == 0
    after = torch.load(run / "model.pt", weights_only=True)["state_dict"]
    assert not all(torch.equal(before[k], after[k]) for k in before)  # another seed, another model


def test_truncated_checkpoint_names_the_file_and_the_cli_remedy(trained, tmp_path, capsys):
    run = _copy_run(trained, tmp_path)
    checkpoint = run / "checkpoint.pt"
    checkpoint.write_bytes(checkpoint.read_bytes()[:4096])
    code = main(["train", "--data-root", "textures", "--category", "texture_brick", *TINY, "--output", str(run)])
    err = _one_line_error(capsys, code, str(checkpoint), "truncated", "--restart")
    assert "resume=False" not in err and "weights_only" not in err


def test_an_internal_error_shows_its_traceback_and_says_it_is_a_bug(monkeypatch, capsys):
    import nsa_tutorial.pipeline as pipeline

    def broken(*args, **kwargs):
        return 1 / 0

    monkeypatch.setattr(pipeline, "train_category", broken)
    assert main(["train", "--data-root", "textures", "--category", "x", "--output", "o"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "ZeroDivisionError" in err and "this is a bug" in err


@pytest.mark.parametrize("category", ["../../texture_grass", "/tmp/texture_grass"])
def test_reproduce_never_writes_outside_its_output(trained, tmp_path, capsys, category):
    """``output/setting/<category>/seedN`` must stay under output: a category is a name, not a path."""
    data = _copy_category(tmp_path)
    root = data / "a" / "b"  # root/../../texture_grass is a valid category folder
    root.mkdir(parents=True)
    out = tmp_path / "out" / "sweep"
    code = main(["reproduce", "--data-root", str(root), "--categories", category, "--seeds", "0", *TINY,
                 "--output", str(out)])
    _one_line_error(capsys, code, "plain name", category)
    assert not (tmp_path / "out").exists()


def _damage_first_anomaly(root, what):
    import cv2
    import numpy as np

    folder = root / "texture_grass"
    image = sorted(p for p in (folder / "test").glob("*/*.png") if p.parent.name != "good")[0]
    if what == "image":
        image.write_bytes(image.read_bytes()[:200])  # truncated file
        return image
    mask = folder / "ground_truth" / image.parent.name / f"{image.stem}_mask.png"
    cv2.imwrite(str(mask), np.zeros((17, 23), np.uint8))
    return mask


@pytest.mark.parametrize("what", ["image", "mask"])
def test_a_bad_test_image_or_mask_is_reported_before_training(trained, tmp_path, capsys, what):
    root = _copy_category(tmp_path)
    bad = _damage_first_anomaly(root, what)
    out = tmp_path / "run"
    code = main(["train", "--data-root", str(root), "--category", "texture_grass", *TINY, "--output", str(out)])
    _one_line_error(capsys, code, str(bad))
    assert not (out / "checkpoint.pt").exists()  # no epoch was trained


SIZE_FIELDS = ("name", "resize", "crop", "image_size", "epochs", "batch_size")


def test_like_borrows_every_setting_of_a_class_and_is_printed_and_stored(trained, tmp_path, capsys):
    """--like carpet: the stored config is get_config('carpet')'s but for name and sizes."""
    import dataclasses

    from nsa_tutorial.config import get_config

    out = tmp_path / "like"
    assert main(["train", "--data-root", "textures", "--category", "texture_grass", "--like", "carpet",
                 "--size-clip", "reference", *TINY, "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "settings for 'texture_grass' (own data): kind texture" in printed
    assert "size_clip reference" in printed and "evaluation: the whole image" in printed
    saved = torch.load(out / "model.pt", weights_only=False)["config"]
    carpet = dataclasses.asdict(get_config("carpet", mode="quick", size_clip="reference"))
    assert {k: v for k, v in saved.items() if k not in SIZE_FIELDS + ("score",)} == \
        {k: v for k, v in carpet.items() if k not in SIZE_FIELDS + ("score",)}
    assert saved["name"] == "texture_grass" and saved["image_size"] == 64
    assert saved["score"] == OWN_DATA_SCORE != carpet["score"] == "mean"  # own data is scored as own data

    out = tmp_path / "object"  # --kind object: source gradients, no flips; trained and scored whole
    assert main(["train", "--data-root", "textures", "--category", "texture_grass", "--kind", "object",
                 *TINY, "--output", str(out)]) == 0
    saved = torch.load(out / "model.pt", weights_only=False)["config"]
    assert (saved["kind"], saved["blend"], saved["vflip"]) == ("object", "normal", False)
    assert saved["crop"] is None and saved["size_clip"] == get_config("x").size_clip
    assert saved["resize"] > saved["image_size"] == 64  # random crops of the slightly larger image
    metrics = tmp_path / "object.json"
    assert main(["evaluate", "--data-root", "textures", "--category", "texture_grass",
                 "--checkpoint", str(out / "model.pt"), "--output", str(metrics)]) == 0
    assert json.loads(metrics.read_text())["resolution"] == 64  # the whole image, not a crop of a larger one


@pytest.mark.parametrize("argv, message", [
    (["--like", "marble"], "invalid choice: 'marble'"),
    (["--kind", "video"], "invalid choice: 'video'"),
    (["--size-clip", "half"], "invalid choice: 'half'"),
    (["--kind", "texture", "--like", "carpet"], "give kind or like, not both"),
    (["--score", "median"], "expected 'mean', 'max' or 'topP%' with 0 < P < 100 (e.g. top1%), got 'median'"),
    (["--score", "top100%"], "got 'top100%'"),
])
def test_bad_kind_like_and_size_clip_are_one_line_errors(trained, tmp_path, capsys, argv, message):
    for command in (["train", "--category", "texture_brick"], ["reproduce", "--categories", "texture_brick"]):
        assert main([command[0], "--data-root", "textures", *command[1:], *argv, *TINY,
                     "--output", str(tmp_path / "o")]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1


def test_score_is_set_at_training_and_used_by_calibration_evaluate_and_predict(trained, tmp_path, capsys):
    """--score top1%: stored in model.pt's config, the calibration is made under it, evaluate reports
    the image AUROC under it and under every other score, and predict decides with it."""
    out = tmp_path / "top"
    assert main(["train", "--data-root", "textures", "--category", "texture_brick", *TINY, "--score", "top1%",
                 "--calibration", "0.2", "--output", str(out)]) == 0
    saved = torch.load(out / "model.pt", weights_only=False)
    assert saved["config"]["score"] == "top1%" and saved["calibration"]["score"] == "top1%"
    assert main(["evaluate", "--data-root", "textures", "--category", "texture_brick",
                 "--checkpoint", str(out / "model.pt"), "--output", str(tmp_path / "m.json")]) == 0
    result = json.loads((tmp_path / "m.json").read_text())
    assert result["score"] == "top1%" and set(result["image_auroc_by_score"]) == {"mean", "max", "top1%"}
    assert result["image_auroc"] == result["image_auroc_by_score"]["top1%"]
    assert "image AUROC by score: mean" in capsys.readouterr().out
    from nsa_tutorial.sources import resolve_data_root

    folder = resolve_data_root("textures") / "texture_brick" / "test" / "good"
    assert main(["predict", "--checkpoint", str(out / "model.pt"), str(folder), "--output", str(tmp_path / "p")]) == 0
    predictions = json.loads((tmp_path / "p" / "predictions.json").read_text())
    assert predictions["image_threshold"] == saved["calibration"]["image_threshold"]
