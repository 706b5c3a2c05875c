"""Fault injection: kill a tiny training run (SIGKILL) at random points of its epoch and
checkpoint cycle, resume it each time, and check that

- no file in the run folder is ever unreadable (only ``.<name>.<random>.tmp`` files of
  interrupted writes may be partial, and a resume clears them);
- every run that was killed and resumed until it finished ends with exactly the weights and
  history of an uninterrupted run.

Runs in child processes of a fork server that has imported torch once, so that a kill and
restart costs milliseconds, not the seconds of a fresh interpreter; the network is a small
stand-in for NSAModel (what is tested is writing, killing and resuming, and a 140 MB
checkpoint per epoch would make 24 kills take minutes), with a 1M-float ballast parameter so
that each checkpoint write takes long enough for kills to land inside it.  Whatever the checkpoint
policy of :func:`nsa_tutorial.train.train`, the resumed weights must equal the uninterrupted
ones; if ``train`` takes a checkpoint interval, the shortest is passed so that kills land
between checkpoints of consecutive epochs.
"""

import inspect
import io
import json
import multiprocessing
import os
import signal
import sys
import threading
import time
from typing import Optional

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset
from tqdm import tqdm

from nsa_tutorial.config import get_config
from nsa_tutorial.checkpoint import FORMAT
from nsa_tutorial.train import train

pytestmark = pytest.mark.skipif(sys.platform == "win32" or "forkserver" not in multiprocessing.get_all_start_methods(),
                                reason="needs SIGKILL and the forkserver start method (POSIX)")

CONFIG = get_config("bottle", mode="quick").replace(image_size=32, resize=32, crop=None, batch_size=2, epochs=6)
KILLS = 24  # kill points: 12 at random times, 12 inside file writes
SEED = 12


class NoiseDataset(Dataset):
    """Four noise images with a bright square; flips use torch's global RNG, so a resume that
    did not restore the RNG state would end with other weights."""

    def __init__(self, n: int = 4, size: int = 32) -> None:
        rng = np.random.default_rng(0)
        self.images = torch.from_numpy(rng.random((n, 3, size, size), dtype=np.float32))
        self.labels = torch.zeros(n, 1, size, size)
        self.labels[:, :, 8:16, 8:16] = 1

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        image, label = self.images[i] + self.labels[i], self.labels[i]
        if torch.rand(()) < 0.5:
            image, label = image.flip(-1), label.flip(-1)
        return image, label


