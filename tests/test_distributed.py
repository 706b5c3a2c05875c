"""One run on two processes (DDP over gloo, on the CPU) against the same run in one process."""

import datetime
import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch.utils.data import Dataset

import nsa_tutorial.train as nsa_train
from nsa_tutorial import checkpoint, distributed
from nsa_tutorial.config import get_config
from nsa_tutorial.distributed import ShardSampler
from nsa_tutorial.training_set import EpochSampler, epoch_loader

CONFIG = get_config("bottle", mode="quick").replace(image_size=64, resize=64, crop=None, batch_size=4, epochs=2)


class IndexDataset(Dataset):
    """11 noise images with a brighter square (batches of 4, 4 and 3: the last one splits 2 + 1).

    A process that is told to (``stop_rank``) sends itself SIGTERM in epoch 0, as a scheduler would.
    """

    def __init__(self, stop_rank: int = -1, ulp: bool = False) -> None:
        rng = np.random.default_rng(0)
        self.images = torch.from_numpy(rng.random((11, 3, 64, 64), dtype=np.float32)) * 0.5
        self.labels = torch.zeros(11, 1, 64, 64)
        for i, (top, left) in enumerate(rng.integers(0, 32, (11, 2))):
            self.labels[i, :, top:top + 16, left:left + 16] = 1
        self.images += 0.5 * self.labels
        if ulp:  # every pixel one float32 step up: a reference for float noise
            self.images = torch.nextafter(self.images, torch.tensor(2.0))
        self.stop_rank, self.epoch = stop_rank, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        if self.epoch == 0 and dist.is_initialized() and dist.get_rank() == self.stop_rank:
            self.stop_rank = -1
            os.kill(os.getpid(), signal.SIGTERM)
        return self.images[i], self.labels[i]


class SamePairsDataset(IndexDataset):
    """Every raw pair the same (dest, src) pair of uint8 images, for synthesis on the device: what
    two ranks synthesise can then differ only by the seeds of their generators."""

    def raw_pair(self, i: int):
        image = (self.images[0].permute(1, 2, 0) * 255).to(torch.uint8)
        return image, image.flip(0)


def _record_synthesis(path: Path):
    """A ``train._synthesise`` that also saves the first batch it makes."""
    synthesise = nsa_train._synthesise

    def record(batch, **kwargs):
        images, labels = synthesise(batch, **kwargs)
        if not path.exists():
            torch.save(images, path)
        return images, labels
    return record


def _signal_after(save):
    """``checkpoint.save_checkpoint`` that sends SIGTERM to its process after writing epoch 1's checkpoint:
    after the processes agreed to go on, as a scheduler's signal may come at any time."""
    def save_and_signal(*args):
        save(*args)
        if args[3] == 1:
            os.kill(os.getpid(), signal.SIGTERM)
    return save_and_signal


