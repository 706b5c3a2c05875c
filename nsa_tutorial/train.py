"""Training NSA: the paper's recipe, and the loop that runs it.

Book chapter: *Training*.

:func:`train` is the paper's recipe (Sec. 4.1): Adam, learning rate ``config.lr``
annealed along a cosine to ``config.lr_min`` over ``config.epochs`` (stepped once
per epoch), BCE loss for bounded labels (eq. 15) or MSE for continuous ones
(eq. 16).  On a GPU it adds mixed precision and channels-last memory layout.  After
every epoch it writes ``history.json``; ``checkpoint.pt`` (everything needed to
continue) at most once per ``checkpoint_every`` seconds, after the last epoch and when
stopped by Ctrl-C or SIGTERM; at the end, once, ``model.pt`` (what
:func:`nsa_tutorial.checkpoint.load_model` reads), holding the threshold calibrated on
``calibration_images`` when they are given.  The run folder's files are
:mod:`nsa_tutorial.checkpoint`'s, the batches in their seeded order
:mod:`nsa_tutorial.training_set`'s, the device and the stop signals :mod:`nsa_tutorial.runtime`'s.
Started by ``torchrun`` (a process group of several processes), :func:`train` trains one model
on all of them with DistributedDataParallel: see :mod:`nsa_tutorial.distributed`.
"""

from __future__ import annotations

import numbers
import signal
import sys
import time
from functools import partial
from pathlib import Path
from typing import Callable, NamedTuple, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from nsa_tutorial import checkpoint, distributed, runtime
from nsa_tutorial.config import Config
from nsa_tutorial.model import NSAModel, build_model
from nsa_tutorial.training_set import RawPairs, epoch_loader, normalize_batch, stream_seed

HISTORY_KEYS = ("epoch", "loss", "lr", "samples_per_s", "seconds", "peak_memory_mb",
                "data_wait_fraction", "normal_fraction")
#: Seconds between progress-bar updates of the loss (each reads it from the device: a sync).
PROGRESS_EVERY = 2.0
#: The clock of the checkpoint policy (tests replace it).
_now = time.monotonic


class _Parts(NamedTuple):
    model: NSAModel
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    amp_dtype: Optional[torch.dtype]  # None: full float32
    identity: Optional[dict] = None  # what determines the run (checkpoint.run_identity); saved in checkpoints
    ddp: Optional[torch.nn.Module] = None  # the model wrapped for several processes (nsa_tutorial.distributed)


def _prepare(config: Config, device: torch.device, seed: int) -> _Parts:
    torch.manual_seed(seed)
    model = build_model(config).to(device)
    amp_dtype = None
    if runtime.gpu_path(device):
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


