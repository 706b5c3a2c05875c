"""Training NSA: the loop, checkpoints and resume, and loading a trained model.

Book chapter: *Training*.

:func:`train` is the paper's recipe (Sec. 4.1): Adam, learning rate ``config.lr``
annealed along a cosine to ``config.lr_min`` over ``config.epochs`` (stepped once
per epoch), BCE loss for bounded labels (eq. 15) or MSE for continuous ones
(eq. 16).  On a GPU it adds mixed precision and channels-last memory layout.  After
every epoch it writes ``history.json``; ``checkpoint.pt`` (everything needed to
continue) at most once per ``checkpoint_every`` seconds, after the last epoch and when
stopped by Ctrl-C or SIGTERM; at the end, ``model.pt`` (what :func:`load_model` reads).
Started by ``torchrun`` (a process group of several processes), :func:`train` trains one model
on all of them with DistributedDataParallel: see :mod:`nsa_tutorial.distributed`.
"""

from __future__ import annotations

import dataclasses
import json
import random
import signal
import sys
import threading
import time
from functools import partial
from pathlib import Path
from typing import Callable, NamedTuple, Optional, Union

import numpy as np
import torch
import torch.nn.functional as F
from threadpoolctl import threadpool_limits
from torch.utils.data import DataLoader, Dataset, Sampler, get_worker_info
from tqdm import tqdm

from nsa_tutorial import __version__, distributed
from nsa_tutorial.config import Config
from nsa_tutorial.files import atomic_write, remove_temporaries
from nsa_tutorial.model import NSAModel, build_model

FORMAT = "nsa-tutorial-model"
#: Bumped when the layout of ``model.pt`` or ``checkpoint.pt`` changes; independent of the
#: package version (recorded too, as ``package_version``) so that releases keep reading old files.
FORMAT_VERSION = 1
CHECKPOINT_FORMAT = "nsa-tutorial-checkpoint"
HISTORY_KEYS = ("epoch", "loss", "lr", "samples_per_s", "seconds", "peak_memory_mb",
                "data_wait_fraction", "normal_fraction")
#: Seconds between progress-bar updates of the loss (each reads it from the device: a sync).
PROGRESS_EVERY = 2.0
#: Tests set this to run the GPU's path (channels-last, bfloat16 autocast) on a CPU.
_GPU_PATH_ON_CPU = False
#: The clock of the checkpoint policy (tests replace it).
_now = time.monotonic
#: The random streams of a run, each with its own id in the key of :func:`stream_seed`.
STREAMS = {"shuffle": 0, "synthesis": 1, "worker": 2}


def stream_seed(seed: int, epoch: int, stream: str, rank: int = 0, worker: int = 0) -> int:
    """The 64-bit seed of one random stream of a run: the shuffle order of an epoch, the batched
    synthesis generator of an epoch, or a DataLoader worker's generators in an epoch.

    Derived with :class:`numpy.random.SeedSequence` from the whole key ``(seed, epoch, stream id,
    rank, worker)``, always five words long (SeedSequence pads a shorter key with zeros, so keys of
    different lengths could meet), so distinct keys give unrelated streams whatever the numbers (an
    arithmetic rule such as ``seed * 1000 + epoch`` gives two streams the same seed sooner or later).
    ``rank``: the process of a multi-process run (0 for one process).
    """
    key = (seed, epoch, STREAMS[stream], rank, worker)
    if any(not isinstance(k, (int, np.integer)) or k < 0 for k in key):
        raise ValueError(f"seed, epoch, rank and worker must be non-negative integers, got {key}")
    return int(np.random.SeedSequence(tuple(int(k) for k in key)).generate_state(1, np.uint64)[0])


class _Parts(NamedTuple):
    model: NSAModel
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    amp_dtype: Optional[torch.dtype]  # None: full float32
    identity: Optional[dict] = None  # what determines the run (see run_identity); saved in checkpoints
    ddp: Optional[torch.nn.Module] = None  # the model wrapped for several processes (nsa_tutorial.distributed)


class ResumeError(ValueError):
    """A checkpoint that cannot be continued. ``problem`` says why; the message adds the remedy.

    The command line replaces the remedy by its own (``--restart``).
    """

    def __init__(self, problem: str, remedy: str = "pass resume=False to start afresh") -> None:
        super().__init__(f"{problem}; {remedy}")
        self.problem = problem