def _worker(rank: int, world: int, port: int, root: str, actions: list) -> None:
    """Run ``actions`` in one of ``world`` processes: ("train", folder, kwargs), ("copy", from, to)
    by rank 0, ("gradients", file): the gradients of batches 0 and 2 of epoch 0."""
    torch.set_num_threads(1)  # the same summation order in every process
    if world > 1:
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world,
                                timeout=datetime.timedelta(seconds=120))  # a bug fails, not hangs
    if rank > 0:  # only rank 0 writes
        def refuse(*args, **kwargs):
            raise AssertionError(f"rank {rank} wrote a file")
        checkpoint.atomic_write = refuse
    root = Path(root)
    try:
        for action, *what in actions:
            if action == "train":
                kwargs = dict(what[1])
                torch.set_num_threads(kwargs.pop("threads", 1))
                save = checkpoint.save_checkpoint
                if kwargs.pop("late_signal", False) and rank == 0:
                    checkpoint.save_checkpoint = _signal_after(save)
                try:
                    nsa_train.train(CONFIG, IndexDataset(kwargs.pop("stop_rank", -1), kwargs.pop("ulp", False)),
                                    root / what[0],
                                    device="cpu", progress=False, **{"checkpoint_every": 1e9, **kwargs})
                except KeyboardInterrupt:  # the SIGTERM: the next call resumes
                    pass
                checkpoint.save_checkpoint = save
            elif action == "copy" and rank == 0:
                shutil.copytree(root / what[0], root / what[1])
            elif action == "refused" and rank == 0:  # an odd global batch
                try:
                    nsa_train.train(CONFIG.replace(batch_size=7), IndexDataset(), root / "odd", device="cpu")
                except ValueError as error:
                    (root / "refused.txt").write_text(str(error))
            elif action == "refused":
                with pytest.raises(ValueError):
                    nsa_train.train(CONFIG.replace(batch_size=7), IndexDataset(), root / "odd", device="cpu")
            elif action == "gradients":
                _gradients(root / what[0])
            elif action == "batched":  # synthesis on the device, one batch
                synthesise, nsa_train._synthesise = nsa_train._synthesise, _record_synthesis(root / f"batched{rank}.pt")
                nsa_train.train(CONFIG.replace(epochs=1), SamePairsDataset(), root / "batched", device="cpu",
                                progress=False, synthesis_on_device=True, max_steps_per_epoch=1)
                nsa_train._synthesise = synthesise
    finally:
        if world > 1:
            dist.destroy_process_group()


def _gradients(path: Path) -> None:
    """In float64, so that float noise cannot flip a ReLU or max-pool decision between the runs
    (in float32 one flip changes the gradients upstream of it by ~1e-3 of the largest)."""
    torch.manual_seed(0)
    model = nsa_train.build_model(CONFIG).double()
    model.activation = torch.nn.Sigmoid()  # the model's casts to float32
    ddp = distributed.wrap(model, torch.device("cpu"))
    loader = distributed.shard(epoch_loader(IndexDataset(), CONFIG.batch_size, 0, torch.device("cpu")),
                               CONFIG.batch_size)
    loader.sampler.set_epoch(0, 0)
    gradients = {}
    for step, (image, label) in enumerate(loader):
        if step in (0, 2):  # a full batch (2 + 2 on two processes) and the last (2 + 1)
            model.zero_grad()
            loss = F.binary_cross_entropy((ddp or model)(image.double()), label.double())
            (loss * distributed.loss_weight(loader, step)).backward()
            gradients[step] = {name: p.grad.clone() for name, p in model.named_parameters()}
    if distributed.is_main():
        torch.save(gradients, path)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _spawn(world: int, root: Path, *actions) -> None:
    mp.spawn(_worker, args=(world, _free_port(), str(root), list(actions)), nprocs=world)


@pytest.fixture(scope="module")
def runs(module_tmp):
    root = module_tmp("ddp")
    _spawn(2, root, ("refused",), ("batched",), ("gradients", "two.grad"), ("train", "two", {}), ("train", "two_workers", {"num_workers": 1}),
           # SIGTERM to rank 1 only: both finish epoch 1, checkpoint and stop; then resume
           ("train", "stopped", {"stop_rank": 1}), ("copy", "stopped", "two_one"), ("train", "stopped", {}),
           # SIGTERM to rank 0 after the processes agreed to go on: all go on, then stop (here: the end)
           ("train", "late", {"late_signal": True, "checkpoint_every": 0}))
    _spawn(1, root, ("gradients", "one.grad"), ("train", "one", {}),
           ("train", "two_one", {}),  # epoch 1 on 2 processes, epoch 2 on 1
           ("train", "one_2_threads", {"threads": 2}),  # another order of float sums
           ("train", "one_ulp", {"ulp": True}))  # inputs one float step away
    load = lambda name: torch.load(root / name, weights_only=True)  # noqa: E731
    return {name: load(f"{name}/model.pt") for name in ("one", "two", "two_workers", "stopped", "late", "two_one", "one_2_threads", "one_ulp")} | \
        {"gradients": (load("one.grad"), load("two.grad"))} | \
        {"batched": [load(f"batched{rank}.pt") for rank in (0, 1)], "refused": (root / "refused.txt").read_text()}


