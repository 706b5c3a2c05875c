"""The whole training loop, on any device (prints numbers): samples/s, where the time goes,
bytes written to the run folder per epoch.

    python benchmarks/bench_training.py [--device cpu] [--class texture_grass] [--image-size 64]
        [--images 16 32] [--epochs 6] [--workers 0 2] [--synthesis workers|device|both]
        [--json benchmarks/results/training-cpu.json]

Runs :func:`nsa_tutorial.train.train` in full mode (the paper's batch of 64, a cosine schedule
over ``--epochs``: short but complete) on the embedded textures, scikit-image's brick, grass and
gravel (no download), repeated up to ``--images`` training images.  The split of the loop's
time comes from wrapping the loop's own functions: the model step (``train._train_step``),
batched synthesis on the device (``train._synthesise``), checkpoints and history
(``checkpoint.save_checkpoint``, ``checkpoint.write_history``), the wait for the DataLoader
(``data_wait_fraction`` of the history; with synthesis in the workers or, with ``--workers 0``,
in the main process, it holds that synthesis)
and everything else.  On CUDA every wrapped call synchronises the device before and after, so
a second, unwrapped run gives the samples/s.  The per-epoch fixed cost is measured twice: as
checkpoints (but the one after the last epoch, which every run has once), history writes and
"everything else" per epoch, and as ``a`` in a fit ``a + b n`` of the per-epoch loop time to two
numbers of images ``n`` (``--images``; on a busy machine the fit is noisy).  Workers that start
anew every epoch show as data wait after the first epoch (``data_wait_s_later_epochs``).
"""

from __future__ import annotations

import argparse
import inspect
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

import nsa_tutorial.checkpoint as nsa_checkpoint
import nsa_tutorial.train as nsa_train
from nsa_tutorial.config import MVTEC_CLASSES, get_config
from nsa_tutorial.layout import load_category
from nsa_tutorial.sources import resolve_data_root
from nsa_tutorial.training_set import SyntheticAnomalyDataset
from nsa_tutorial.files import write_json
from nsa_tutorial.evaluate import provenance
from nsa_tutorial.files import check_output

#: Training images per MVTec AD class (Bergmann et al., CVPR 2019, Table 1): for projections.
MVTEC_TRAIN_IMAGES = {"bottle": 209, "cable": 224, "capsule": 219, "carpet": 280, "grid": 264,
                      "hazelnut": 391, "leather": 245, "metal_nut": 220, "pill": 267, "screw": 320,
                      "tile": 230, "toothbrush": 60, "transistor": 213, "wood": 247, "zipper": 240}