def pick_device(requested: Union[str, torch.device, None] = None) -> torch.device:
    """``"cuda"`` when a GPU is available, else ``"cpu"``; or the requested device if usable.

    Prints what it picked and why, so that nobody trains on a CPU for hours by accident.
    Book chapter: *Training*.
    """
    if requested is not None:
        try:
            device = torch.device(requested)
        except (RuntimeError, TypeError) as err:
            raise ValueError(f"unknown device {requested!r}; expected e.g. 'cpu' or 'cuda'") from err
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device {requested!r} was requested but torch sees no CUDA GPU; "
                             "use 'cpu' or pass device=None to pick automatically")
        print(f"Using {device} (requested).")
        return device
    if torch.cuda.is_available():
        print(f"Using cuda ({torch.cuda.get_device_name()}): a CUDA GPU is available.")
        return torch.device("cuda")
    print("Using cpu: torch sees no CUDA GPU. Quick mode runs in minutes; full mode needs a GPU.")
    return torch.device("cpu")


def _prepare(config: Config, device: torch.device, seed: int) -> _Parts:
    torch.manual_seed(seed)
    model = build_model(config).to(device)
    amp_dtype = None
    if _gpu_path(device):
        # Channels-last lets cuDNN use its fastest (tensor-core) convolution kernels.
        model = model.to(memory_format=torch.channels_last)
        amp_dtype = torch.bfloat16
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        # Emulated bfloat16 (e.g. a T4) is slow: float16 with loss scaling there.
        if not torch.cuda.is_bf16_supported(including_emulation=False):
            amp_dtype = torch.float16
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    # The schedule spans config.epochs even when train() stops earlier, so that a run
    # stopped and resumed follows exactly the learning rates of an uninterrupted one.
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
        optimizer, T_max=config.epochs, eta_min=config.lr_min)
    # float16 overflows without loss scaling; bfloat16 has float32's range and needs none.
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    return _Parts(model, optimizer, scheduler, scaler, amp_dtype)


def _gpu_path(device: torch.device) -> bool:
    return device.type == "cuda" or _GPU_PATH_ON_CPU