def _max_difference(a: dict, b: dict, buffers: bool = False) -> tuple[float, float]:
    weights = max((a["state_dict"][k].double() - b["state_dict"][k].double()).abs().max().item()
                  for k in a["state_dict"] if buffers or "running" not in k and "num_batches" not in k)
    losses = float(np.max(np.abs(np.subtract(a["history"]["loss"], b["history"]["loss"]))))
    return weights, losses


def test_two_processes_compute_the_gradient_of_one_process(runs):
    """The gradient of the global batch's mean loss, BatchNorm over the global batch, also for a last
    batch split 2 + 1: in float64 the same up to the order of the sums (~1e-15 relative)."""
    one, two = runs["gradients"]
    for step in (0, 2):
        scale = max(g.abs().max().item() for g in one[step].values())
        worst = max((one[step][k] - two[step][k]).abs().max().item() for k in one[step])
        print(f"batch {step}: max |gradient difference| {worst:.3g} of max |gradient| {scale:.3g}")
        assert worst < 1e-10 * scale


def _float_noise(runs) -> tuple[float, float]:
    """How far the same one-process run moves from float noise alone: the larger of two samples,
    every input pixel one float32 step up, and two threads instead of one (another order of sums)."""
    ulp, threads = _max_difference(runs["one"], runs["one_ulp"]), _max_difference(runs["one"], runs["one_2_threads"])
    return max(ulp[0], threads[0]), max(ulp[1], threads[1])


#: Each float-noise figure is one sample of a chaotic process: the epoch losses of the DDP run were
#: 1 times that sample on one machine and 4 times on another (weights: 1 times on both).  The
#: gradients themselves are compared exactly (to 1e-10) in float64 above.
LOSS_NOISE_FACTOR = 10


def test_two_processes_train_like_one_process(runs):
    """In float32 a 6-step run is sensitive to float noise: a ReLU or max-pool decision that the
    order of sums flips changes the gradients upstream of it, and Adam's first steps move every
    weight by about +-lr whatever the size of its gradient.  So the tolerance is that sensitivity,
    measured: the same one-process run with its inputs one float step away, or on two threads.  The
    DDP run's weights may differ from the one-process run's by at most 3 times that (measured: about 1
    times) and by the Adam bound of 2 x the sum of the steps' learning rates; its epoch losses by
    LOSS_NOISE_FACTOR times."""
    steps_lr = 3 * sum(runs["one"]["history"]["lr"])  # 3 steps per epoch
    assert runs["one"]["state_dict"].keys() == runs["two"]["state_dict"].keys()
    weights, losses = _max_difference(runs["one"], runs["two"])
    noise = _float_noise(runs)
    print(f"2 processes vs 1: max |weight difference| {weights:.3g}, max |loss difference| {losses:.3g}; "
          f"float noise of 1 process: {noise[0]:.3g}, {noise[1]:.3g}; Adam bound {2 * steps_lr:.3g}")
    assert weights < min(2 * steps_lr, 3 * noise[0] + 1e-5) and losses < LOSS_NOISE_FACTOR * noise[1] + 1e-5
    assert runs["one"]["history"]["epoch"] == runs["two"]["history"]["epoch"] == [1, 2]
    # not vacuous: training moved the weights far more than that
    fresh = nsa_train.build_model(CONFIG).state_dict()
    assert max((fresh[k] - runs["one"]["state_dict"][k]).abs().max().item()
               for k in fresh if "running" not in k and "num_batches" not in k) > 10 * steps_lr


