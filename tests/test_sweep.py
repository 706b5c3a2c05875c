"""Many runs: ``reproduce --shard K/N`` (job arrays), ``--devices`` (one worker per device), ``--summarise-only``."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from nsa_tutorial.cli import main
from nsa_tutorial.sweep import claim, shard

TINY = ["--mode", "quick", "--image-size", "64", "--epochs", "1", "--batch-size", "8"]
CATEGORIES = ["texture_brick", "texture_grass", "texture_gravel"]
RUNS = {f"{c} seed 0" for c in CATEGORIES}


@pytest.fixture(scope="module")
def env(module_tmp):
    """One thread per process: runs in different processes compute in the same order (same metrics)."""
    return {**os.environ, "NSA_DATA_DIR": str(module_tmp("cache")), "OMP_NUM_THREADS": "1",
            "PYTHONPATH": str(Path(__file__).parents[1])}


def _reproduce(output, *extra, categories=CATEGORIES):
    return [sys.executable, "-m", "nsa_tutorial", "reproduce", "--data-root", "textures", "--categories",
            *categories, "--seeds", "0", *TINY, "--output", str(output), *extra]


def _metrics(output) -> dict:
    return {p.parent.parent.name: json.loads(p.read_text()) for p in Path(output).glob("*/*/seed0/metrics.json")}


def _finished_runs(stdout: str) -> set:
    return {line.split(":")[0] for line in stdout.splitlines() if ": finished (" in line}


@pytest.fixture(scope="module")
def unsharded(env, module_tmp):
    output = module_tmp("unsharded")
    done = subprocess.run(_reproduce(output), env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert _finished_runs(done.stdout) == RUNS
    return _metrics(output)


def test_two_shards_in_parallel_make_exactly_the_unsharded_runs(env, unsharded, tmp_path):
    shards = [subprocess.Popen(_reproduce(tmp_path, "--shard", f"{k}/2"), env=env, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE) for k in range(2)]
    outputs = [process.communicate(timeout=300) for process in shards]
    assert [process.returncode for process in shards] == [0, 0], [err[-2000:] for _, err in outputs]
    ran = [_finished_runs(out) for out, _ in outputs]
    assert ran[0] | ran[1] == RUNS and not ran[0] & ran[1]  # together the list, no run twice
    assert ran == [{"texture_brick seed 0", "texture_gravel seed 0"}, {"texture_grass seed 0"}]  # round robin
    metrics = _metrics(tmp_path)
    assert metrics.keys() == unsharded.keys()
    for name, result in metrics.items():
        for key in ("image_auroc", "pixel_auroc", "au_pro", "n_normal", "n_anomalous"):
            assert result[key] == unsharded[name][key], (name, key)  # identical, not close

    # the gathered tables hold all three; a finished run is never redone
    stamps = {p: p.stat().st_mtime_ns for p in tmp_path.glob("*/*/seed0/metrics.json")}
    gathered = subprocess.run(_reproduce(tmp_path, "--summarise-only"), env=env, capture_output=True, text=True)
    assert gathered.returncode == 0 and "3 of 3 runs finished" in gathered.stdout
    assert all(c in (tmp_path / "tables.md").read_text() for c in CATEGORIES)
    again = subprocess.run(_reproduce(tmp_path, "--shard", "0/2"), env=env, capture_output=True, text=True)
    assert again.returncode == 0 and again.stdout.count("done earlier") == 2
    assert stamps == {p: p.stat().st_mtime_ns for p in tmp_path.glob("*/*/seed0/metrics.json")}


def test_devices_run_one_worker_per_device_and_a_failure_stops_no_other(env, unsharded, tmp_path):
    done = subprocess.run(_reproduce(tmp_path, "--devices", "cpu,cpu", categories=[*CATEGORIES, "texture_nosuch"]),
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stderr[-2000:]
    assert "1 of 4 runs failed (texture_nosuch seed 0)" in done.stderr
    error = json.loads((tmp_path / "nsa_logistic" / "texture_nosuch" / "seed0" / "error.json").read_text())
    assert "texture_nosuch" in error["error"]
    assert _finished_runs(done.stdout) == RUNS
    metrics = _metrics(tmp_path)
    assert {n: m["image_auroc"] for n, m in metrics.items()} == {n: m["image_auroc"] for n, m in unsharded.items()}
    gathered = subprocess.run(_reproduce(tmp_path, "--summarise-only", categories=[*CATEGORIES, "texture_bark"]),
                              env=env, capture_output=True, text=True)
    assert gathered.returncode == 1 and "3 of 4 runs finished" in gathered.stdout
    assert "missing (not run yet, or running): texture_bark seed 0" in gathered.stdout


def test_a_run_another_process_holds_is_left_to_it(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("NSA_DATA_DIR", str(tmp_path / "cache"))
    run = tmp_path / "out" / "nsa_logistic" / "texture_grass" / "seed0"
    with claim(run) as ours:
        assert ours
        with claim(run) as again:
            assert not again  # the lock excludes a second holder, even in one process
        assert main(["reproduce", "--data-root", "textures", "--categories", "texture_grass", "--seeds", "0",
                     *TINY, "--output", str(tmp_path / "out")]) == 0
    assert "being run by another process" in capsys.readouterr().out
    assert not (run / "metrics.json").exists() and not (run / "checkpoint.pt").exists()


@pytest.mark.parametrize("n_runs, n", [(0, 1), (1, 3), (7, 2), (75, 8), (8, 8)])
def test_shards_are_disjoint_and_together_the_run_list(n_runs, n):
    runs = list(range(n_runs))
    parts = [shard(runs, k, n) for k in range(n)]
    assert sorted(r for part in parts for r in part) == runs
    assert max(map(len, parts)) - min(map(len, parts)) <= 1


@pytest.mark.parametrize("extra, message", [
    (["--shard", "2/2"], "expected K/N with 0 <= K < N"),
    (["--shard", "1"], "expected K/N"),
    (["--shard", "a/b"], "expected K/N"),
    (["--shard=-1/2"], "expected K/N"),
    (["--devices", "cuda:7"], "torch sees"),
    (["--devices", "gpu0"], "unknown device 'gpu0'"),
    (["--devices", "cpu,cpu", "--device", "cpu"], "either --device"),
])
def test_bad_scale_options_are_one_line_errors(tmp_path, capsys, extra, message):
    code = main(["reproduce", "--data-root", "textures", "--categories", "texture_grass", *TINY,
                 "--output", str(tmp_path), *extra])
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