def train(config: Config, train_set: Dataset, output_dir: Union[str, Path], *,
          device: Union[str, torch.device, None] = None, seed: int = 0, num_workers: int = 0,
          epochs: Optional[int] = None, resume: bool = True,
          max_steps_per_epoch: Optional[int] = None, progress: bool = True,
          synthesis_on_device: Optional[bool] = None, checkpoint_every: float = 60.0,
          calibration_images: Sequence = (), target_fpr: float = 0.01) -> dict:
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
    finishes the epoch first); ``model.pt`` once, at the end.  ``calibration_images``: normal
    images (paths or uint8 arrays) held back from ``train_set``; before writing ``model.pt``, the
    trained model scores them (on rank 0 under torchrun) and ``model.pt`` holds the thresholds at
    ``target_fpr`` (:func:`nsa_tutorial.calibration.calibrate`).  Book chapter: *Training*.
    """
    stop = _check_train_args(config, train_set, epochs, seed, num_workers, max_steps_per_epoch,
                             checkpoint_every, target_fpr)
    device = runtime.pick_device(device)
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    parts = _prepare(config, device, seed)._replace(
        identity=checkpoint.run_identity(config, train_set, seed, max_steps_per_epoch))
    distributed.barrier()  # rank 0 may still be writing the files of a previous call
    start, history = checkpoint.resume_point(output_dir, parts, config, resume) \
        or (0, {key: [] for key in HISTORY_KEYS})
    parts = parts._replace(ddp=distributed.wrap(parts.model, device))
    progress = progress and distributed.is_main()
    on_device = _synthesis_on_device(config, train_set, device, synthesis_on_device, progress)
    synthesis_generator = torch.Generator()
    prepare = partial(_synthesise, config=config, device=device, generator=synthesis_generator)
    loader = epoch_loader(RawPairs(train_set) if on_device else train_set, config.batch_size, num_workers, device)
    loader = distributed.shard(loader, config.batch_size, max_steps_per_epoch)
    saved, last_save = start, _now()
    try:
        with runtime.StopOnSignal() as stop_request:
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
                checkpoint.write_history(output_dir, history)
                stopping = distributed.agree(stop_request.signal)  # one decision for all processes
                if epoch + 1 == stop or stopping or _now() - last_save >= checkpoint_every:
                    checkpoint.save_checkpoint(output_dir, parts, config, epoch + 1, history)
                    saved, last_save = epoch + 1, _now()
                if progress:
                    print(_summary(history, stop), flush=True)
                if stopping and epoch + 1 < stop:
                    raise KeyboardInterrupt(f"stopped by {signal.Signals(stopping).name}")
    except KeyboardInterrupt:
        held = f"{output_dir / 'checkpoint.pt'} holds epoch {saved}" if saved else "no checkpoint yet"
        print(f"\nInterrupted; {held}. Call train() again with the same config and output_dir "
              "(resume=True) to continue from the last checkpoint.", file=sys.stderr)
        raise
    finally:
        del loader  # its persistent workers end now, not when a kept traceback is freed
    if distributed.is_main():  # calibration happens before the one write of model.pt
        calibration = None
        if len(calibration_images):
            from nsa_tutorial.calibration import calibrate
            from nsa_tutorial.inference import torch_predictor

            calibration = calibrate(torch_predictor(parts.model, config, device=device), calibration_images,
                                    target_fpr)
        checkpoint.write_model(output_dir, parts.model, config, history, calibration)
    distributed.barrier()
    return history


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
                peak_memory_mb=runtime.peak_memory_mb(device), data_wait_fraction=waiting / seconds,
                normal_fraction=normal / seen)


def _train_step(parts: _Parts, image: torch.Tensor, label: torch.Tensor, loss_name: str,
                device: torch.device, weight: float = 1.0) -> torch.Tensor:
    memory_format = torch.channels_last if runtime.gpu_path(device) else torch.contiguous_format
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


def _synthesise(batch, config: Config, device: torch.device, generator: torch.Generator):
    """(dest, src) uint8 pairs -> (normalised images, labels) made on ``device`` in one go."""
    from nsa_tutorial.batched import synthesize_batch

    dest, src = (t.to(device, non_blocking=True) for t in batch)
    images, labels = synthesize_batch(dest, src, config, generator)
    return normalize_batch(images, config.normalize), labels[:, None]


def _synthesis_on_device(config: Config, train_set: Dataset, device: torch.device,
                         requested: Optional[bool], say: bool = True) -> bool:
    """Whether to synthesise batches on the device (from the dataset's ``raw_pair``); ``say``: print it."""
    from nsa_tutorial.batched import supports

    supported = hasattr(train_set, "raw_pair") and supports(config)
    if requested and not supported:
        raise ValueError("synthesis_on_device needs a SyntheticAnomalyDataset and method 'nsa' with variant "
                         f"None, 'A' or 'B'; got {type(train_set).__name__}, {config.method!r}, {config.variant!r}")
    use = supported and (device.type == "cuda" if requested is None else requested)
    if say:
        print(f"Synthesis: {'batched on ' + str(device) if use else 'one sample at a time in the DataLoader'}.")
    return use


def _check_train_args(config: Config, train_set: Dataset, epochs: Optional[int], seed: int,
                      num_workers: int, max_steps: Optional[int], checkpoint_every: float,
                      target_fpr: float) -> int:
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
    if isinstance(target_fpr, bool) or not isinstance(target_fpr, numbers.Real) or not 0 < target_fpr < 1:
        raise ValueError(f"target_fpr must be a false-positive rate in (0, 1), got {target_fpr!r}")
    return epochs


def time_left(history: dict, stop: int) -> float:
    """Seconds until epoch ``stop``: the epochs left times the median of the last (up to) five epochs."""
    recent = sorted(history["seconds"][-5:])
    return (stop - history["epoch"][-1]) * recent[len(recent) // 2] if recent else float("nan")


def _summary(history: dict, stop: int) -> str:
    left = time_left(history, stop)
    return (f"epoch {history['epoch'][-1]}/{stop}: loss {history['loss'][-1]:.4f}, lr {history['lr'][-1]:.2e}, "
            f"{history['samples_per_s'][-1]:.1f} samples/s, {history['seconds'][-1]:.1f} s, "
            f"about {left / 60:.0f} min left, peak memory {history['peak_memory_mb'][-1]:.0f} MB, "
            f"{100 * history['data_wait_fraction'][-1]:.0f}% of the time waiting for data, "
            f"{100 * history['normal_fraction'][-1]:.1f}% samples without anomaly")
