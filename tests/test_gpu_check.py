"""The GPU check (benchmarks/gpu_check.sh) on a machine without a GPU, and what it relies on."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_training import MVTEC_TRAIN_IMAGES, fixed_cost_fit, projected_minutes  # noqa: E402


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_gpu_check_fails_at_once_with_one_line_without_a_gpu(tmp_path):
    result = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh")], capture_output=True,
                            text=True, timeout=120, env={"PATH": "/usr/bin:/bin:" + str(Path(sys.executable).parent),
                                                         "OUT": str(tmp_path)})
    assert result.returncode == 1
    assert result.stdout == "" and len(result.stderr.strip().splitlines()) == 1
    assert "no CUDA GPU" in result.stderr
    assert not list(tmp_path.iterdir())  # nothing recorded


def test_textures_train_without_pooch_or_elpv(tmp_path):
    """The GPU machine has neither: importing the training code path and building the texture
    training set must not need them."""
    code = f"""
import sys
sys.modules["pooch"] = sys.modules["elpv_dataset"] = None  # any import of them fails
sys.path.insert(0, {str(ROOT / "benchmarks")!r})
import bench_training, nsa_tutorial.cli, nsa_tutorial.batched, nsa_tutorial.evaluate
from nsa_tutorial.config import get_config
config = get_config("bottle", image_size=64)
image, label = bench_training.texture_dataset(config, 3, __import__("pathlib").Path({str(tmp_path)!r}))[2]
assert image.shape == (3, 64, 64) and 0 <= label.min() <= label.max() <= 1
print("ok")
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                            cwd=ROOT, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("ok")


def test_fixed_cost_fit_recovers_a_and_b():
    runs = [{"images": n, "loop_s_per_epoch": 0.5 + 0.01 * n} for n in (64, 128)]
    fit = fixed_cost_fit(runs)
    assert fit["a_s_per_epoch"] == pytest.approx(0.5) and fit["b_s_per_image"] == pytest.approx(0.01)
    assert fit["a_fraction_of_epoch"] == pytest.approx([0.5 / 1.14, 0.5 / 1.78])


def test_projection_uses_each_class_epochs_images_and_size():
    minutes = projected_minutes({224: 0.001, 256: 0.002}, fixed_s_per_epoch=0.1)
    assert minutes["bottle_320_epochs_of_209"] == pytest.approx(320 * (209 * 0.001 + 0.1) / 60)
    assert minutes["per_class"]["hazelnut"] == pytest.approx(560 * (391 * 0.001 + 0.1) / 60)  # 560 epochs
    assert minutes["per_class"]["carpet"] == pytest.approx(320 * (280 * 0.002 + 0.1) / 60)  # 256 px
    assert minutes["all_15"] == pytest.approx(sum(minutes["per_class"].values()))
    assert len(minutes["per_class"]) == 15 and sum(MVTEC_TRAIN_IMAGES.values()) == 3629
    assert projected_minutes({224: 0.001}, 0.0) == {}  # no speed for 256 px: no projection


def test_merge_projects_from_the_unwrapped_gpu_run_and_copies_to_out(tmp_path, monkeypatch):
    import json

    import gpu_check

    parts = tmp_path / "parts"
    parts.mkdir()
    run = {"synthesis_on_device": True, "images": 209, "loop_s_per_epoch": 9.0, "plain": {"loop_s_per_epoch": 0.209}}
    (parts / "train_224.json").write_text(json.dumps({"runs": [run, {**run, "synthesis_on_device": False}]}))
    (parts / "failed").write_text("train_256\n")
    monkeypatch.setattr(gpu_check, "RESULTS", tmp_path / "results")
    monkeypatch.setenv("OUT", str(tmp_path / "out"))
    path = gpu_check.merge(parts)
    result = json.loads(path.read_text())
    assert result["failed_parts"] == ["train_256"] and "commit" in result and "date" in result
    minutes = result["projection"]["minutes"]
    assert minutes["bottle_320_epochs_of_209"] == pytest.approx(320 * 0.209 / 60)  # 1 ms per image
    assert result["projection"]["s_per_image"]["256"] == pytest.approx(0.001 * (256 / 224) ** 2)
    assert json.loads((tmp_path / "out" / path.name).read_text()) == result


def test_optional_size_clip_ab_reproduces_both_rules_and_collects_their_summaries(tmp_path, monkeypatch):
    """gpu_check.py ab_size_clip: one resumable `reproduce` per rule, in its own folder, on the four
    classes; the part file holds both rules' summaries (a stand-in for the CLI writes them)."""
    import json

    import gpu_check

    calls = []

    def fake_cli(argv):
        calls.append(argv)
        folder = Path(argv[argv.index("--output") + 1])
        folder.mkdir(parents=True)
        clip = argv[argv.index("--size-clip") + 1]
        (folder / "results.json").write_text(json.dumps(
            {"nsa_logistic": {"screw": {"image_auroc": {"mean": 0.9 if clip == "paper" else 0.8}}},
             "size_clip": {"nsa_logistic": [clip]}, "failed": []}))
        return 0

    (tmp_path / "mvtec").mkdir()
    monkeypatch.setenv("NSA_MVTEC_ROOT", str(tmp_path / "mvtec"))
    monkeypatch.setenv("NSA_AB_OUTPUT", str(tmp_path / "ab"))
    gpu_check.ab_size_clip(tmp_path / "part.json", cli=fake_cli)
    part = json.loads((tmp_path / "part.json").read_text())
    assert [a[a.index("--size-clip") + 1] for a in calls] == ["paper", "reference"]
    for argv in calls:
        assert argv[argv.index("--categories") + 1:argv.index("--seeds")] == list(gpu_check.AB_CLASSES)
        assert argv[argv.index("--mode") + 1] == "full" and argv[argv.index("--data-root") + 1] == str(tmp_path / "mvtec")
    assert part["paper"]["size_clip"] == {"nsa_logistic": ["paper"]}
    assert part["reference"]["nsa_logistic"]["screw"]["image_auroc"]["mean"] == 0.8


@pytest.mark.parametrize("root", [None, "missing"])
def test_size_clip_ab_is_skipped_with_a_message_without_mvtec(tmp_path, monkeypatch, capsys, root):
    import gpu_check

    if root is None:
        monkeypatch.delenv("NSA_MVTEC_ROOT", raising=False)
    else:
        monkeypatch.setenv("NSA_MVTEC_ROOT", str(tmp_path / root))
    gpu_check.ab_size_clip(tmp_path / "part.json", cli=lambda argv: pytest.fail("nothing may run"))
    assert "ab_size_clip skipped: set NSA_MVTEC_ROOT" in capsys.readouterr().out
    assert not (tmp_path / "part.json").exists()  # no part: merge records nothing for it