def train(config: Config, train_set: Dataset, output_dir: Union[str, Path], *,
          device: Union[str, torch.device, None] = None, seed: int = 0, num_workers: int = 0,
          epochs: Optional[int] = None, resume: bool = True,
          max_steps_per_epoch: Optional[int] = None, progress: bool = True,
          synthesis_on_device: Optional[bool] = None, checkpoint_every: float = 60.0) -> dict:
    """Train an NSA model on ``(image, label)`` pairs; returns the per-epoch history.

    ``synthesis_on_device``: make the anomalies for a whole batch on the training device
    (:mod:`nsa_tutorial.batched`) instead of one by one in the DataLoader workers.  By
    default on when training on CUDA with a dataset that can hand out raw image pairs
    (:class:`nsa_tutorial.training_set.SyntheticAnomalyDataset`) and a method the batched path
    implements (NSA; ablations A and B).

    ``epochs`` stops the run after that many epochs in total (default ``config.epochs``);
    the learning-rate schedule always spans ``config.epochs``, so stopping early and
    calling again with ``resume=True`` gives the same weights as one uninterrupted run
    (exactly so on a CPU).  Writes ``history.json`` after every epoch; ``checkpoint.pt``
    after an epoch when ``checkpoint_every`` seconds have passed since the last one (0:
    every epoch), after the last epoch, and when Ctrl-C or SIGTERM stops the run (it
    finishes the epoch first); ``model.pt`` at the end.  Book chapter: *Training*.
    """
    stop = _check_train_args(config, train_set, epochs, seed, num_workers, max_steps_per_epoch,
                             checkpoint_every)
    device = pick_device(device)
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    parts = _prepare(config, device, seed)._replace(
        identity=run_identity(config, train_set, seed, max_steps_per_epoch))
    distributed.barrier()  # rank 0 may still be writing the files of a previous call
    start, history = _resume_point(output_dir, parts, config, resume)
    parts = parts._replace(ddp=distributed.wrap(parts.model, device))
    progress = progress and distributed.is_main()
    on_device = _synthesis_on_device(config, train_set, device, synthesis_on_device)
    synthesis_generator = torch.Generator()
    prepare = partial(_synthesise, config=config, device=device, generator=synthesis_generator)
    loader = _loader(_RawPairs(train_set) if on_device else train_set, config.batch_size, num_workers, device)
    loader = distributed.shard(loader, config.batch_size, max_steps_per_epoch)
    saved, last_save = start, _now()
    try:
        with _StopOnSignal() as stop_request:
            for epoch in range(start, stop):
                # Shuffle order and worker seeds depend on (seed, epoch) only: resumable.
                loader.sampler.set_epoch(epoch, seed)
                synthesis_generator.manual_seed(stream_seed(seed, epoch, "synthesis", rank=distributed.rank()))
                if hasattr(train_set, "set_epoch"):
                    train_set.set_epoch(epoch)
                lr = parts.optimizer.param_groups[0]["lr"]
                stats = _train_epoch(parts, loader, config.loss, device, max_steps_per_epoch,
                                     f"epoch {epoch + 1}/{stop}", progress, prepare if on_device else None)
                parts.scheduler.step()
                for key, value in dict(epoch=epoch + 1, lr=lr, **stats).items():
                    history[key].append(value)
                _write_history(output_dir, history)
                stopping = distributed.agree(stop_request.signal)  # one decision for all processes
                if epoch + 1 == stop or stopping or _now() - last_save >= checkpoint_every:
                    _save_checkpoint(output_dir, parts, config, epoch + 1, history)
                    saved, last_save = epoch + 1, _now()
                if progress:
                    print(_summary(history))
                if stopping and epoch + 1 < stop:
                    raise KeyboardInterrupt(f"stopped by {signal.Signals(stopping).name}")
    except KeyboardInterrupt:
        held = f"{output_dir / 'checkpoint.pt'} holds epoch {saved}" if saved else "no checkpoint yet"
        print(f"\nInterrupted; {held}. Call train() again with the same config and output_dir "
              "(resume=True) to continue from the last checkpoint.", file=sys.stderr)
        raise
    finally:
        del loader  # its persistent workers end now, not when a kept traceback is freed
    if distributed.is_main():
        atomic_write(output_dir / "model.pt", lambda tmp: torch.save(_model_file(parts, config, history), tmp))
    distributed.barrier()
    return history


def _check_train_args(config: Config, train_set: Dataset, epochs: Optional[int], seed: int,
                      num_workers: int, max_steps: Optional[int], checkpoint_every: float) -> int:
    if not isinstance(config, Config):
        raise ValueError(f"config must be a nsa_tutorial.config.Config, got {type(config).__name__}")
    if not hasattr(train_set, "__getitem__") or not hasattr(train_set, "__len__") or len(train_set) == 0:
        raise ValueError("train_set must be a non-empty map-style Dataset of (image, label) pairs")
    epochs = config.epochs if epochs is None else epochs
    if not isinstance(epochs, int) or not 1 <= epochs <= config.epochs:
        raise ValueError(f"epochs must be an integer in [1, config.epochs={config.epochs}], got "
                         f"{epochs!r}; to train longer, use config.replace(epochs=...)")
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if not isinstance(num_workers, int) or num_workers < 0:
        raise ValueError(f"num_workers must be a non-negative integer, got {num_workers!r}")
    if max_steps is not None and (not isinstance(max_steps, int) or max_steps < 1):
        raise ValueError(f"max_steps_per_epoch must be None or a positive integer, got {max_steps!r}")
    if isinstance(checkpoint_every, bool) or not isinstance(checkpoint_every, (int, float)) \
            or not checkpoint_every >= 0:
        raise ValueError(f"checkpoint_every must be a number of seconds >= 0 (0: every epoch), "
                         f"got {checkpoint_every!r}")
    return epochs


def _synthesis_on_device(config: Config, train_set: Dataset, device: torch.device,
                         requested: Optional[bool]) -> bool:
    """Whether to synthesise batches on the device (from the dataset's ``raw_pair``)."""
    from nsa_tutorial.batched import supports

    supported = hasattr(train_set, "raw_pair") and supports(config)
    if requested and not supported:
        raise ValueError("synthesis_on_device needs a SyntheticAnomalyDataset and method 'nsa' with variant "
                         f"None, 'A' or 'B'; got {type(train_set).__name__}, {config.method!r}, {config.variant!r}")
    use = supported and (device.type == "cuda" if requested is None else requested)
    print(f"Synthesis: {'batched on ' + str(device) if use else 'one sample at a time in the DataLoader'}.")
    return use