def texture_dataset(config, n: int, cache: Path, seed: int = 0) -> SyntheticAnomalyDataset:
    """``n`` training images of the embedded grass texture (its 60 repeated) under ``config``."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "no ground_truth" never applies to textures; keep output clean
        category = load_category(resolve_data_root("textures", cache_dir=cache), "texture_grass")
    category.train = [category.train[i % len(category.train)] for i in range(n)]
    return SyntheticAnomalyDataset(category, config, seed=seed)


class Instrument:
    """Wraps the loop's functions in ``nsa_tutorial.train`` and the run folder's writers in
    ``nsa_tutorial.checkpoint`` to time them and count bytes written."""

    PARTS = {(nsa_train, "_train_step"): "model_step", (nsa_train, "_synthesise"): "synthesis_batched",
             (nsa_checkpoint, "save_checkpoint"): "checkpoint", (nsa_checkpoint, "write_history"): "checkpoint"}

    def __init__(self, device: torch.device, sync: bool) -> None:
        self.device, self.sync = device, sync and device.type == "cuda"
        self.seconds, self.bytes, self.saved = defaultdict(float), defaultdict(int), {}
        self.checkpoint_calls, self.writes = [], []  # seconds of each checkpoint; (file, bytes) of each write
        self.loop_start = self.loop_end = None

    def _synced(self) -> float:
        if self.sync:
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    def _timed(self, function, part: str):
        def wrapper(*args, **kwargs):
            start = self._synced()
            result = function(*args, **kwargs)
            self.seconds[part] += self._synced() - start
            if function.__name__ == "save_checkpoint":
                self.checkpoint_calls.append(time.perf_counter() - start)
            return result
        return wrapper

    def _epoch(self, function):
        def wrapper(*args, **kwargs):
            if self.loop_start is None:
                self.loop_start = self._synced()
            return function(*args, **kwargs)
        return wrapper

    def _write(self, function):
        def wrapper(path, write):
            if path.name == "model.pt":  # the end of the loop: what follows is the final model file
                self.loop_end = self._synced()
            function(path, write)
            self.bytes[path.name] += path.stat().st_size
            self.writes.append((path.name, path.stat().st_size))
        return wrapper

    def __enter__(self) -> "Instrument":
        wrappers = {(module, name): self._timed(getattr(module, name), part)
                    for (module, name), part in self.PARTS.items() if hasattr(module, name)}
        wrappers[nsa_train, "_train_epoch"] = self._epoch(nsa_train._train_epoch)
        wrappers[nsa_checkpoint, "atomic_write"] = self._write(nsa_checkpoint.atomic_write)
        for (module, name), wrapper in wrappers.items():
            self.saved[module, name] = getattr(module, name)
            setattr(module, name, wrapper)
        return self

    def __exit__(self, *exc) -> None:
        for (module, name), function in self.saved.items():
            setattr(module, name, function)


def run_training(config, n: int, device: torch.device, workers: int, on_device: bool,
                 cache: Path, sync: bool = True) -> dict:
    """One short full-mode run from scratch; its history, time split and bytes written."""
    dataset = texture_dataset(config, n, cache)
    kwargs = dict(device=device, num_workers=workers, progress=False, synthesis_on_device=on_device)
    if "checkpoint_every" in inspect.signature(nsa_train.train).parameters:  # older versions lack it
        kwargs["checkpoint_every"] = 60.0
    with tempfile.TemporaryDirectory() as run_dir, Instrument(device, sync) as timer:
        history = nsa_train.train(config, dataset, run_dir, **kwargs)
    return summarise(history, timer, config, n, workers, on_device)


def summarise(history: dict, timer: Instrument, config, n: int, workers: int, on_device: bool) -> dict:
    """Seconds per part of the loop, per epoch and as fractions; samples/s; bytes per epoch."""
    epochs = len(history["epoch"])
    loop = timer.loop_end - timer.loop_start
    split = {"model_step": timer.seconds["model_step"], "synthesis_batched": timer.seconds["synthesis_batched"],
             "data_wait": float(np.dot(history["seconds"], history["data_wait_fraction"])),
             "checkpoint": timer.seconds["checkpoint"]}
    split["everything_else"] = loop - sum(split.values())
    # Every run ends with one checkpoint (and model.pt) whatever its length: not a per-epoch cost.
    final = timer.checkpoint_calls[-1] if timer.checkpoint_calls else 0.0
    fixed = split["checkpoint"] - final + split["everything_else"]
    last_checkpoint = max((i for i, (name, _) in enumerate(timer.writes) if name == "checkpoint.pt"), default=None)
    in_loop = [size for i, (name, size) in enumerate(timer.writes) if name != "model.pt" and i != last_checkpoint]
    steady = history["samples_per_s"][1:] or history["samples_per_s"]  # epoch 1 starts workers, warms up
    return {"class_settings": config.name, "image_size": config.image_size, "batch_size": config.batch_size,
            "images": n, "epochs": epochs, "workers": workers, "synthesis_on_device": on_device,
            "loop_s": loop, "loop_s_per_epoch": loop / epochs, "samples_per_s_loop": n * epochs / loop,
            "samples_per_s_epoch_median": float(np.median(steady)),
            "split_s": split, "split_fraction": {k: v / loop for k, v in split.items()},
            "fixed_s_per_epoch": fixed / epochs, "fixed_fraction_of_loop": fixed / loop,
            "data_wait_s_later_epochs": float(np.mean([s * f for s, f in zip(history["seconds"][1:],
                                                                             history["data_wait_fraction"][1:])]
                                                      or [float("nan")])),
            "final_checkpoint_s": final, "checkpoints_written": len(timer.checkpoint_calls),
            "bytes_per_epoch": sum(in_loop) / epochs, "bytes_by_file": dict(timer.bytes),
            "peak_memory_mb": max(history["peak_memory_mb"]),
            "normal_fraction": float(np.mean(history["normal_fraction"]))}


def fixed_cost_fit(runs: list) -> dict:
    """``a`` and ``b`` of per-epoch loop time ``a + b n`` through two runs with different ``n``."""
    (n1, t1), (n2, t2) = [(r["images"], r["loop_s_per_epoch"]) for r in runs]
    b = (t2 - t1) / (n2 - n1)
    a = t1 - b * n1
    return {"a_s_per_epoch": a, "b_s_per_image": b, "a_fraction_of_epoch": [a / t1, a / t2]}


def projected_minutes(seconds_per_image: dict, fixed_s_per_epoch: float) -> dict:
    """Full-mode training time of MVTec AD: per class ``epochs x (n b + a)``, with ``b`` the loop's
    seconds per image at the class's input size (224 px objects, 256 px textures)."""
    per_class = {}
    for name in MVTEC_CLASSES:
        config = get_config(name)
        b = seconds_per_image.get(config.image_size)
        if b is None:
            return {}
        per_class[name] = config.epochs * (MVTEC_TRAIN_IMAGES[name] * b + fixed_s_per_epoch) / 60
    return {"bottle_320_epochs_of_209": per_class["bottle"], "all_15": sum(per_class.values()),
            "per_class": per_class}


