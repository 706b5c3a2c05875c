"""Tests for nsa_tutorial.train and the modules it runs on (checkpoint, training_set, runtime):
learning, exact resume, atomic checkpoints, model files."""

import contextlib
import dataclasses
import io
import json
import math
import os
import signal

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset

import nsa_tutorial
import nsa_tutorial.train as nsa_train
from nsa_tutorial import checkpoint, runtime
from nsa_tutorial.checkpoint import FORMAT, FORMAT_VERSION, load_model
from nsa_tutorial.config import get_config
from nsa_tutorial.model import NSAModel
from nsa_tutorial.runtime import pick_device
from nsa_tutorial.train import train
from nsa_tutorial.training_set import STREAMS, epoch_loader, stream_seed

CONFIG = get_config("bottle", mode="quick").replace(
    image_size=64, resize=64, crop=None, batch_size=4, epochs=2)


class SquareDataset(Dataset):
    """Noise images with a brighter square and its mask as label.

    ``__getitem__`` flips with torch's global RNG, so a resume that forgot to restore
    the RNG state would see other flips and end with other weights.
    """

    def __init__(self, n: int = 8, size: int = 64, interrupt_at_epoch: int = -1) -> None:
        rng = np.random.default_rng(0)
        self.images = torch.from_numpy(rng.random((n, 3, size, size), dtype=np.float32)) * 0.5
        self.labels = torch.zeros(n, 1, size, size)
        for i, (top, left) in enumerate(rng.integers(0, size // 2, (n, 2))):
            self.labels[i, :, top:top + size // 4, left:left + size // 4] = 1
        self.images += 0.5 * self.labels
        self.epochs_seen, self.interrupt_at_epoch = [], interrupt_at_epoch

    def set_epoch(self, epoch: int) -> None:
        self.epochs_seen.append(epoch)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        if self.epochs_seen and self.epochs_seen[-1] == self.interrupt_at_epoch:
            raise KeyboardInterrupt
        image, label = self.images[i], self.labels[i]
        if torch.rand(()) < 0.5:
            image, label = image.flip(-1), label.flip(-1)
        return image, label


def quiet_train(*args, **kwargs):
    return train(*args, device="cpu", progress=False, **kwargs)


def test_loss_decreases_on_a_fixed_batch(tmp_path):
    config = CONFIG.replace(epochs=5)
    history = quiet_train(config, SquareDataset(n=4), tmp_path)  # one batch per epoch
    losses = history["loss"]
    assert losses[-1] < 0.8 * losses[0]
    assert losses[-1] < losses[len(losses) // 2] < losses[0]


@pytest.fixture(scope="module")
def runs(module_tmp):
    """A straight 2-epoch run and one stopped after epoch 1 and resumed, with their datasets."""
    root = module_tmp("runs")
    straight, first, second = SquareDataset(), SquareDataset(), SquareDataset()
    output = io.StringIO()
    with contextlib.redirect_stdout(output):
        history = quiet_train(CONFIG, straight, root / "straight")
        quiet_train(CONFIG, first, root / "resumed", epochs=1)
        quiet_train(CONFIG, second, root / "resumed", resume=True)
    return dict(root=root, history=history, datasets=(straight, first, second), stdout=output.getvalue())


def test_interrupted_and_resumed_run_equals_uninterrupted_run(runs):
    assert "Resumed from epoch 1" in runs["stdout"]
    assert [d.epochs_seen for d in runs["datasets"]] == [[0, 1], [0], [1]]
    straight = torch.load(runs["root"] / "straight" / "model.pt", weights_only=True)
    resumed = torch.load(runs["root"] / "resumed" / "model.pt", weights_only=True)
    assert straight["state_dict"].keys() == resumed["state_dict"].keys()
    for key, value in straight["state_dict"].items():
        assert torch.equal(value, resumed["state_dict"][key]), key
    assert straight["history"]["loss"] == resumed["history"]["loss"]


def test_history_has_one_entry_per_epoch(runs):
    history = runs["history"]
    assert history == json.loads((runs["root"] / "straight" / "history.json").read_text())
    assert history["epoch"] == [1, 2]
    assert all(len(values) == CONFIG.epochs for values in history.values())
    assert all(v > 0 for v in history["samples_per_s"] + history["seconds"] + history["peak_memory_mb"])
    # Cosine annealing, stepped per epoch: lr_e = lr_min + (lr - lr_min) (1 + cos(pi e / E)) / 2
    c = CONFIG
    expected = [c.lr_min + (c.lr - c.lr_min) * (1 + math.cos(math.pi * e / c.epochs)) / 2
                for e in range(c.epochs)]
    assert history["lr"] == pytest.approx(expected)


def test_max_steps_per_epoch_limits_the_samples(tmp_path):
    history = quiet_train(CONFIG.replace(epochs=1), SquareDataset(), tmp_path, max_steps_per_epoch=1)
    samples = history["samples_per_s"][0] * history["seconds"][0]
    assert samples == pytest.approx(CONFIG.batch_size)


def test_load_model_round_trip(runs):
    path = runs["root"] / "straight" / "model.pt"
    model, config = load_model(path)
    assert config == CONFIG and not model.training
    saved = torch.load(path, weights_only=True)
    assert saved["package_version"] == nsa_tutorial.__version__
    assert all(torch.equal(v, saved["state_dict"][k]) for k, v in model.state_dict().items())


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    quiet_train(CONFIG, SquareDataset(), tmp_path, epochs=1)
    checkpoint = tmp_path / "checkpoint.pt"
    assert not list(tmp_path.glob("*.tmp"))
    assert torch.load(checkpoint, weights_only=True)["epoch"] == 1
    before = checkpoint.read_bytes()

    def crash_midway(obj, path, *args, **kwargs):
        with open(path, "wb") as f:
            f.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crash_midway)
    with pytest.raises(OSError, match="disk full"):
        quiet_train(CONFIG, SquareDataset(), tmp_path)
    assert checkpoint.read_bytes() == before
    assert not list(tmp_path.glob("*.tmp"))


class SignalDataset(SquareDataset):
    """Sends ``signum`` to its own process at the first item of epoch ``at_epoch``."""

    def __init__(self, signum: int, at_epoch: int) -> None:
        super().__init__()
        self.signum, self.at_epoch, self.sent = signum, at_epoch, False

    def __getitem__(self, i: int):
        if self.epochs_seen[-1] == self.at_epoch and not self.sent:
            self.sent = True
            os.kill(os.getpid(), self.signum)
        return super().__getitem__(i)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_and_sigterm_finish_the_epoch_checkpoint_and_resume_exactly(runs, tmp_path, capsys, signum):
    """Ctrl-C or SIGTERM during epoch 1: the epoch ends, checkpoint.pt holds it, and the resumed
    run ends with the weights of the uninterrupted one (although the clock never asked for a
    checkpoint)."""
    handler = signal.getsignal(signum)
    with pytest.raises(KeyboardInterrupt):
        quiet_train(CONFIG, SignalDataset(signum, at_epoch=0), tmp_path, checkpoint_every=math.inf)
    assert signal.getsignal(signum) == handler  # train() puts the previous handler back
    assert "resume" in capsys.readouterr().err
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=True)["epoch"] == 1
    assert not (tmp_path / "model.pt").exists()
    history = quiet_train(CONFIG, SquareDataset(), tmp_path)
    assert history["epoch"] == [1, 2] and history["loss"] == runs["history"]["loss"]
    assert_same_weights(tmp_path / "model.pt", runs["root"] / "straight" / "model.pt")


def assert_same_weights(path_a, path_b) -> None:
    a, b = (torch.load(p, weights_only=True)["state_dict"] for p in (path_a, path_b))
    assert a.keys() == b.keys()
    for key, value in a.items():
        assert torch.equal(value, b[key]), key


def test_interruption_between_checkpoints_resumes_from_the_last_one(tmp_path, monkeypatch, capsys):
    """A clock 10 s per epoch and checkpoint_every=15 s: checkpoints after epochs 2 and 4 only.
    A hard interruption in epoch 4 loses epoch 3; the resumed run redoes it and ends with the
    weights of an uninterrupted run."""
    config = CONFIG.replace(epochs=4)
    straight = SquareDataset(n=4)
    saves = []
    save = checkpoint.save_checkpoint
    monkeypatch.setattr(checkpoint, "save_checkpoint", lambda *a: saves.append(a[3]) or save(*a))
    monkeypatch.setattr(nsa_train, "_now", lambda: 10.0 * len(straight.epochs_seen))
    history = quiet_train(config, straight, tmp_path / "straight", checkpoint_every=15)
    assert saves == [2, 4]  # by the clock, and after the last epoch
    assert json.loads((tmp_path / "straight" / "history.json").read_text()) == history

    interrupted = SquareDataset(n=4, interrupt_at_epoch=3)
    monkeypatch.setattr(nsa_train, "_now", lambda: 10.0 * len(interrupted.epochs_seen))
    with pytest.raises(KeyboardInterrupt):
        quiet_train(config, interrupted, tmp_path / "resumed", checkpoint_every=15)
    assert "holds epoch 2" in capsys.readouterr().err
    assert torch.load(tmp_path / "resumed" / "checkpoint.pt", weights_only=True)["epoch"] == 2
    assert json.loads((tmp_path / "resumed" / "history.json").read_text())["epoch"] == [1, 2, 3]
    resumed = SquareDataset(n=4)
    resumed_history = quiet_train(config, resumed, tmp_path / "resumed", checkpoint_every=15)
    assert [resumed_history[k] for k in ("epoch", "loss", "lr")] == [history[k] for k in ("epoch", "loss", "lr")]
    assert resumed.epochs_seen == [2, 3]  # epoch 3 (index 2) again, from the checkpoint of epoch 2
    assert_same_weights(tmp_path / "straight" / "model.pt", tmp_path / "resumed" / "model.pt")


def test_default_policy_writes_one_checkpoint_for_a_short_run(tmp_path, monkeypatch):
    """Not one checkpoint per epoch: at most one a minute, and one after the last epoch."""
    written = []
    save = torch.save
    monkeypatch.setattr(torch, "save", lambda obj, path, *a, **k: written.append(obj["format"]) or save(obj, path))
    quiet_train(CONFIG.replace(epochs=3), SquareDataset(n=4), tmp_path)
    assert written == ["nsa-tutorial-checkpoint", "nsa-tutorial-model"]


def test_resume_refuses_a_checkpoint_of_another_config(tmp_path):
    quiet_train(CONFIG, SquareDataset(), tmp_path, epochs=1)
    with pytest.raises(ValueError, match="lr"):
        quiet_train(CONFIG.replace(lr=1e-2), SquareDataset(), tmp_path)


def _model_file(**changes) -> dict:
    data = {"format": FORMAT, "version": FORMAT_VERSION, "config": dataclasses.asdict(CONFIG),
            "state_dict": NSAModel().state_dict(), "history": {}}
    return {**data, **changes}


@pytest.mark.parametrize("content, message", [
    ([1, 2, 3], "expected format"),
    (_model_file(format="someone-else"), "expected format"),
    (_model_file(version=FORMAT_VERSION + 1), "version"),
    (_model_file(state_dict=NSAModel(in_channels=1).state_dict()), "state_dict"),
    (_model_file(state_dict={k: v for k, v in list(NSAModel().state_dict().items())[:-3]}), "Missing"),
    (_model_file(config={"name": "bottle"}), "config"),
])
def test_load_model_rejects_foreign_files(tmp_path, content, message):
    path = tmp_path / "model.pt"
    torch.save(content, path)
    with pytest.raises(ValueError, match=message) as error:
        load_model(path)
    assert str(path) in str(error.value)


def test_file_layouts_are_unchanged(runs):
    """What existing run folders hold: a change here stops them resuming (or bump FORMAT_VERSION)."""
    state = torch.load(runs["root"] / "straight" / "checkpoint.pt", weights_only=True)
    assert list(state) == ["format", "version", "epoch", "config", "model", "optimizer", "scheduler", "scaler",
                           "rng", "history", "identity"]
    assert (state["format"], state["version"]) == ("nsa-tutorial-checkpoint", 1)
    assert list(state["identity"]) == ["config", "seed", "package_version", "max_steps_per_epoch", "data"]
    assert list(state["rng"]) == ["torch", "python", "numpy"] + (["cuda"] if torch.cuda.is_available() else [])
    model = torch.load(runs["root"] / "straight" / "model.pt", weights_only=True)
    assert list(model) == ["format", "version", "package_version", "config", "state_dict", "history"]
    assert (model["format"], model["version"]) == (FORMAT, FORMAT_VERSION) == ("nsa-tutorial-model", 1)


def _uint8_images(dataset) -> list:
    return [(image.permute(1, 2, 0).clamp(0, 1) * 255).to(torch.uint8).numpy() for image in dataset.images]


def test_calibration_happens_before_the_one_write_of_model_pt(tmp_path, monkeypatch):
    """With ``calibration_images``, train() scores them with the model in memory and writes model.pt
    once, the calibration inside: the one that calibrating the written file gives."""
    from nsa_tutorial.pipeline import calibrate_checkpoint

    images = _uint8_images(SquareDataset(n=5))
    written = []
    save = torch.save
    monkeypatch.setattr(torch, "save", lambda obj, path, *a, **k: written.append(obj["format"]) or save(obj, path))
    quiet_train(CONFIG.replace(epochs=1), SquareDataset(n=4), tmp_path, calibration_images=images, target_fpr=0.2)
    monkeypatch.undo()
    assert written == ["nsa-tutorial-checkpoint", "nsa-tutorial-model"]
    stored = checkpoint.load_calibration(tmp_path / "model.pt")
    assert stored["n_images"] == 5 and stored["target_fpr"] == 0.2
    assert list(torch.load(tmp_path / "model.pt", weights_only=True))[-1] == "calibration"
    assert calibrate_checkpoint(tmp_path / "model.pt", images, 0.2, "cpu") == stored
    assert checkpoint.load_calibration(tmp_path / "model.pt") == stored


def test_calibration_is_read_and_written_with_the_checked_loader(tmp_path):
    import pickle

    path = tmp_path / "model.pt"
    for content, message in ((b"not a model", "not a readable model file"),
                             (pickle.dumps(EvilPayload()), "never loaded")):
        path.write_bytes(content)
        for call in (checkpoint.load_calibration, lambda p: checkpoint.add_calibration(p, {"n_images": 1})):
            with pytest.raises(ValueError, match=message) as error:
                call(path)
            assert str(path) in str(error.value)
        assert path.read_bytes() == content
    torch.save({"weights": 1}, path)
    with pytest.raises(ValueError, match="not an NSA model file"):
        checkpoint.add_calibration(path, {"n_images": 1})


def test_load_model_rejects_a_non_torch_file(tmp_path):
    path = tmp_path / "model.pt"
    path.write_text("not a model")
    with pytest.raises(ValueError, match="not a readable model file"):
        load_model(path)


def test_pick_device(capsys):
    assert pick_device("cpu") == torch.device("cpu")
    assert capsys.readouterr().out == ""  # a requested device is checked, not announced
    with pytest.raises(ValueError, match="unknown device"):
        pick_device("abacus")
    if not torch.cuda.is_available():
        assert pick_device() == torch.device("cpu")
        assert "no CUDA GPU" in capsys.readouterr().out
        with pytest.raises(ValueError, match="no CUDA GPU"):
            pick_device("cuda")


@pytest.mark.parametrize("kwargs, message", [
    (dict(epochs=3), "epochs"), (dict(epochs=0), "epochs"), (dict(seed=-1), "seed"),
    (dict(max_steps_per_epoch=0), "max_steps_per_epoch"), (dict(num_workers=-1), "num_workers"),
    (dict(checkpoint_every=-1), "checkpoint_every"), (dict(checkpoint_every="1m"), "checkpoint_every"),
    (dict(target_fpr=0), "target_fpr"), (dict(target_fpr=1.5), "target_fpr"), (dict(target_fpr="1%"), "target_fpr"),
])
def test_bad_arguments_are_rejected(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        quiet_train(CONFIG, SquareDataset(), tmp_path, **kwargs)


def _texture_dataset(tmp_path, **config_changes):
    from nsa_tutorial.config import get_config
    from nsa_tutorial.layout import load_category
    from nsa_tutorial.sources import resolve_data_root
    from nsa_tutorial.training_set import SyntheticAnomalyDataset

    category = load_category(resolve_data_root("textures", cache_dir=tmp_path / "cache"), "texture_grass")
    category.train = category.train[:8]
    config = get_config("texture_grass", image_size=64).replace(batch_size=4, epochs=1, **config_changes)
    return config, SyntheticAnomalyDataset(category, config, seed=0)


def test_synthesis_on_the_training_device_trains_on_real_anomalies(tmp_path, capsys):
    """The batched path (used by default on CUDA) runs end to end; forced here on the CPU."""
    config, dataset = _texture_dataset(tmp_path)
    history = train(config, dataset, tmp_path / "run", device="cpu", synthesis_on_device=True, progress=True)
    assert "Synthesis: batched on cpu" in capsys.readouterr().out
    assert history["normal_fraction"][0] < 0.5  # the batches carried synthetic anomalies
    assert np.isfinite(history["loss"][0])
    image, label = dataset[0]  # the dataset is left as it was: it still makes (image, label) samples
    assert image.dtype == label.dtype == torch.float32 and label.shape[0] == 1


def test_synthesis_on_device_refuses_methods_it_does_not_implement(tmp_path):
    config, dataset = _texture_dataset(tmp_path, method="fpi")
    with pytest.raises(ValueError, match="method 'nsa'"):
        train(config, dataset, tmp_path / "run", device="cpu", synthesis_on_device=True, progress=False)


class OneBlasThreadDataset(SquareDataset):
    """Fails unless BLAS runs one thread in the process that makes the samples."""

    def __getitem__(self, i: int):
        from threadpoolctl import threadpool_info

        threads = {info["num_threads"] for info in threadpool_info() if info["user_api"] == "blas"}
        if threads - {1}:
            raise RuntimeError(f"BLAS runs {threads} threads in a DataLoader worker")
        return super().__getitem__(i)


def test_dataloader_workers_run_one_blas_thread(tmp_path):
    """Synthesis's small matrix products must not start BLAS threads in each worker."""
    history = quiet_train(CONFIG.replace(epochs=1), OneBlasThreadDataset(), tmp_path, num_workers=1)
    assert len(history["loss"]) == 1 and np.isfinite(history["loss"][0])


class EpochDataset(Dataset):
    """Items drawn from ``default_rng([epoch, index])`` plus one draw of torch's global generator,
    and the id of the process that made them."""

    def __init__(self, n: int = 8) -> None:
        self.n, self.epoch = n, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        value = np.random.default_rng([self.epoch, i]).random()
        return torch.tensor([value, torch.rand(()).item()]), os.getpid()


def _epochs_of(loader, epochs) -> list:
    items = []
    for epoch in epochs:
        loader.sampler.set_epoch(epoch, 1)
        if loader.num_workers == 0:
            loader.dataset.dataset.set_epoch(epoch)  # as train() does in the main process
        items.append([(batch, pids.tolist()) for batch, pids in loader])
    return items


def test_persistent_workers_see_each_epoch_and_reseed_per_epoch():
    """One persistent worker makes epoch 1's items from epoch 1 (set_epoch reaches it), the same
    as the main process; its torch draws are the same whether the worker started at epoch 0 or
    at epoch 1 (a resumed run), and they differ between epochs."""
    loader = epoch_loader(EpochDataset(), 4, 1, torch.device("cpu"))
    epoch0, epoch1 = _epochs_of(loader, [0, 1])
    assert len({pid for _, pids in epoch0 + epoch1 for pid in pids} | {os.getpid()}) == 2  # one worker, kept
    [fresh1] = _epochs_of(epoch_loader(EpochDataset(), 4, 1, torch.device("cpu")), [1])
    main0, main1 = _epochs_of(epoch_loader(EpochDataset(), 4, 0, torch.device("cpu")), [0, 1])
    first = lambda items: torch.cat([batch[:, 0] for batch, _ in items])
    second = lambda items: torch.cat([batch[:, 1] for batch, _ in items])
    assert torch.equal(first(epoch1), first(main1)) and torch.equal(first(epoch0), first(main0))
    assert not torch.equal(first(epoch0), first(epoch1))
    assert torch.equal(second(epoch1), second(fresh1))
    assert not torch.equal(second(epoch0).sort().values, second(epoch1).sort().values)


def test_gpu_path_runs_on_the_cpu(tmp_path, monkeypatch):
    """What a CUDA run does, on a CPU: channels-last, bfloat16 autocast and batched synthesis on
    the training device. Finite losses, labels in [0, 1], a model that really ran in bfloat16."""
    config, dataset = _texture_dataset(tmp_path)
    monkeypatch.setattr(runtime, "_GPU_PATH_ON_CPU", True)
    labels, outputs = [], []
    synthesise, build = nsa_train._synthesise, nsa_train.build_model

    def recording_synthesise(*args, **kwargs):
        images, label = synthesise(*args, **kwargs)
        labels.append(label)
        return images, label

    def hooked_model(config):
        model = build(config)
        first_conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
        first_conv.register_forward_hook(lambda module, inputs, output: outputs.append(
            (output.dtype, inputs[0].is_contiguous(memory_format=torch.channels_last))))
        return model

    monkeypatch.setattr(nsa_train, "_synthesise", recording_synthesise)
    monkeypatch.setattr(nsa_train, "build_model", hooked_model)
    history = train(config.replace(epochs=2), dataset, tmp_path / "run", device="cpu",
                    synthesis_on_device=True, progress=False)
    assert len(labels) == 4 and outputs == [(torch.bfloat16, True)] * 4
    assert all(label.dtype == torch.float32 and 0 <= label.min() and label.max() <= 1 for label in labels)
    assert any(label.max() > 0 for label in labels)  # anomalies were made
    assert all(np.isfinite(history["loss"])) and all(0 <= f <= 1 for f in history["normal_fraction"])


class FileDataset(SquareDataset):
    """A SquareDataset that reports training files, as SyntheticAnomalyDataset does."""

    def __init__(self, files=(("train/good/a.png", 100), ("train/good/b.png", 200)), **kwargs) -> None:
        super().__init__(**kwargs)
        self._files = list(files)

    def files(self):
        return self._files


@pytest.fixture
def one_epoch(tmp_path):
    """A run folder holding the checkpoint of epoch 1 of 2 (seed 0, FileDataset)."""
    quiet_train(CONFIG, FileDataset(), tmp_path, epochs=1)
    return tmp_path


@pytest.mark.parametrize("change, differs", [
    (dict(seed=1), "seed (checkpoint 0, now 1)"),
    (dict(dataset=FileDataset(files=[("train/good/a.png", 100), ("train/good/b.png", 201)])),
     "training files (1 added, removed or of another size, e.g. ['train/good/b.png'])"),
    (dict(dataset=FileDataset(files=[("train/good/a.png", 100), ("train/good/c.png", 200)])),
     "training files (2 added"),
    (dict(dataset=SquareDataset(n=6)), "number of training samples (checkpoint 8, now 6)"),
    (dict(max_steps_per_epoch=1), "max_steps_per_epoch (checkpoint None, now 1)"),
    (dict(config=CONFIG.replace(lr=1e-2)), "config fields lr (checkpoint 0.001, now 0.01)"),
])
def test_resume_refuses_another_run_and_lists_what_differs(one_epoch, change, differs):
    """A resume is the same run or no run: seed, data, steps and config are all checked."""
    change = dict(change)
    config, dataset = change.pop("config", CONFIG), change.pop("dataset", FileDataset())
    with pytest.raises(ValueError, match="belongs to another run") as error:
        quiet_train(config, dataset, one_epoch, **change)
    assert differs in str(error.value) and "resume=False" in str(error.value)
    history = quiet_train(config, dataset, one_epoch, resume=False, **change)  # the remedy works
    assert history["epoch"] == [1, 2]


def test_resume_refuses_a_checkpoint_of_another_package_version(one_epoch, monkeypatch):
    monkeypatch.setattr("nsa_tutorial.checkpoint.__version__", "99.0")
    with pytest.raises(ValueError, match=r"package_version \(checkpoint '.*', now '99.0'\)"):
        quiet_train(CONFIG, FileDataset(), one_epoch)


def test_data_fingerprint_ignores_modification_times(tmp_path):
    """Names and sizes, not mtimes: a copied dataset is the same data and resumes."""
    from nsa_tutorial.layout import Category

    src = tmp_path / "data" / "cat" / "train" / "good"
    src.mkdir(parents=True)
    for i in range(2):
        (src / f"{i}.png").write_bytes(b"x" * (10 + i))
    category = Category(root=tmp_path / "data", name="cat", train=sorted(src.iterdir()), test=[], has_masks=False)
    assert category.train_files() == [("train/good/0.png", 10), ("train/good/1.png", 11)]
    import os
    os.utime(src / "0.png", (0, 0))
    assert category.train_files() == [("train/good/0.png", 10), ("train/good/1.png", 11)]


def test_resume_refuses_an_old_checkpoint_without_identity(one_epoch):
    state = torch.load(one_epoch / "checkpoint.pt", weights_only=True)
    del state["identity"]
    torch.save(state, one_epoch / "checkpoint.pt")
    with pytest.raises(ValueError, match="records no seed"):
        quiet_train(CONFIG, FileDataset(), one_epoch)


def test_truncated_checkpoint_names_the_file_and_the_remedy(one_epoch):
    checkpoint = one_epoch / "checkpoint.pt"
    checkpoint.write_bytes(checkpoint.read_bytes()[:1000])
    with pytest.raises(ValueError, match="truncated") as error:
        quiet_train(CONFIG, FileDataset(), one_epoch)
    assert str(checkpoint) in str(error.value) and "resume=False" in str(error.value)
    assert "weights_only" not in str(error.value)


def test_training_afresh_over_a_finished_model_without_checkpoint_is_refused(one_epoch):
    quiet_train(CONFIG, FileDataset(), one_epoch)
    (one_epoch / "checkpoint.pt").unlink()
    before = (one_epoch / "model.pt").read_bytes()
    with pytest.raises(ValueError, match="holds the model.pt of a run but no checkpoint.pt"):
        quiet_train(CONFIG, FileDataset(), one_epoch)
    assert (one_epoch / "model.pt").read_bytes() == before


def test_a_kill_leftover_temporary_file_is_cleared_on_resume(one_epoch):
    stale = one_epoch / ".checkpoint.pt.x1y2.tmp"
    stale.write_bytes(b"half a checkpoint")
    quiet_train(CONFIG, FileDataset(), one_epoch)
    assert not stale.exists()


def test_unsafe_pickles_are_refused_without_torchs_weights_only_advice(tmp_path):
    import pickle

    path = tmp_path / "model.pt"
    with open(path, "wb") as f:
        pickle.dump(EvilPayload(), f)
    with pytest.raises(ValueError, match="never loaded") as error:
        load_model(path)
    assert "weights_only" not in str(error.value) and str(path) in str(error.value)


class EvilPayload:
    def __reduce__(self):
        return (exec, ("raise SystemExit('code ran')",))


def test_old_stream_seeds_collided_and_stream_seed_keeps_every_stream_apart():
    """The old seeds (``seed * 1000 + epoch`` for the shuffle, ``+ 500`` for synthesis) gave epoch
    500's shuffle the seed of epoch 0's synthesis (the 560-epoch classes reach it); the streams of
    :func:`stream_seed` are distinct over seeds x epochs x streams x workers x ranks, and distinct
    from the training set's per-sample keys ``[seed, epoch, index]``."""
    old_shuffle, old_synthesis = (lambda s, e: s * 1000 + e), (lambda s, e: s * 1000 + e + 500)
    assert old_shuffle(0, 500) == old_synthesis(0, 0) and old_shuffle(3, 560) == old_synthesis(3, 60)
    assert stream_seed(0, 500, "shuffle") != stream_seed(0, 0, "synthesis")
    keys = [(seed, epoch, stream, rank, worker) for seed in range(4) for epoch in range(0, 600, 7)
            for stream in STREAMS for rank in range(2) for worker in (range(3) if stream == "worker" else [0])]
    seeds = {stream_seed(*key) for key in keys}
    assert len(seeds) == len(keys)
    samples = {int(np.random.SeedSequence([s, e, i]).generate_state(1, np.uint64)[0])
               for s in range(4) for e in range(0, 600, 7) for i in range(3)}
    assert not seeds & samples
    with pytest.raises(ValueError, match="non-negative"):
        stream_seed(-1, 0, "shuffle")
    with pytest.raises(KeyError):
        stream_seed(0, 0, "no such stream")


def test_time_left_is_the_epochs_left_times_the_recent_median_epoch():
    from nsa_tutorial.train import _summary, time_left

    history = {"epoch": [1, 2, 3, 4, 5, 6], "seconds": [100.0, 9.0, 10.0, 11.0, 10.0, 50.0]}
    assert time_left(history, 10) == 4 * 10.0  # median of the last five: a slow first epoch and an outlier ignored
    assert time_left({"epoch": [1], "seconds": [7.0]}, 1) == 0.0
    full = {**history, **{k: [0.5] * 6 for k in ("loss", "lr", "samples_per_s", "peak_memory_mb",
                                                   "data_wait_fraction", "normal_fraction")}}
    assert "epoch 6/10" in _summary(full, 10) and "about 1 min left" in _summary(full, 10)


def test_the_image_score_is_not_part_of_a_runs_identity():
    """The score is computed from the map after training: a checkpoint written before the field
    existed, or under another score, is the same run; any training field is not."""
    import dataclasses

    from nsa_tutorial.checkpoint import identity_differences

    now = {"config": dataclasses.asdict(CONFIG.replace(score="top1%")), "seed": 0, "package_version": "x",
           "max_steps_per_epoch": None, "data": {"samples": 3, "files": None}}
    older = {**now, "config": {k: v for k, v in now["config"].items() if k != "score"}}
    assert identity_differences(older, now) == []
    assert identity_differences({**now, "config": {**now["config"], "score": "mean"}}, now) == []
    other = identity_differences({**now, "config": {**now["config"], "lr": 0.5}}, now)
    assert len(other) == 1 and "lr (checkpoint 0.5" in other[0]