def _synthesise(batch, config: Config, device: torch.device, generator: torch.Generator):
    """(dest, src) uint8 pairs -> (normalised images, labels) made on ``device`` in one go."""
    from nsa_tutorial.batched import synthesize_batch
    from nsa_tutorial.training_set import normalize_batch

    dest, src = (t.to(device, non_blocking=True) for t in batch)
    images, labels = synthesize_batch(dest, src, config, generator)
    return normalize_batch(images, config.normalize), labels[:, None]


class _RawPairs(Dataset):
    """``dataset``'s augmented uint8 ``(dest, src)`` pairs (its ``raw_pair``), for synthesis on the
    training device; the dataset itself is left as it is."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def set_epoch(self, epoch: int) -> None:
        self.dataset.set_epoch(epoch)

    def __getitem__(self, index: int):
        return self.dataset.raw_pair(index)


class _StopOnSignal:
    """Within ``with``: Ctrl-C (SIGINT) and SIGTERM (a scheduler, a notebook shutting down) set
    ``signal`` instead of stopping at once, so that :func:`train` finishes the epoch, writes a
    checkpoint and stops.  A second signal acts as without this handler.  Main thread only."""

    def __init__(self) -> None:
        self.signal, self._previous = None, {}

    def __enter__(self) -> "_StopOnSignal":
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def _handle(self, signum: int, frame) -> None:
        self.signal = signum
        signal.signal(signum, self._previous[signum] or signal.SIG_DFL)
        print(f"\n{signal.Signals(signum).name}: finishing this epoch, then checkpoint and stop "
              "(send it again to stop at once, losing the epoch).", file=sys.stderr)

    def __exit__(self, *exc) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler or signal.SIG_DFL)


class _EpochSampler(Sampler):
    """Shuffled indices of one epoch, each as ``(epoch, seed, index)`` (``seed``: the run's).

    Persistent DataLoader workers keep their own copy of the dataset for the whole run, so
    ``set_epoch`` in the main process does not reach them: the epoch travels with every index.
    """

    def __init__(self, n: int) -> None:
        self.n, self.epoch, self.seed = n, 0, 0

    def set_epoch(self, epoch: int, seed: int) -> None:
        self.epoch, self.seed = epoch, seed

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        shuffle = stream_seed(self.seed, self.epoch, "shuffle")
        order = torch.randperm(self.n, generator=torch.Generator().manual_seed(shuffle))
        return ((self.epoch, self.seed, i) for i in order.tolist())


class _EpochDataset(Dataset):
    """``dataset`` indexed by :class:`_EpochSampler`'s keys.  In a worker, the first item of an
    epoch sets the dataset's epoch and reseeds Python's, numpy's and torch's generators from
    (seed, epoch, worker), as new workers each epoch would be; the main process keeps its state."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset, self.epoch = dataset, None
        self.rank = distributed.rank()  # set here, in the main process: workers need not see the group

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple):
        epoch, seed, index = key
        worker = get_worker_info()
        if worker is not None and epoch != self.epoch:
            self.epoch = epoch
            if hasattr(self.dataset, "set_epoch"):
                self.dataset.set_epoch(epoch)
            worker_seed = stream_seed(seed, epoch, "worker", rank=self.rank, worker=worker.id)
            random.seed(worker_seed)
            np.random.seed(worker_seed % 2**32)
            torch.manual_seed(worker_seed)
        return self.dataset[index]


def _loader(train_set: Dataset, batch_size: int, num_workers: int, device: torch.device) -> DataLoader:
    """Batches of ``train_set`` in an order set per epoch by ``loader.sampler.set_epoch``;
    workers start once per run, not once per epoch (``persistent_workers``)."""
    return DataLoader(_EpochDataset(train_set), batch_size=batch_size, sampler=_EpochSampler(len(train_set)),
                      num_workers=num_workers, persistent_workers=num_workers > 0,
                      pin_memory=device.type == "cuda", worker_init_fn=_init_worker,
                      generator=torch.Generator())  # keeps the loader off torch's global generator


