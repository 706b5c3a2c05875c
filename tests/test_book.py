"""nsa_tutorial.book: the glue shim, the Colab run folder and the T4 time."""

import json
import sys
import types
from pathlib import Path

import pytest
import torch

from nsa_tutorial import book


def test_glue_uses_myst_nb_in_a_book_build(monkeypatch):
    calls = []
    monkeypatch.setattr(book, "_myst_nb_glue", lambda: lambda *args, **kw: calls.append((args, kw)))
    book.glue("x", 1.5, display=False)
    assert calls == [(("x", 1.5), {"display": False})]


def test_glue_hands_myst_nb_plain_numbers_for_numpy_scalars(monkeypatch):
    """Defect reproduced: myst-nb formats a glued number from its text/plain repr, and for an
    np.float64 that is 'np.float64(6.45)': '{glue:text}`x:.0f`' failed the book build."""
    import numpy as np

    calls = []
    monkeypatch.setattr(book, "_myst_nb_glue", lambda: lambda name, value, **kw: calls.append(value))
    for value in (np.float64(6.45), np.float32(0.5), np.int64(3), np.bool_(True)):
        book.glue("x", value, display=False)
    assert calls == [6.45, 0.5, 3, True] and [type(v) for v in calls] == [float, float, int, bool]
    assert repr(calls[0]) == "6.45"  # what myst-nb parses


def test_glue_without_myst_nb_prints_hidden_values_and_displays_the_others(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "myst_nb", None)  # import myst_nb now raises ImportError
    assert book._myst_nb_glue() is None
    book.glue("lr_last", 1.0000000001e-6, display=False)
    book.glue("n", 3, display=False)
    assert capsys.readouterr().out == "lr_last = 1e-06\nn = 3\n"
    book.glue("shown", "some text")  # display=True: IPython's display prints the repr outside a kernel
    assert "some text" in capsys.readouterr().out


def fake_colab(monkeypatch, tmp_path):
    """Put a google.colab with a drive.mount that records its mount point into sys.modules."""
    mounted = []
    drive = types.SimpleNamespace(mount=lambda point: (mounted.append(point),
                                                       (tmp_path / "drive" / "MyDrive").mkdir(parents=True)))
    colab = types.ModuleType("google.colab")
    colab.drive = drive
    monkeypatch.setitem(sys.modules, "google", types.ModuleType("google"))
    monkeypatch.setitem(sys.modules, "google.colab", colab)
    return mounted


def test_run_root_off_colab_is_the_default_or_nsa_run_dir(monkeypatch, tmp_path):
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    monkeypatch.delenv("NSA_RUN_DIR", raising=False)
    assert not book.on_colab()
    assert book.run_root("../_build/runs") == book.Path("../_build/runs")
    monkeypatch.setenv("NSA_RUN_DIR", str(tmp_path))
    assert book.run_root() == tmp_path
    with pytest.raises(RuntimeError, match="Colab only"):
        book.drive_run_root()


def test_run_root_on_colab_mounts_drive_and_creates_the_folder(monkeypatch, tmp_path):
    mounted = fake_colab(monkeypatch, tmp_path)
    monkeypatch.delenv("NSA_RUN_DIR", raising=False)
    monkeypatch.setenv("NSA_DRIVE_MOUNT", str(tmp_path / "drive"))
    assert book.on_colab()
    root = book.run_root()
    assert mounted == [str(tmp_path / "drive")]
    assert root == tmp_path / "drive" / "MyDrive" / book.DRIVE_RUN_FOLDER and root.is_dir()
    assert book.run_root(use_drive=False) == book.Path("../_build/runs")
    monkeypatch.setenv("NSA_RUN_DIR", str(tmp_path / "mine"))  # an explicit folder wins, no mount
    assert book.run_root() == tmp_path / "mine" and len(mounted) == 1


@pytest.mark.parametrize("colab, cuda, expected", [(True, False, "load"), (True, True, "train"),
                                                    (False, False, "train"), (False, True, "train")])
def test_train_or_load_loads_by_default_only_on_a_colab_cpu_runtime(monkeypatch, tmp_path, colab, cuda, expected):
    if colab:
        fake_colab(monkeypatch, tmp_path)
    else:
        monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    assert book.train_or_load("auto") == expected
    assert book.train_or_load("train") == "train" and book.train_or_load("load") == "load"
    with pytest.raises(ValueError, match="'auto', 'train' or 'load'"):
        book.train_or_load("pretrained")


def test_t4_estimate_follows_its_assumptions(tmp_path):
    est = book.t4_training_time(10.0, n_train=100, epochs=50, results_dir=tmp_path)
    a = est["assumptions"]
    expected = 50 * 100 * a["backward_factor"] * 10.0 / (a["t4_peak_tflops_fp16"] * 1e3 * a["utilisation"]) / 60
    assert est["source"] == "estimate" and est["minutes"] == pytest.approx(expected)
    slower = book.t4_training_time(10.0, 100, 50, assumptions={"utilisation": a["utilisation"] / 2})
    assert slower["minutes"] == pytest.approx(2 * expected)
    with pytest.raises(ValueError, match="positive"):
        book.t4_training_time(10.0, 0, 50)


def test_t4_time_prefers_a_recorded_t4_result(tmp_path):
    (tmp_path / "a-cpu.json").write_text(json.dumps({"gpu": None, "seconds_per_epoch": 99.0}))
    (tmp_path / "b-t4.json").write_text(json.dumps({"gpu": "Tesla T4", "seconds_per_epoch": 12.0, "n_train": 200}))
    rec = book.t4_training_time(10.0, n_train=100, epochs=320, results_dir=tmp_path)
    assert rec == {"minutes": pytest.approx(320 * 12.0 * 0.5 / 60), "source": "recorded", "file": "b-t4.json"}


def test_forward_gflops_of_a_single_convolution():
    conv = torch.nn.Conv2d(3, 8, kernel_size=3, padding=1, bias=False)
    # 8 output channels x 16 x 16 pixels x (3 x 3 x 3) multiply-adds, 2 FLOPs each
    assert book.forward_gflops(conv, 16) == pytest.approx(2 * 8 * 16 * 16 * 27 / 1e9)
    assert conv.training  # mode restored


def test_set_aside_moves_a_run_and_never_deletes_it(tmp_path):
    from nsa_tutorial.book import set_aside

    run = tmp_path / "runs" / "mono"
    assert set_aside(run) is None  # nothing there: nothing to move
    moved = []
    for i in range(3):  # the same second three times: each gets its own name
        run.mkdir(parents=True)
        (run / "checkpoint.pt").write_bytes(bytes([i]))
        moved.append(set_aside(run))
        assert not run.exists()
    assert len(set(moved)) == 3
    assert sorted(p.joinpath("checkpoint.pt").read_bytes() for p in moved) == [b"\x00", b"\x01", b"\x02"]
    assert all(p.parent == run.parent and p.name.startswith("mono.old-") for p in moved)


def test_no_chapter_deletes_a_run_folder():
    """Chapters resume their runs; RESTART moves a run aside (set_aside).  Deleting is left to the
    chapters' own temporary folders (tempfile), never a folder under the run root."""
    import re

    book = Path(__file__).resolve().parent.parent / "book"
    for chapter in sorted(book.glob("*.md")):
        for line in chapter.read_text().splitlines():
            if "rmtree(" in line:
                assert not re.search(r"rmtree\((RUN|TEXTURE_RUN|RUN_ROOT)", line), f"{chapter.name}: {line.strip()}"