class SmallModel(torch.nn.Module):
    """Image -> 1-channel sigmoid map, as NSAModel, with few weights and a ballast parameter."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(),
                                        torch.nn.Conv2d(8, 1, 3, padding=1))
        self.ballast = torch.nn.Parameter(torch.zeros(1_000_000))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.conv(x) + self.ballast[:1].view(1, 1, 1, 1))


def _interval_option() -> dict:
    """The shortest checkpoint interval, if ``train`` has one (e.g. ``checkpoint_every``)."""
    for name, parameter in inspect.signature(train).parameters.items():
        if "checkpoint" in name and parameter.kind == parameter.KEYWORD_ONLY:
            return {name: 1 if isinstance(parameter.default, int) and not isinstance(parameter.default, bool)
                    else 1e-3}
    return {}


def _train_child(folder: str, kill_in_save: Optional[tuple] = None) -> None:
    """The training run, in a child process.

    ``kill_in_save=(k, fraction)``: the process SIGKILLs itself in its ``k``-th ``torch.save``
    (checkpoint or model file) after writing ``fraction`` of the bytes, wherever that write goes.
    """
    import nsa_tutorial.train

    nsa_tutorial.train.build_model = lambda config: SmallModel()
    tqdm.set_lock(threading.RLock())  # not tqdm's default multiprocessing lock, which a kill leaks
    torch.set_num_threads(1)
    sys.stdout = sys.stderr = open(os.devnull, "w")
    if kill_in_save is not None:
        torch.save = _dying_save(torch.save, *kill_in_save)
    train(CONFIG, NoiseDataset(), folder, device="cpu", progress=False, **_interval_option())


def _dying_save(save, k: int, fraction: float):
    calls = []

    def dying_save(obj, path, *args, **kwargs):
        calls.append(path)
        if len(calls) < k:
            return save(obj, path, *args, **kwargs)
        buffer = io.BytesIO()
        save(obj, buffer, *args, **kwargs)
        data = buffer.getvalue()
        with open(path, "wb") as f:
            f.write(data[: int(fraction * len(data))])
            f.flush()
            os.kill(os.getpid(), signal.SIGKILL)

    return dying_save


def _nothing() -> None:
    pass


def _check_readable(folder) -> int:
    """Every file in ``folder`` reads back whole, except temporaries; returns how many of those."""
    temporaries, epoch = 0, None
    for path in sorted(folder.iterdir()) if folder.exists() else []:  # killed before it made the folder
        if path.name.startswith(".") and path.name.endswith(".tmp"):
            temporaries += 1
        elif path.name == "checkpoint.pt":
            epoch = torch.load(path, weights_only=True)["epoch"]
        elif path.name == "history.json":
            history = json.loads(path.read_text())
            assert history["epoch"] == list(range(1, len(history["epoch"]) + 1)), path
        elif path.name == "model.pt":
            assert torch.load(path, weights_only=True)["format"] == FORMAT, path
        else:
            raise AssertionError(f"unexpected file {path}")
    if epoch is not None and (folder / "history.json").exists():
        # history.json is rewritten after every epoch, checkpoint.pt only every checkpoint_every
        # seconds: the history may run ahead of the checkpoint, never more than one epoch behind it
        assert len(json.loads((folder / "history.json").read_text())["epoch"]) >= epoch - 1
    return temporaries


def _same_run(a, b) -> bool:
    first, second = (torch.load(f / "model.pt", weights_only=True) for f in (a, b))
    return first["history"]["loss"] == second["history"]["loss"] and all(
        torch.equal(v, second["state_dict"][k]) for k, v in first["state_dict"].items())


def test_killed_and_resumed_runs_equal_an_uninterrupted_run(tmp_path):
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["torch", "nsa_tutorial.train", "nsa_tutorial.model"])

    def start(folder, kill_in_save=None):
        process = context.Process(target=_train_child, args=(str(folder), kill_in_save))
        process.start()
        return process

    warm_up = context.Process(target=_nothing)  # starts the fork server, which imports torch
    warm_up.start()
    warm_up.join()
    straight = tmp_path / "straight"
    begin = time.perf_counter()
    process = start(straight)
    process.join()
    assert process.exitcode == 0
    duration = time.perf_counter() - begin  # one whole run, start-up included

    rng = np.random.default_rng(SEED)
    kills, mid_write, finished, chain = 0, 0, [], 0
    folder = tmp_path / f"killed{chain}"
    while kills < KILLS:
        # Every other kill from outside at a random time, the others inside a random torch.save.
        in_save = (int(rng.integers(1, CONFIG.epochs + 2)), float(rng.uniform(0, 1))) if kills % 2 else None
        process = start(folder, in_save)
        process.join(timeout=duration if in_save else rng.uniform(0, duration))
        if process.is_alive():
            process.kill()  # SIGKILL; no error if the run ended between is_alive() and the kill (a race CI hit)
            process.join()
        if process.exitcode == -signal.SIGKILL:
            kills += 1
            mid_write += _check_readable(folder) > 0
            continue
        assert process.exitcode == 0  # it finished before its kill came: a complete run, compare it
        finished.append(folder)
        chain += 1
        folder = tmp_path / f"killed{chain}"
    if folder.exists():  # the last killed run: resume it to the end
        process = start(folder)
        process.join()
        assert process.exitcode == 0
        finished.append(folder)

    print(f"\n{kills} SIGKILLs ({mid_write} left a partial temporary file) over {len(finished)} runs; "
          f"an uninterrupted run takes {duration:.1f} s")
    assert kills >= 20 and finished
    for folder in finished:
        assert _check_readable(folder) == 0, f"temporary files left in {folder}"
        assert _same_run(straight, folder), f"{folder} differs from the uninterrupted run"