def _init_worker(worker_id: int) -> None:
    """DataLoader workers already run one per core: synthesis's small matrix products
    (:func:`nsa_tutorial.poisson._dst_rows`) must not start BLAS threads of their own.  Ctrl-C
    and SIGTERM are for the main process, which needs its workers to finish the epoch."""
    threadpool_limits(limits=1, user_api="blas")
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def _write_history(output_dir: Path, history: dict) -> None:
    """``history.json`` (small: one number per key and epoch), rewritten atomically every epoch."""
    if not distributed.is_main():
        return
    atomic_write(output_dir / "history.json", lambda tmp: tmp.write_text(json.dumps(history, indent=1)))


def _train_epoch(parts: _Parts, loader: DataLoader, loss_name: str, device: torch.device,
                 max_steps: Optional[int], desc: str, progress: bool,
                 prepare: Optional[Callable] = None) -> dict:
    """One epoch; loss and normal-sample count add up on the device and are read once at the end
    (reading them every step would make the CPU wait for the GPU every step)."""
    parts.model.train()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    steps = len(loader) if max_steps is None else min(len(loader), max_steps)
    total_loss, normal = torch.zeros((), device=device), torch.zeros((), dtype=torch.int64, device=device)
    seen, waiting = 0, 0.0
    start = ready = shown = time.perf_counter()
    with tqdm(total=steps, desc=desc, disable=not progress, leave=False) as bar:
        for step, batch in enumerate(loader):
            waiting += time.perf_counter() - ready  # the model waited for synthesis this long
            if step == steps:
                break
            image, label = batch if prepare is None else prepare(batch)
            loss = _train_step(parts, image, label, loss_name, device, distributed.loss_weight(loader, step))
            total_loss += loss * len(image)
            seen += len(image)
            # every patch failed: a normal sample
            normal += (label.flatten(1).amax(1) == 0).sum().to(device, non_blocking=True)
            bar.update()
            if progress and time.perf_counter() - shown >= PROGRESS_EVERY:
                shown = time.perf_counter()
                bar.set_postfix(loss=f"{loss.item():.4f}", samples_s=f"{seen / (shown - start):.1f}")
            ready = time.perf_counter()
    total_loss, normal, seen = distributed.sum_over_ranks(total_loss, normal, seen)
    mean_loss, normal = total_loss.item() / seen, normal.item()  # the epoch's one wait for the device
    seconds = time.perf_counter() - start
    return dict(loss=mean_loss, samples_per_s=seen / seconds, seconds=seconds,
                peak_memory_mb=_peak_memory_mb(device), data_wait_fraction=waiting / seconds,
                normal_fraction=normal / seen)


def _train_step(parts: _Parts, image: torch.Tensor, label: torch.Tensor, loss_name: str,
                device: torch.device, weight: float = 1.0) -> torch.Tensor:
    memory_format = torch.channels_last if _gpu_path(device) else torch.contiguous_format
    image = image.to(device, non_blocking=True, memory_format=memory_format)
    label = label.to(device, non_blocking=True)
    with torch.autocast(device.type, dtype=parts.amp_dtype, enabled=parts.amp_dtype is not None):
        prediction = (parts.model if parts.ddp is None else parts.ddp)(image)
    # Outside autocast and in float32: binary_cross_entropy on probabilities is unsafe in 16 bit.
    if loss_name == "bce":
        loss = F.binary_cross_entropy(prediction.float(), label.float())
    else:
        loss = F.mse_loss(prediction.float(), label.float())
    parts.optimizer.zero_grad(set_to_none=True)
    parts.scaler.scale(loss * weight).backward()  # weight: see distributed.ShardSampler.loss_weight
    parts.scaler.step(parts.optimizer)
    parts.scaler.update()
    return loss.detach()  # stays on the device: no wait for the GPU here


