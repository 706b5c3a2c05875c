"""Many runs of ``reproduce`` on many machines: shards of the run list, a lock per run, a worker per device.

Book chapter: *Results* (reproducing the tables at scale).

No scheduler of our own: ``reproduce --shard K/N`` is the K-th of N disjoint parts of the sorted
run list (every N-th run from the K-th), for a Slurm array, a Kubernetes indexed job or a shell
loop; ``reproduce --devices cuda:0,cuda:1`` runs one worker process per device on one machine
(:func:`map_on_devices`, ``concurrent.futures``).  Every run keeps its own folder under the one
shared output folder, and its ``metrics.json`` marks it finished; :func:`claim` keeps two
processes that were given the same run by mistake from running it at once.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence


def parse_shard(text: str) -> tuple[int, int]:
    """``"K/N"`` -> ``(K, N)`` with ``0 <= K < N`` (argparse type of ``--shard``)."""
    try:
        k, n = (int(part) for part in text.split("/"))
    except ValueError:
        k, n = -1, 0
    if not 0 <= k < n:
        raise argparse.ArgumentTypeError(f"expected K/N with 0 <= K < N (K counts from 0, as "
                                         f"SLURM_ARRAY_TASK_ID does), e.g. 0/4, got {text!r}")
    return k, n


def parse_devices(text: str) -> list[str]:
    """``"cuda:0,cuda:1"`` -> ``["cuda:0", "cuda:1"]``, each a device torch knows and sees."""
    import torch

    devices = [name.strip() for name in text.split(",")]
    for name in devices:
        try:
            device = torch.device(name)
        except (RuntimeError, TypeError):
            raise argparse.ArgumentTypeError(f"unknown device {name!r} in {text!r}; expected e.g. cuda:0,cuda:1")
        if device.type == "cuda" and not (torch.cuda.is_available()
                                          and (device.index or 0) < torch.cuda.device_count()):
            raise argparse.ArgumentTypeError(f"device {name!r}: torch sees {torch.cuda.device_count()} CUDA GPUs")
    return devices


def shard(runs: Sequence, k: int, n: int) -> list:
    """The K-th of N disjoint parts of ``runs``: every N-th run from the K-th (round robin, so that
    the shards get similar mixes of categories).  Together the N parts are ``runs``, exactly."""
    return list(runs[k::n])


@contextmanager
def claim(folder: Path) -> Iterator[bool]:
    """``True`` for the ``with`` block if this process may run the run in ``folder``; ``False`` while
    another process holds it.  An advisory lock (``flock``) on ``folder/.lock``: the system releases
    it when its process ends, however it ends, so a killed job leaves no stale claim.  Where there is
    no ``fcntl`` (Windows), always ``True``: disjoint shards never share a run anyway."""
    folder.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:
        yield True
        return
    with open(folder / ".lock", "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


_device = None  # the device of this worker process


def _start_worker(devices, n_workers: int) -> None:
    global _device
    _device = devices.get()
    if _device.startswith("cpu") and "OMP_NUM_THREADS" not in os.environ:
        import torch

        torch.set_num_threads(max(1, (os.cpu_count() or 1) // n_workers))  # the workers share the cores


def _call(task: Callable, item):
    return task(item, _device)


def map_on_devices(task: Callable, items: Iterable, devices: Sequence[str]) -> Iterator[tuple]:
    """``(item, task(item, device))`` for every item as it finishes, run in one worker process per
    device (started with ``spawn``, as CUDA needs); each worker takes the next item when it is free.
    A worker that dies (killed, out of memory) gives ``(item, BrokenProcessPool)`` for the items left."""
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    for device in devices:
        queue.put(device)
    with ProcessPoolExecutor(len(devices), mp_context=context, initializer=_start_worker,
                             initargs=(queue, len(devices))) as pool:
        futures = {pool.submit(_call, task, item): item for item in items}
        for future in as_completed(futures):
            try:
                yield futures[future], future.result()
            except BrokenProcessPool as error:
                yield futures[future], error
