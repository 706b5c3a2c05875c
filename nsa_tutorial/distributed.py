"""One training run on several processes (``torchrun``, DistributedDataParallel).

Book chapter: *Training* (scaling out).  The command::

    torchrun --nproc-per-node 4 -m nsa_tutorial train --data-root ... --output runs/x

:func:`start` reads torchrun's ``WORLD_SIZE``/``RANK``/``LOCAL_RANK`` and joins the process
group (NCCL on GPUs, gloo on CPUs); :func:`nsa_tutorial.train.train` then trains with DDP
whenever a process group of more than one process is running:

- ``config.batch_size`` stays the **global** batch: each of the W processes takes a disjoint
  1/W slice of every batch of the same seeded permutation (:func:`shard`).  Training samples
  are synthesised from ``(seed, epoch, sample index)``, so every rank makes its own part of
  each batch, seeded by its indices, and together they make exactly the samples of a
  one-process run.  Synthesis on the device (:mod:`nsa_tutorial.batched`) draws from one
  generator per batch, and DataLoader workers reseed their generators: both are seeded per
  rank (:func:`nsa_tutorial.training_set.stream_seed` with ``rank``).
- BatchNorm statistics are taken over the whole global batch (:func:`wrap`: torch's
  ``SyncBatchNorm`` on GPUs, :class:`SyncBatchNormCPU` on CPUs), DDP averages the gradients,
  and a last, smaller batch split unevenly is weighted by its slice sizes
  (:meth:`ShardSampler.loss_weight`): the gradient equals a one-process run's up to the order of
  floating-point sums (so a float32 run drifts from it as far as float noise moves any run).
- Only rank 0 writes ``history.json``, ``checkpoint.pt`` and ``model.pt``.  A checkpoint
  holds the global epoch and the unwrapped model, so a run resumes on any number of processes.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Optional

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Sampler


def active() -> bool:
    """Whether this process is one of several in a running process group."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    """Rank 0 (or the only process): the one that writes files and evaluates."""
    return rank() == 0


def barrier() -> None:
    if active():
        dist.barrier()


@contextmanager
def main_first():
    """Rank 0 runs the ``with`` block first (e.g. unpacking an embedded dataset), then the others."""
    if not is_main():
        barrier()
    yield
    if is_main():
        barrier()


def under_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


@contextmanager
def start(requested: Optional[str] = None):
    """Join torchrun's process group for the ``with`` block; yields the device to train on.

    Outside torchrun (``WORLD_SIZE`` unset or 1) yields ``requested`` unchanged.  Under torchrun,
    ``requested`` names the device type only: each process uses ``cuda:LOCAL_RANK`` (the default
    when a GPU is visible) or the CPU.
    """
    if not under_torchrun() or active():
        yield requested
        return
    if requested not in (None, "cpu", "cuda"):
        raise ValueError(f"under torchrun, --device is 'cuda' or 'cpu' (got {requested!r}): "
                         "process k uses cuda:LOCAL_RANK itself")
    use_cuda = requested == "cuda" or (requested is None and torch.cuda.is_available())
    if use_cuda:
        device = f"cuda:{int(os.environ['LOCAL_RANK'])}"
        torch.cuda.set_device(device)
    else:
        device = "cpu"
    dist.init_process_group("nccl" if use_cuda else "gloo")
    try:
        yield device
    finally:
        dist.destroy_process_group()


class ShardSampler(Sampler):
    """This rank's slice of each batch of ``whole`` (a :class:`nsa_tutorial.training_set.EpochSampler`).

    Batch ``s`` of the one-process run is positions ``[s*B, (s+1)*B)`` of the epoch's
    permutation; rank ``r`` of ``W`` takes the r-th of W consecutive slices of it (sizes differing
    by at most one in a last, smaller batch), so that batching this rank's stream by ``B // W``
    gives exactly its slices.
    """

    def __init__(self, whole: Sampler, batch_size: int, rank: int, world: int) -> None:
        self.whole, self.batch_size, self.rank, self.world = whole, batch_size, rank, world

    def set_epoch(self, epoch: int, seed: int) -> None:
        self.whole.set_epoch(epoch, seed)

    def _slice(self, step: int) -> tuple[int, int, int]:
        """(start, stop, global batch size) of this rank's part of batch ``step``."""
        size = min(self.batch_size, len(self.whole) - step * self.batch_size)
        q, extra = divmod(size, self.world)
        start = step * self.batch_size + self.rank * q + min(self.rank, extra)
        return start, start + q + (self.rank < extra), size

    def steps(self) -> int:
        return -(-len(self.whole) // self.batch_size)

    def __len__(self) -> int:
        return sum(stop - start for start, stop, _ in map(self._slice, range(self.steps())))

    def __iter__(self):
        keys = list(self.whole)
        for start, stop, _ in map(self._slice, range(self.steps())):
            yield from keys[start:stop]

    def loss_weight(self, step: int) -> float:
        """Factor of this rank's mean loss such that DDP's average of the gradients is the gradient
        of the global batch's mean loss: ``W * local size / global size`` (1 for full batches)."""
        start, stop, size = self._slice(step)
        return self.world * (stop - start) / size


def shard(loader: DataLoader, batch_size: int, max_steps: Optional[int] = None) -> DataLoader:
    """``loader`` unchanged in one process; else a loader of this rank's slices (see
    :class:`ShardSampler`).  The global ``batch_size`` must divide by the number of processes and
    every process must get a part of the last batch."""
    if not active():
        return loader
    world, n = world_size(), len(loader.sampler)
    if batch_size % world:
        raise ValueError(f"batch size {batch_size} does not divide by the {world} processes; "
                         f"the global batch is kept as configured: use a multiple of {world}")
    sampler = ShardSampler(loader.sampler, batch_size, rank(), world)
    last = n - (sampler.steps() - 1) * batch_size
    if last < world and (max_steps is None or max_steps >= sampler.steps()):
        raise ValueError(f"the last batch of an epoch holds {last} of the {n} training samples, fewer than "
                         f"the {world} processes; use another batch size or number of processes")
    return DataLoader(loader.dataset, batch_size=batch_size // world, sampler=sampler,
                      num_workers=loader.num_workers, persistent_workers=loader.persistent_workers,
                      pin_memory=loader.pin_memory, worker_init_fn=loader.worker_init_fn,
                      generator=loader.generator)


def loss_weight(loader: DataLoader, step: int) -> float:
    sampler = loader.sampler
    return sampler.loss_weight(step) if isinstance(sampler, ShardSampler) else 1.0


def wrap(model: nn.Module, device: torch.device) -> Optional[nn.Module]:
    """``None`` in one process; else ``model`` with synchronised BatchNorm, wrapped in DDP.

    The BatchNorm layers are replaced in place and keep their parameters and buffers (the
    optimizer's), so ``model.state_dict()`` (what checkpoints and ``model.pt`` hold) is the
    one-process layout.  On GPUs: torch's ``convert_sync_batchnorm``; on CPUs, where torch's
    ``SyncBatchNorm`` does not run, each layer becomes a :class:`SyncBatchNormCPU`, a subclass
    that adds no state.
    """
    if not active():
        return None
    if device.type == "cuda":
        nn.SyncBatchNorm.convert_sync_batchnorm(model)  # the top module is no BatchNorm: changed in place
    for module in model.modules():
        if type(module) is nn.BatchNorm2d:
            if not (module.affine and module.track_running_stats and module.momentum is not None):
                raise ValueError("SyncBatchNormCPU supports affine BatchNorm2d with running stats only")
            module.__class__ = SyncBatchNormCPU
    return nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def sum_over_ranks(total: torch.Tensor, *values) -> list:
    """The sums over all processes of one-element tensors and numbers (the epoch's loss and counts),
    each of its own type; one all-reduce."""
    if not active():
        return [total, *values]
    stacked = torch.stack([torch.as_tensor(v, dtype=torch.float64, device=total.device) for v in (total, *values)])
    dist.all_reduce(stacked)
    return [s.to(v.dtype) if torch.is_tensor(v) else type(v)(s.item()) for s, v in zip(stacked, (total, *values))]


def agree(flag: Optional[int]) -> Optional[int]:
    """A stop signal received by any process, for all of them (else they would wait for each other)."""
    if not active():
        return flag
    value = torch.tensor([flag or 0], device="cuda" if dist.get_backend() == "nccl" else "cpu")
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return int(value.item()) or None


class SyncBatchNormCPU(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics are those of all processes' batches together.

    torch's ``SyncBatchNorm`` runs on GPUs only; this is the same computation for gloo on CPUs
    (sums in float64, one all-reduce in the forward and one in the backward pass).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and active()):
            return super().forward(x)
        self.num_batches_tracked.add_(1)
        return _SyncBatchNorm.apply(x, self.weight, self.bias, self.running_mean, self.running_var,
                                    self.eps, self.momentum)


def _per_channel(t: torch.Tensor) -> torch.Tensor:
    return t[None, :, None, None]


class _SyncBatchNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, running_mean, running_var, eps, momentum):
        c, dims, xd = x.shape[1], (0, 2, 3), x.double()
        stats = torch.cat([xd.sum(dims), (xd * xd).sum(dims), xd.new_tensor([x.numel() // c])])
        dist.all_reduce(stats)
        count = stats[-1]
        mean = stats[:c] / count
        var = (stats[c:2 * c] / count - mean * mean).clamp_min(0)
        invstd = (var + eps).rsqrt()
        with torch.no_grad():
            running_mean.mul_(1 - momentum).add_(momentum * mean.to(running_mean.dtype))
            running_var.mul_(1 - momentum).add_(momentum * (var * count / (count - 1)).to(running_var.dtype))
        xhat = (xd - _per_channel(mean)) * _per_channel(invstd)
        ctx.save_for_backward(xhat, weight, invstd, count)
        return (xhat * _per_channel(weight.double()) + _per_channel(bias.double())).to(x.dtype)

    @staticmethod
    def backward(ctx, grad):
        xhat, weight, invstd, count = ctx.saved_tensors
        c, dims, g = xhat.shape[1], (0, 2, 3), grad.double()
        local = torch.cat([g.sum(dims), (g * xhat).sum(dims)])  # this rank's: DDP averages the parameters'
        total = local.clone()
        dist.all_reduce(total)  # the input's gradient needs the sums over the whole batch
        grad_x = (g - _per_channel(total[:c] / count) - xhat * _per_channel(total[c:] / count)) \
            * _per_channel(invstd * weight.double())
        return grad_x.to(grad.dtype), local[c:].to(weight.dtype), local[:c].to(weight.dtype), \
            None, None, None, None