def _peak_memory_mb(device: torch.device) -> float:
    """CUDA: peak allocated in this epoch. CPU: peak resident size of the process so far."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    try:
        import resource
    except ImportError:  # Windows has no resource module
        return float("nan")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10  # bytes on macOS, KiB on Linux


def _summary(history: dict) -> str:
    return (f"epoch {history['epoch'][-1]}: loss {history['loss'][-1]:.4f}, lr {history['lr'][-1]:.2e}, "
            f"{history['samples_per_s'][-1]:.1f} samples/s, {history['seconds'][-1]:.1f} s, "
            f"peak memory {history['peak_memory_mb'][-1]:.0f} MB, "
            f"{100 * history['data_wait_fraction'][-1]:.0f}% of the time waiting for data, "
            f"{100 * history['normal_fraction'][-1]:.1f}% samples without anomaly")


def _rng_states() -> dict:
    keys_name, keys, pos, has_gauss, cached = np.random.get_state()
    states = {"torch": torch.get_rng_state(), "python": random.getstate(),
              # Plain lists, so that torch.load(weights_only=True) accepts the checkpoint.
              "numpy": (keys_name, keys.tolist(), pos, has_gauss, cached)}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def _set_rng_states(states: dict) -> None:
    torch.set_rng_state(states["torch"])
    random.setstate(states["python"])
    keys_name, keys, pos, has_gauss, cached = states["numpy"]
    np.random.set_state((keys_name, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def _save_checkpoint(output_dir: Path, parts: _Parts, config: Config, epoch: int, history: dict) -> None:
    if not distributed.is_main():
        return
    state = {"format": CHECKPOINT_FORMAT, "version": FORMAT_VERSION, "epoch": epoch,
             "config": dataclasses.asdict(config), "model": parts.model.state_dict(),
             "optimizer": parts.optimizer.state_dict(), "scheduler": parts.scheduler.state_dict(),
             "scaler": parts.scaler.state_dict(), "rng": _rng_states(), "history": history,
             "identity": parts.identity}
    atomic_write(output_dir / "checkpoint.pt", lambda tmp: torch.save(state, tmp))  # history.json: _write_history


def _load_checkpoint(path: Path, parts: _Parts, config: Config) -> tuple[int, dict]:
    state = _torch_load(path, "checkpoint", ResumeError)
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT \
            or state.get("version") != FORMAT_VERSION:
        raise ResumeError(f"{path} is not a version-{FORMAT_VERSION} {CHECKPOINT_FORMAT} file")
    differences = identity_differences(state.get("identity"), parts.identity)
    if differences:
        raise ResumeError(f"{path} belongs to another run; what differs: {'; '.join(differences)}. "
                          "Resume with the same settings and data, or use another output folder")
    parts.model.load_state_dict(state["model"])
    parts.optimizer.load_state_dict(state["optimizer"])
    parts.scheduler.load_state_dict(state["scheduler"])
    if state["scaler"]:  # empty when written without float16 loss scaling (CPU, bfloat16)
        parts.scaler.load_state_dict(state["scaler"])
    _set_rng_states(state["rng"])
    return state["epoch"], state["history"]


def _resume_point(output_dir: Path, parts: _Parts, config: Config, resume: bool) -> tuple[int, dict]:
    """(first epoch, history so far): from ``checkpoint.pt`` if resuming, else a fresh start.

    Clears temporary files of writes that a kill interrupted.  Refuses to train afresh over
    the results of a run it cannot continue (``model.pt`` without ``checkpoint.pt``).
    """
    remove_temporaries(output_dir, ("checkpoint.pt", "history.json", "model.pt"))
    checkpoint = output_dir / "checkpoint.pt"
    if resume and checkpoint.exists():
        start, history = _load_checkpoint(checkpoint, parts, config)
        print(f"Resumed from epoch {start} of {config.epochs} ({checkpoint}).")
        return start, history
    # history.json alone is a run killed before its first checkpoint (it is rewritten every
    # epoch, checkpoints only every checkpoint_every seconds): nothing to keep, start afresh.
    if resume and (output_dir / "model.pt").exists():
        raise ResumeError(f"{output_dir} holds the model.pt of a run but no checkpoint.pt to "
                          "continue it; use another output folder, or replace that run",
                          remedy="pass resume=False to train afresh over it")
    return 0, {key: [] for key in HISTORY_KEYS}


def data_fingerprint(train_set: Dataset) -> dict:
    """The training data's identity: its size, and the names and sizes of its files if the dataset
    reports them (``train_set.files()``, as :class:`nsa_tutorial.training_set.SyntheticAnomalyDataset`).
    Modification times are left out: a copy of the data changes them, not the data."""
    files = train_set.files() if callable(getattr(train_set, "files", None)) else None
    return {"samples": len(train_set), "files": None if files is None else [[n, int(s)] for n, s in files]}


def run_identity(config: Config, train_set: Dataset, seed: int, max_steps: Optional[int]) -> dict:
    """Everything that determines a run's weights, recorded in its checkpoints: a resume with any
    of it changed would be neither run.  Book chapter: *Training*."""
    return {"config": dataclasses.asdict(config), "seed": seed, "package_version": __version__,
            "max_steps_per_epoch": max_steps, "data": data_fingerprint(train_set)}


def identity_differences(saved: Optional[dict], now: dict) -> list[str]:
    """What differs between a checkpoint's :func:`run_identity` and this call's, in words."""
    if not isinstance(saved, dict):
        return ["the checkpoint records no seed, package version or data (written by an older "
                "nsa_tutorial), so it cannot be shown to be this run"]
    out = []
    config_then, config_now = saved.get("config") or {}, now["config"]
    changed = sorted(k for k in config_now if config_then.get(k) != config_now[k])
    if changed:
        out.append("config fields " + ", ".join(f"{k} (checkpoint {config_then.get(k)!r}, now {config_now[k]!r})"
                                                for k in changed))
    for key in ("seed", "package_version", "max_steps_per_epoch"):
        if saved.get(key) != now[key]:
            out.append(f"{key} (checkpoint {saved.get(key)!r}, now {now[key]!r})")
    data_then, data_now = saved.get("data") or {}, now["data"]
    if data_then.get("samples") != data_now["samples"]:
        out.append(f"number of training samples (checkpoint {data_then.get('samples')}, now {data_now['samples']})")
    elif data_then.get("files") != data_now["files"]:
        then, current = dict(map(tuple, data_then.get("files") or [])), dict(map(tuple, data_now["files"] or []))
        changed = sorted(n for n in then.keys() | current.keys() if then.get(n) != current.get(n))
        out.append(f"training files ({len(changed)} added, removed or of another size, e.g. {changed[:3]})")
    return out


def _torch_load(path: Path, what: str, error: type = ValueError):
    """``torch.load(path, weights_only=True)``, with errors that name the file and a remedy.

    A file that needs unsafe unpickling is refused, never loaded (it may run code).
    """
    import pickle

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise error(f"{path} is not a readable {what}: not a torch file of tensors and plain data (another "
                    "format, or Python objects that could run code, which are never loaded)") from err
    except (RuntimeError, EOFError, OSError, ValueError, KeyError) as err:
        raise error(f"{path} is not a readable {what} (truncated, corrupt or not a torch file: "
                    f"{type(err).__name__})") from err


def _model_file(parts: _Parts, config: Config, history: dict) -> dict:
    state_dict = {k: v.detach().cpu().contiguous() for k, v in parts.model.state_dict().items()}
    return {"format": FORMAT, "version": FORMAT_VERSION, "package_version": __version__,
            "config": dataclasses.asdict(config), "state_dict": state_dict, "history": history}


def load_model(path: Union[str, Path], device: Union[str, torch.device] = "cpu") -> tuple[NSAModel, Config]:
    """The trained model (in eval mode) and its config from a ``model.pt`` written by :func:`train`,
    or from ``"pretrained:NAME"``, a shipped reference model (:func:`nsa_tutorial.pretrained.pretrained`).

    Book chapter: *Training*.
    """
    from nsa_tutorial.pretrained import pretrained, pretrained_name

    if pretrained_name(path) is not None:
        reference = pretrained(pretrained_name(path), device)
        return reference.model, reference.config
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no model file at {path}; train() writes output_dir/model.pt")
    data = _torch_load(path, "model file")
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        found = data.get("format") if isinstance(data, dict) else type(data).__name__
        raise ValueError(f"{path} is not an NSA model file: expected format {FORMAT!r}, found {found!r}")
    if data.get("version") != FORMAT_VERSION:
        raise ValueError(f"{path} has format version {data.get('version')!r}; this nsa_tutorial reads "
                         f"version {FORMAT_VERSION}")
    try:
        config = Config(**data["config"])
        model = build_model(config)
        model.load_state_dict(data["state_dict"])
    except (KeyError, TypeError, RuntimeError, ValueError) as err:
        raise ValueError(f"{path} does not hold a config and state_dict of the NSA model "
                         f"(expected nsa_tutorial.model.NSAModel weights): {err}") from err
    return model.to(device).eval(), config
