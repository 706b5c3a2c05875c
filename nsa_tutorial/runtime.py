"""Where a run trains and how it is stopped: the device, the GPU's fast path, stop signals, memory.

Book chapter: *Training*.

:func:`pick_device` says which device it picked and why; :func:`gpu_path` decides whether a step
runs channels-last with mixed precision; :class:`StopOnSignal` turns Ctrl-C and SIGTERM into
"finish the epoch, write a checkpoint, stop"; :func:`peak_memory_mb` is what the history records.
"""

from __future__ import annotations

import signal
import sys
import threading
from typing import Union

import torch

#: Tests set this to run the GPU's path (channels-last, bfloat16 autocast) on a CPU.
_GPU_PATH_ON_CPU = False


def pick_device(requested: Union[str, torch.device, None] = None) -> torch.device:
    """``"cuda"`` when a GPU is available, else ``"cpu"``; or the requested device if usable.

    When it picks, it prints what and why, so that nobody trains on a CPU for hours by accident;
    a requested device is only checked (the caller chose it).  Book chapter: *Training*.
    """
    if requested is not None:
        try:
            device = torch.device(requested)
        except (RuntimeError, TypeError) as err:
            raise ValueError(f"unknown device {requested!r}; expected e.g. 'cpu' or 'cuda'") from err
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device {requested!r} was requested but torch sees no CUDA GPU; "
                             "use 'cpu' or pass device=None to pick automatically")
        return device
    if torch.cuda.is_available():
        print(f"Using cuda ({torch.cuda.get_device_name()}): a CUDA GPU is available.")
        return torch.device("cuda")
    print("Using cpu: torch sees no CUDA GPU. Quick mode runs in minutes; full mode needs a GPU.")
    return torch.device("cpu")


def gpu_path(device: torch.device) -> bool:
    """Whether training on ``device`` uses channels-last memory and mixed precision (on CUDA)."""
    return device.type == "cuda" or _GPU_PATH_ON_CPU


class StopOnSignal:
    """Within ``with``: Ctrl-C (SIGINT) and SIGTERM (a scheduler, a notebook shutting down) set
    ``signal`` instead of stopping at once, so that :func:`nsa_tutorial.train.train` finishes the
    epoch, writes a checkpoint and stops.  A second signal acts as without this handler.  Main
    thread only."""

    def __init__(self) -> None:
        self.signal, self._previous = None, {}

    def __enter__(self) -> "StopOnSignal":
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


def peak_memory_mb(device: torch.device) -> float:
    """CUDA: peak allocated in this epoch. CPU: peak resident size of the process so far."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    try:
        import resource
    except ImportError:  # Windows has no resource module
        return float("nan")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10  # bytes on macOS, KiB on Linux