def test_each_rank_synthesises_its_part_of_a_batch_with_its_own_seed(runs):
    """Synthesis on the device draws from one generator per batch: seeded alike, the two ranks would
    make the same anomalies on the same pair."""
    first, second = runs["batched"]
    assert first.shape == second.shape == (CONFIG.batch_size // 2, 3, 64, 64)
    assert not torch.equal(first, second)


@pytest.mark.parametrize("run", ["stopped", "late"])
def test_a_ddp_run_stopped_by_sigterm_on_one_rank_resumes_to_the_same_weights(runs, run):
    straight, resumed = runs["two"], runs[run]
    for key, value in straight["state_dict"].items():
        assert torch.equal(value, resumed["state_dict"][key]), key
    assert straight["history"]["loss"] == resumed["history"]["loss"]


def test_dataloader_workers_under_ddp_give_the_same_run(runs):
    for key, value in runs["two"]["state_dict"].items():
        assert torch.equal(value, runs["two_workers"]["state_dict"][key]), key


def test_a_checkpoint_of_two_processes_resumes_on_one(runs):
    assert runs["two_one"]["history"]["epoch"] == [1, 2]
    assert runs["two_one"]["history"]["loss"][0] == runs["two"]["history"]["loss"][0]
    weights, losses = _max_difference(runs["one"], runs["two_one"])
    noise = _float_noise(runs)
    assert weights < 3 * noise[0] + 1e-5 and losses < LOSS_NOISE_FACTOR * noise[1] + 1e-5


@pytest.mark.parametrize("n, batch, world", [(11, 4, 2), (12, 4, 2), (10, 6, 3), (7, 8, 4)])
def test_shards_are_disjoint_slices_of_each_global_batch(n, batch, world):
    whole = EpochSampler(n)
    whole.set_epoch(3, 3003)
    order = [index for _, _, index in whole]
    parts = [list(ShardSampler(whole, batch, r, world)) for r in range(world)]
    local = batch // world
    for step in range(-(-n // batch)):
        taken = [key[2] for part in parts for key in part[step * local:(step + 1) * local]]
        assert taken == order[step * batch:(step + 1) * batch]  # rank 0's slice, then rank 1's, ...
    assert sorted(i for part in parts for _, _, i in part) == list(range(n))
    weights = [[ShardSampler(whole, batch, r, world).loss_weight(s) for r in range(world)]
               for s in range(-(-n // batch))]
    assert all(sum(w) == pytest.approx(world) for w in weights)  # DDP's mean of them is 1


def _torchrun(*argv, env: dict, nproc: int = 2) -> subprocess.CompletedProcess:
    torchrun = Path(sys.executable).with_name("torchrun")
    return subprocess.run([str(torchrun), "--nproc-per-node", str(nproc), "--master-port", str(_free_port()),
                           "-m", "nsa_tutorial", *argv], env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def cli_env(module_tmp):
    return {**os.environ, "NSA_DATA_DIR": str(module_tmp("cache")), "OMP_NUM_THREADS": "1",
            "PYTHONPATH": str(Path(__file__).parents[1])}


def test_torchrun_trains_one_model_and_calibrates_once(cli_env, tmp_path):
    from nsa_tutorial.checkpoint import load_calibration

    argv = ["train", "--data-root", "textures", "--category", "texture_grass", "--mode", "quick",
            "--image-size", "64", "--epochs", "1", "--batch-size", "8", "--device", "cpu", "--output", str(tmp_path)]
    done = _torchrun(*argv, env=cli_env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("model written to") == 1  # rank 0 reports, once
    saved = torch.load(tmp_path / "model.pt", weights_only=True)
    assert saved["history"]["epoch"] == [1]
    # 60 normal images, 20 % held back: 12 scored once each (not 24), by rank 0 only
    assert load_calibration(tmp_path / "model.pt")["n_images"] == 12
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt", "history.json", "model.pt"]


def test_only_train_runs_under_torchrun(monkeypatch, tmp_path, capsys):
    """A sweep is many one-process runs (reproduce --shard / --devices), not one torchrun job."""
    from nsa_tutorial.cli import main

    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(["reproduce", "--data-root", "textures", "--output", str(tmp_path)]) == 2
    assert "only 'train' runs under torchrun" in capsys.readouterr().err


def test_the_global_batch_must_divide_by_the_processes(runs):
    assert runs["refused"] == "batch size 7 does not divide by the 2 processes; the global batch is kept " \
        "as configured: use a multiple of 2"