def report(r: dict) -> None:
    where = "on the device" if r["synthesis_on_device"] else f"in {r['workers'] or 'the main'} process(es)"
    print(f"{r['class_settings']} settings, {r['image_size']} px, batch {r['batch_size']}, {r['images']} images, "
          f"{r['epochs']} epochs, synthesis {where}:")
    print(f"  {r['samples_per_s_loop']:.1f} samples/s over the whole loop "
          f"({r['samples_per_s_epoch_median']:.1f} within epochs 2+), {r['loop_s_per_epoch']:.2f} s per epoch")
    parts = ", ".join(f"{k.replace('_', ' ')} {100 * v:.1f}%" for k, v in r["split_fraction"].items())
    print(f"  split: {parts}")
    print(f"  fixed cost per epoch (checkpoints but the final one, history, everything else): "
          f"{r['fixed_s_per_epoch']:.3f} s = {100 * r['fixed_fraction_of_loop']:.1f}% of the loop; "
          f"{r['checkpoints_written']} checkpoints, the final one {r['final_checkpoint_s']:.2f} s; "
          f"{r['bytes_per_epoch'] / 2**20:.3f} MB written per epoch besides it; peak memory {r['peak_memory_mb']:.0f} MB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--class", dest="name", default="texture_grass",
                        help="whose Table 4 settings (the images are always the grass texture)")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--images", type=int, nargs=2, default=[16, 32],
                        help="two training-set sizes (default: epochs of one small batch, short like a GPU's)")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--workers", type=int, nargs="+", default=[0])
    parser.add_argument("--synthesis", choices=["workers", "device", "both"], default="workers")
    parser.add_argument("--json", type=Path, help="also write the numbers to this file")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --json file")
    args = parser.parse_args()
    if args.json:
        check_output(args.json, overwrite=args.overwrite)  # refused before measuring, not after
    device = torch.device(args.device)
    config = get_config(args.name, image_size=args.image_size).replace(epochs=args.epochs)
    modes = {"workers": [False], "device": [True], "both": [False, True]}[args.synthesis]
    results = {**provenance(), "device": str(device), "settings": vars(args) | {"json": str(args.json)},
               "runs": [], "fits": []}
    with tempfile.TemporaryDirectory() as cache:
        for on_device in modes:
            for workers in args.workers:
                pair = [run_training(config, n, device, workers, on_device, Path(cache)) for n in args.images]
                if device.type == "cuda":  # the same without the synchronising wrappers: true speed
                    for r, n in zip(pair, args.images):
                        plain = run_training(config, n, device, workers, on_device, Path(cache), sync=False)
                        r["plain"] = {k: plain[k] for k in ("loop_s", "loop_s_per_epoch", "samples_per_s_loop",
                                                            "samples_per_s_epoch_median", "peak_memory_mb")}
                        print(f"  unsynchronised, {n} images: {plain['samples_per_s_loop']:.1f} samples/s")
                for r in pair:
                    report(r)
                fit = {"workers": workers, "synthesis_on_device": on_device, **fixed_cost_fit(pair)}
                print(f"  fit a + b n: a = {fit['a_s_per_epoch']:.3f} s per epoch, b = "
                      f"{1000 * fit['b_s_per_image']:.2f} ms per image")
                results["runs"] += pair
                results["fits"].append(fit)
                if args.json:  # after every setting: a later failure keeps what was measured
                    write_json(args.json, results, overwrite=True)


if __name__ == "__main__":
    main()
